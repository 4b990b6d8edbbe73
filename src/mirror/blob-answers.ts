import { close } from "node:fs";
import type { Writable } from "node:stream";
import { RegistryError } from "../oci/errors.ts";
import { sendBuffer, sendFile, sendStream, type SendOptions } from "../storage/send-file.ts";
import type { ObjectReader } from "../storage/driver.ts";
import { StorageError, type Followable } from "./fill.ts";

// The kinds of answer BlobService gives for a blob: a cached blob (an open reader of the
// storage; on disk, a descriptor that sendfile(2) can send from), a cached blob in memory, and a
// fill in progress. Each holds something (a descriptor, a place in
// the fill) that must be let go exactly once, however the response ends.

export interface BlobAnswer {
  /** undefined only while a fill runs for an upstream that sent no Content-Length. */
  size: number | undefined;
  source: "cache" | "upstream";
  /**
   * Writes bytes [start, end] (inclusive) to `out` and ends it; destroys it on failure. Call once,
   * or release(). Whatever the outcome — `out` already closed by a client that hung up included —
   * everything the answer holds (file descriptors, fill readers) is let go once `out` is done.
   */
  send(out: Writable, start: number, end: number | undefined): void;
  release(): void;
  /** Set when a GET is better answered with a 307 there (storage.s3.redirect); HEAD ignores it. */
  redirect?: string;
}

/** A cached blob the client is to GET from the storage itself, at `url`. */
export function redirectAnswer(url: string, size: number): BlobAnswer {
  return {
    size,
    source: "cache",
    redirect: url,
    send: (out) => void out.destroy(new Error("a redirect has no body")),
    release: () => undefined,
  };
}

/** A cached blob, open in storage. The answer owns `reader` from now on. */
export function readerAnswer(reader: ObjectReader, opts: SendOptions): BlobAnswer {
  const fd = reader.takeDescriptor?.();
  if (fd !== undefined) return fileAnswer(fd, reader.size, opts);
  let owned = true;
  const release = () => {
    if (owned) void reader.close().catch(() => undefined);
    owned = false;
  };
  return {
    size: reader.size,
    source: "cache",
    send: (out, start, end) => {
      if (!owned) return void out.destroy();
      owned = false;
      const stream = reader.stream(start, end ?? reader.size - 1);
      sendStream(stream, out, opts.stallMs, () => void reader.close().catch(() => undefined));
    },
    release,
  };
}

/** A cached blob's open file. The answer owns `fd` from now on. */
function fileAnswer(fd: number, size: number, opts: SendOptions): BlobAnswer {
  // The descriptor goes to exactly one of send() and release(): closing it twice could close a
  // number the process has reused meanwhile.
  let owned = true;
  return {
    size,
    source: "cache",
    send: (out, start, end) => {
      if (!owned) return void out.destroy();
      owned = false;
      sendFile(fd, start, end ?? size - 1, out, opts);
    },
    release: () => {
      if (owned) close(fd, () => undefined);
      owned = false;
    },
  };
}

/** `left` is called once, when this client no longer follows the fill (sent, failed or released). */
export function fillAnswer(fill: Followable, stallMs: number, left?: () => void): BlobAnswer {
  // A fill that died of an upstream fault is about to be forgotten; the next request retries.
  if (fill.state === "failed" && !(fill.error instanceof StorageError)) {
    throw new RegistryError("UNAVAILABLE", "the upstream transfer of this blob failed");
  }
  // Joined now, not at send(): the fill's file must stay open (and the fill count as followed)
  // from the moment this client has it.
  const joined = fill.join();
  let gone = false;
  const leave = () => {
    joined();
    if (gone) return;
    gone = true;
    left?.();
  };
  return {
    size: fill.size,
    source: "upstream",
    send: (out, start, end) => sendStream(fill.stream(start, end), out, stallMs, leave),
    release: leave,
  };
}

export function bufferAnswer(bytes: Buffer, stallMs: number): BlobAnswer {
  return {
    size: bytes.length,
    source: "cache",
    send: (out, start, end) =>
      sendBuffer(
        start === 0 && end === bytes.length - 1
          ? bytes
          : bytes.subarray(start, (end ?? bytes.length - 1) + 1),
        out,
        stallMs,
      ),
    release: () => undefined,
  };
}
