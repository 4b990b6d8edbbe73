import { EventEmitter } from "node:events";
import { open, type FileHandle } from "node:fs/promises";
import { Readable } from "node:stream";
import type { BlobWriter } from "../storage/blob-store.ts";

// One blob coming from the upstream into the cache, readable while it lands.
//
// The upstream body goes to a temp file (hashed on the way) and, for a while, stays in memory:
// every client of this blob — the one that caused the fill and any that arrive later — reads
// the newest bytes from memory as soon as they arrive, and older ones back from the file. So
// there is exactly one upstream transfer however many clients ask, a latecomer gets what is
// already there at disk speed, and a client that hangs up only stops its own reader: the fill
// goes on under its own time limit.
//
// Writes to the file are batched: while one write is on its way, whatever arrives queues and goes
// in the next (one writev). The body is paused while too much waits, so memory stays bounded.
//
// The last byte is held back until the digest has been verified: a client can receive a
// truncated body (and sees its connection aborted), never a complete wrong one.
//
// If the cache cannot take the bytes (disk full, a write error), the fill is dropped and each
// reader continues from where it is with a direct ranged request to the upstream: the client
// still gets its blob, only nothing is cached.

export type FillState = "running" | "done" | "failed";

/** The cache could not store the blob; readers fall back to the upstream. */
export class StorageError extends Error {
  constructor(cause: unknown) {
    super(`cache write failed: ${(cause as Error).message ?? String(cause)}`, { cause });
    this.name = "StorageError";
  }
}

/** Bytes [start, end] (inclusive; end undefined = to the end) straight from the upstream. */
export type Fallback = (start: number, end: number | undefined) => AsyncIterable<Buffer>;

const READ_CHUNK = 256 * 1024;
/** Received bytes kept in memory after they are written, for readers that keep up. */
const TAIL_BYTES = 4 * 1024 * 1024;
/** Received but not yet written: above this the upstream body is paused. */
const MAX_UNWRITTEN = 8 * 1024 * 1024;

export class BlobFill {
  state: FillState = "running";
  error: Error | undefined;
  /** Size and digest checked and the file published: every byte may go to clients. */
  private verified = false;
  /** Bytes received from the upstream, and of those, written to the temp file. */
  private received = 0;
  private written = 0;
  private readonly events = new EventEmitter();
  /** Chunks covering [tailOffsets[0], received), oldest first; every unwritten chunk is here. */
  private readonly tail: Buffer[] = [];
  private readonly tailOffsets: number[] = [];
  private tailBytes = 0;

  constructor(
    /** undefined when the cache could not even start the file: every reader falls back. */
    private readonly writer: BlobWriter | undefined,
    /** From the upstream's Content-Length; undefined when it sent none. */
    readonly size: number | undefined,
    /** Where the blob lives once committed (a reader that starts after the rename opens this). */
    private readonly finalPath: string,
    private readonly fallback: Fallback,
    startError?: StorageError,
  ) {
    this.events.setMaxListeners(0);
    if (!writer) {
      this.state = "failed";
      this.error = startError ?? new StorageError(new Error("no cache file"));
    }
  }

  /** Copies `body` into the cache. Resolves when committed; rejects (after cleanup) otherwise. */
  async pump(body: Readable): Promise<void> {
    const writer = this.writer;
    if (!writer) throw this.error;
    try {
      await this.copy(body, writer);
      // Verified, durable and published before the last byte goes out: a client that has its
      // whole blob can count on the cache having it too (warm relies on that).
      await writer.commit();
      this.verified = true;
      this.state = "done";
      // Everything is in the file now: let the memory go at once rather than at the next full
      // GC (readers still on their way read the rest back from the file).
      this.tail.length = 0;
      this.tailOffsets.length = 0;
      this.tailBytes = 0;
    } catch (err) {
      body.destroy();
      await writer.abort();
      this.error = err as Error;
      this.state = "failed";
      throw err;
    } finally {
      this.events.emit("change");
    }
  }

