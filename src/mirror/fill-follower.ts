import { open, type FileHandle } from "node:fs/promises";
import { Readable } from "node:stream";
import { setTimeout as sleep } from "node:timers/promises";
import { StorageError, type Fallback, type Followable, type FillState } from "./fill.ts";

// A blob fill that another worker runs, followed through its temp file.
//
// The worker running a fill shares a ticket (the temp file's name, the size the upstream
// announced) through the "blob-fills" flight; a client in any other worker reads that file as it
// grows, as BlobFill's own readers do, only without the memory tail: it polls the file's size
// while it has caught up. The last byte is held back until the flight has ended "done" (the
// owner verified the digest and published the file), so a client can get a truncated body, never
// a complete wrong one. When the flight ends "failed" — a bad digest, an upstream fault, or the
// owning worker died — every follower's connection is cut.
//
// A ticket without a temp file means the owner could not write to the cache at all: every
// reader, in every worker, goes straight to the upstream (what BlobFill's readers do when the
// cache fails under them).

/** What crosses between workers for a fill: plain data (coordinator.ts). */
export interface FillTicket {
  /** The temp file being written; "" when the cache could not even start one. */
  temp: string;
  /** From the upstream's Content-Length; absent when it sent none. */
  size?: number;
}

/** How often a follower that has caught up looks for new bytes: well under the 50 ms target. */
const POLL_MS = 2;
const READ_CHUNK = 256 * 1024;

export class FillFollowerError extends Error {
  constructor() {
    super("the transfer of this blob failed in another worker");
    this.name = "FillFollowerError";
  }
}

export class FillFollower implements Followable {
  state: FillState = "running";
  error: Error | undefined;
  readonly size: number | undefined;
  private readonly ended: Promise<unknown>;

  constructor(
    private readonly ticket: FillTicket,
    ended: Promise<"done" | "failed">,
    /** The published blob: where the file is once the owner has committed it. */
    private readonly finalPath: string,
    private readonly fallback: Fallback,
  ) {
    this.size = ticket.size;
    if (!ticket.temp) {
      this.state = "failed";
      this.error = new StorageError(new Error("the cache could not start this blob's file"));
    }
    this.ended = ended.then((how) => {
      if (this.state !== "running") return;
      this.state = how;
      if (how === "failed") this.error = new FillFollowerError();
    });
  }

  /** Nothing is shared between readers here: each opens its own descriptor. */
  join(): () => void {
    return () => undefined;
  }

  stream(start: number, end: number | undefined): Readable {
    return Readable.from(this.read(start, end), { objectMode: false });
  }

  /** The temp file, or the published blob if the owner has committed it meanwhile. */
  private async openFile(): Promise<FileHandle> {
    try {
      return await open(this.ticket.temp, "r");
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
    }
    // Renamed (committed) or removed (failed): only the flight's end tells which.
    await this.ended;
    if (this.state !== "done") throw this.error ?? new FillFollowerError();
    return open(this.finalPath, "r");
  }

  private async *read(start: number, end: number | undefined): AsyncGenerator<Buffer> {
    if (this.error instanceof StorageError) {
      yield* this.fallback(start, end);
      return;
    }
    const stop = end === undefined ? Infinity : end + 1;
    let pos = start;
    const file = await this.openFile();
    try {
      const buf = Buffer.allocUnsafe(READ_CHUNK);
      while (pos < stop) {
        if (this.state === "failed") throw this.error ?? new FillFollowerError();
        // The state first, then the size: once "done" is seen, the size read after it is final.
        const verified = this.state === "done";
        const size = (await file.stat()).size;
        const avail = Math.min(verified ? size : Math.max(0, size - 1), stop);
        if (pos < avail) {
          const { bytesRead } = await file.read(buf, 0, Math.min(READ_CHUNK, avail - pos), pos);
          if (bytesRead === 0) throw new Error("cache file shorter than its size");
          pos += bytesRead;
          yield Buffer.from(buf.subarray(0, bytesRead));
        } else if (verified) {
          if (end !== undefined) throw new Error("the blob is shorter than the range asked for");
          return;
        } else {
          await Promise.race([sleep(POLL_MS), this.ended]);
        }
      }
    } finally {
      await file.close();
    }
  }
}
