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

export type FillState = "running" | "done" | "failed";

const READ_CHUNK = 256 * 1024;

export class BlobFill {
  state: FillState = "running";
  error: Error | undefined;
  private landed = 0;
  private readonly events = new EventEmitter();

  constructor(
    private readonly writer: BlobWriter,
    /** From the upstream's Content-Length; undefined when it sent none. */
    readonly size: number | undefined,
    /** Where the blob lives once committed (a reader that starts after the rename opens this). */
    private readonly finalPath: string,
  ) {
    this.events.setMaxListeners(0);
  }

  /** Copies `body` into the cache. Resolves when committed; rejects (after cleanup) otherwise. */
  async pump(body: AsyncIterable<Buffer>): Promise<void> {
    try {
      for await (const chunk of body) {
        await this.writer.write(chunk);
        this.landed = this.writer.written;
        this.events.emit("change");
      }
      await this.writer.commit();
      this.state = "done";
    } catch (err) {
      await this.writer.abort();
      this.error = err as Error;
      this.state = "failed";
      throw err;
    } finally {
      this.events.emit("change");
    }
  }

  /** Bytes a reader may take now. */
  private readable(): number {
    return this.state === "done" ? this.landed : Math.max(0, this.landed - 1);
  }

  private changed(): Promise<void> {
    return new Promise((resolve) => this.events.once("change", resolve));
  }

  /** A stream of bytes [start, end] (inclusive) of the blob, following the fill as it grows. */
  stream(start: number, end: number | undefined): Readable {
    return Readable.from(this.read(start, end), { objectMode: false });
  }

  private async *read(start: number, end: number | undefined): AsyncGenerator<Buffer> {
    const fh = await this.openFile();
    try {
      let pos = start;
      const buf = Buffer.allocUnsafe(READ_CHUNK);
      for (;;) {
        const stop = end === undefined ? Infinity : end + 1;
        if (pos >= stop) return;
        const avail = Math.min(this.readable(), stop);
        if (pos < avail) {
          const { bytesRead } = await fh.read(buf, 0, Math.min(READ_CHUNK, avail - pos), pos);
          if (bytesRead === 0) throw new Error("cache file shorter than what landed");
          pos += bytesRead;
          // Copy: the buffer is reused for the next read while this chunk may still be queued.
          yield Buffer.from(buf.subarray(0, bytesRead));
          continue;
        }
        if (this.state === "failed") throw this.error ?? new Error("fill failed");
        if (this.state === "done") return;
        await this.changed();
      }
    } finally {
      await fh.close();
    }
  }

  private async openFile(): Promise<FileHandle> {
    try {
      return await open(this.writer.tmpPath, "r");
    } catch (err) {
      // Committed (renamed) between our caller's look and this open.
      if ((err as NodeJS.ErrnoException).code === "ENOENT" && this.state === "done")
        return open(this.finalPath, "r");
      if (this.state === "failed") throw this.error ?? err;
      throw err;
    }
  }
}
