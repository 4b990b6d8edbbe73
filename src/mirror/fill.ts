import { EventEmitter } from "node:events";
import { open, type FileHandle } from "node:fs/promises";
import { Readable } from "node:stream";
import type { BlobWriter } from "../storage/blob-store.ts";

// One blob coming from the upstream into the cache, readable while it lands.
//
// The upstream body is written to a temp file (hashed on the way); every client of this blob,
// the one that caused the fill and any that arrive later, reads that file up to what has landed
// and then waits for more. So there is exactly one upstream transfer however many clients ask,
// a latecomer gets the bytes already there at disk speed, and a client that hangs up only stops
// its own reader: the fill goes on under its own time limit.
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
/**
 * The newest bytes of a fill stay in memory too: a reader that keeps up with the upstream (the
 * usual case: the client that caused the fill, and latecomers once they catch up) takes them
 * from here instead of reading back what was just written.
 */
const TAIL_BYTES = 4 * 1024 * 1024;

export class BlobFill {
  state: FillState = "running";
  error: Error | undefined;
  private landed = 0;
  private readonly events = new EventEmitter();
  /** Chunks covering [tailStart, landed), oldest first; tailOffsets[i] is where chunk i starts. */
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
  async pump(body: AsyncIterable<Buffer>): Promise<void> {
    const writer = this.writer;
    if (!writer) throw this.error;
    try {
      for await (const chunk of body) {
        try {
          await writer.write(chunk);
        } catch (err) {
          throw new StorageError(err);
        }
        this.remember(chunk, this.landed);
        this.landed = writer.written;
        this.events.emit("change");
      }
      await writer.commit();
      this.state = "done";
    } catch (err) {
      await writer.abort();
      this.error = err as Error;
      this.state = "failed";
      throw err;
    } finally {
      this.events.emit("change");
    }
  }

  /** A stream of bytes [start, end] (inclusive) of the blob, following the fill as it grows. */
  stream(start: number, end: number | undefined): Readable {
    return Readable.from(this.read(start, end), { objectMode: false });
  }

  private remember(chunk: Buffer, at: number): void {
    this.tail.push(chunk);
    this.tailOffsets.push(at);
    this.tailBytes += chunk.length;
    while (this.tail.length > 1 && this.tailBytes - this.tail[0]!.length >= TAIL_BYTES) {
      this.tailBytes -= this.tail.shift()!.length;
      this.tailOffsets.shift();
    }
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

  /** Bytes a reader may take now. */
  private readable(): number {
    return this.state === "done" ? this.landed : Math.max(0, this.landed - 1);
  }

  private changed(): Promise<void> {
    return new Promise((resolve) => this.events.once("change", resolve));
  }

  private async *read(start: number, end: number | undefined): AsyncGenerator<Buffer> {
    const stop = end === undefined ? Infinity : end + 1;
    let pos = start;
    const fh = await this.openFile();
    if (fh) {
      try {
        const buf = Buffer.allocUnsafe(READ_CHUNK);
        while (pos < stop) {
          const avail = Math.min(this.readable(), stop);
          if (pos < avail) {
            const mem = this.fromTail(pos, avail);
            if (mem) {
              pos += mem.length;
              yield mem;
              continue;
            }
            const { bytesRead } = await fh.read(buf, 0, Math.min(READ_CHUNK, avail - pos), pos);
            if (bytesRead === 0) throw new Error("cache file shorter than what landed");
            pos += bytesRead;
            // Copy: the buffer is reused for the next read while this chunk may still be queued.
            yield Buffer.from(buf.subarray(0, bytesRead));
          } else if (this.state === "done") {
            return;
          } else if (this.state === "failed") {
            break;
          } else {
            await this.changed();
          }
        }
      } finally {
        await fh.close();
      }
    }
    if (pos >= stop) return;
    if (!(this.error instanceof StorageError)) throw this.error ?? new Error("fill failed");
    yield* this.fallback(pos, end);
  }

  /** The file to follow, or undefined when the cache has already given up on this blob. */
  private async openFile(): Promise<FileHandle | undefined> {
    if (!this.writer || this.error instanceof StorageError) return undefined;
    try {
      return await open(this.writer.tmpPath, "r");
    } catch (err) {
      // Committed (renamed) between our caller's look and this open.
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