  private copy(body: Readable, writer: BlobWriter): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const queue: Buffer[] = [];
      let writing = false;
      let ended = false;
      let failed = false;
      const fail = (err: Error) => {
        if (failed) return;
        failed = true;
        reject(err);
      };
      const flush = async () => {
        writing = true;
        while (queue.length > 0 && !failed) {
          const batch = queue.splice(0);
          if (body.isPaused()) body.resume();
          try {
            await writer.writev(batch);
          } catch (err) {
            return fail(new StorageError(err));
          }
          this.written = writer.written;
          this.trim();
          this.events.emit("change");
        }
        writing = false;
        if (ended && !failed) resolve();
      };
      body.on("data", (chunk: Buffer) => {
        this.tail.push(chunk);
        this.tailOffsets.push(this.received);
        this.tailBytes += chunk.length;
        this.received += chunk.length;
        queue.push(chunk);
        if (this.received - this.written > MAX_UNWRITTEN) body.pause();
        this.events.emit("change");
        if (!writing) void flush();
      });
      body.once("end", () => {
        ended = true;
        if (!writing) void flush();
      });
      body.once("error", fail);
      body.once("close", () => {
        if (!ended) fail(new Error("the upstream closed the transfer early"));
      });
    });
  }

  /** Forgets written chunks beyond the newest TAIL_BYTES. */
  private trim(): void {
    while (
      this.tail.length > 1 &&
      this.tailOffsets[0]! + this.tail[0]!.length <= this.written &&
      this.tailBytes - this.tail[0]!.length >= TAIL_BYTES
    ) {
      this.tailBytes -= this.tail.shift()!.length;
      this.tailOffsets.shift();
    }
  }

  /** A stream of bytes [start, end] (inclusive) of the blob, following the fill as it grows. */
  stream(start: number, end: number | undefined): Readable {
    return Readable.from(this.read(start, end), { objectMode: false });
  }

  /** Bytes [pos, limit) from memory, if the tail still holds pos. */
  private fromTail(pos: number, limit: number): Buffer | undefined {
    for (let i = this.tail.length - 1; i >= 0; i--) {
      const at = this.tailOffsets[i]!;
      if (at > pos) continue;
      const chunk = this.tail[i]!;
      if (pos >= at + chunk.length) return undefined;
      return chunk.subarray(pos - at, Math.min(chunk.length, limit - at));
    }
    return undefined;
  }

  /** Bytes a reader may take now: all received but the last, until the digest is verified. */
  private readable(): number {
    return this.verified ? this.received : Math.max(0, this.received - 1);
  }

  private changed(): Promise<void> {
    return new Promise((resolve) => this.events.once("change", resolve));
  }

  private async *read(start: number, end: number | undefined): AsyncGenerator<Buffer> {
    const stop = end === undefined ? Infinity : end + 1;
    let pos = start;
    let fh: FileHandle | undefined;
    let buf: Buffer | undefined;
    try {
      while (pos < stop) {
        const avail = Math.min(this.readable(), stop);
        if (pos < avail) {
          const mem = this.fromTail(pos, avail);
          if (mem) {
            pos += mem.length;
            yield mem;
            continue;
          }
          // Older than the tail: it was written, so the file has it.
          fh ??= await this.openFile();
          if (!fh) break;
          buf ??= Buffer.allocUnsafe(READ_CHUNK);
          const { bytesRead } = await fh.read(buf, 0, Math.min(READ_CHUNK, avail - pos), pos);
          if (bytesRead === 0) throw new Error("cache file shorter than what landed");
          pos += bytesRead;
          // Copy: the buffer is reused for the next read while this chunk may still be queued.
          yield Buffer.from(buf.subarray(0, bytesRead));
        } else if (this.verified) {
          return;
        } else if (this.state === "failed") {
          break;
        } else {
          await this.changed();
        }
      }
    } finally {
      await fh?.close();
    }
    if (pos >= stop) return;
    if (!(this.error instanceof StorageError)) throw this.error ?? new Error("fill failed");
    yield* this.fallback(pos, end);
  }

  /** The file to read back from, or undefined when the cache has already given up on this blob. */
  private async openFile(): Promise<FileHandle | undefined> {
    if (!this.writer || this.error instanceof StorageError) return undefined;
    try {
      return await open(this.writer.tmpPath, "r");
    } catch (err) {
      // Committed (renamed) between our look and this open.
      if ((err as NodeJS.ErrnoException).code === "ENOENT" && this.state === "done")
        return open(this.finalPath, "r");
      if (this.state === "failed") {
        if (this.error instanceof StorageError) return undefined;
        throw this.error ?? err;
      }
      throw err;
    }
  }
}
