import { EventEmitter } from "node:events";
import type { Readable } from "node:stream";
import { PublishError, type BlobWriter } from "../storage/blob-store.ts";
import type { FillWatch } from "./fill-watch.ts";

// One blob coming from the upstream into the cache, readable while it lands.
//
// The upstream body goes to a temp file (hashed on the way) and, for a while, stays in memory:
// every client of this blob — the one that caused the fill and any that arrive later — reads
// the newest bytes from memory as soon as they arrive, and older ones back from the file. So
// there is exactly one upstream transfer however many clients ask, a latecomer gets what is
// already there at disk speed, and a client that hangs up only stops its own reader: the fill
// goes on under its own limits (FillWatch: no stall, and not for long once nobody follows it).
//
// Readers read back through one descriptor of the temp file, opened before the first byte and
// shared by all of them; it is closed when the fill is over and its last reader has gone. A
// reader must never have to open the file by name: at commit the temp name is renamed away, and
// the published name may already be evicted (a blob larger than cache.maxSize goes at once).
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

/** What a fill needs of the cache file being written (a BlobWriter; a fake in unit tests). */
export type FillWriter = Pick<BlobWriter, "written" | "writev" | "verify" | "publish" | "abort">;

/** A read descriptor of that same file (a FileHandle; a fake in unit tests). */
export interface FillFile {
  read(buffer: Buffer, offset: number, length: number, position: number): Promise<{ bytesRead: number }>;
  close(): Promise<void>;
}

/**
 * What a client's answer needs of a fill, whether this process runs it (BlobFill) or another
 * worker does (FillFollower).
 */
export interface Followable {
  readonly size: number | undefined;
  readonly state: FillState;
  readonly error: Error | undefined;
  /** A client follows the fill; call the returned function (once) when it is done. */
  join(): () => void;
  /**
   * Bytes [start, end] (inclusive), following the fill as it grows. Between join() and leave.
   * The chunks themselves, not a Readable around them: sendStream takes them one by one, and a
   * stream in between cost a push, a buffer and events per chunk for nothing.
   */
  stream(start: number, end: number | undefined): AsyncIterable<Buffer>;
}

export interface BlobFillOptions {
  writer: FillWriter;
  /** The read side of `writer`'s file; the fill owns it from now on. */
  file: FillFile;
  /** From the upstream's Content-Length; undefined when it sent none. */
  size: number | undefined;
  /** Opens the published blob: only for a reader that joins after the fill has let its file go. */
  openPublished: () => Promise<FillFile | undefined>;
  fallback: Fallback;
  /** The fill's limits; told of every byte and every reader. */
  watch?: FillWatch;
  /**
   * Let the last byte go once the digest is verified, before the blob is published. For storage
   * where publishing is slow (an upload to S3); on disk (a rename) the last byte waits for it, so
   * a client that has its whole blob can count on the cache having it too.
   */
  releaseBeforePublish?: boolean;
}

const READ_CHUNK = 256 * 1024;
/** Received bytes kept in memory after they are written, for readers that keep up. */
const TAIL_BYTES = 4 * 1024 * 1024;
/** Received but not yet written: above this the upstream body is paused. */
const MAX_UNWRITTEN = 8 * 1024 * 1024;
/**
 * Taken from the upstream in one turn of the event loop; then the body waits for the next turn.
 * Each chunk goes out to every client following the fill in the same turn, and Node (libuv
 * 1.45 and later) accepts one new connection a turn: unbounded, a fill read megabytes a turn and
 * copied them to 30 clients, turns took 50–100 ms, and the last clients of a burst were
 * accepted 0.4–0.9 s late.
 */
const TURN_BYTES = 256 * 1024;

export class BlobFill implements Followable {
  state: FillState = "running";
  error: Error | undefined;
  readonly size: number | undefined;
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
  private file: FillFile | undefined;
  /** Who still needs `file`: the pump until it settles, and every reader that joined. */
  private holders = 1;
  /** Other workers (or replicas) whose clients follow this fill (followedElsewhere). */
  private remoteReaders = 0;

  constructor(private readonly opts: BlobFillOptions) {
    this.events.setMaxListeners(0);
    this.size = opts.size;
    this.file = opts.file;
    opts.watch?.answer();
  }

  /**
   * A client follows this fill. Until it calls the returned function (once; later calls do
   * nothing), the fill's file stays open for it and the fill does not count as abandoned.
   */
  join(): () => void {
    this.holders++;
    this.opts.watch?.joined();
    let left = false;
    return () => {
      if (left) return;
      left = true;
      this.opts.watch?.left();
      this.let();
    };
  }

  /**
   * Another worker's (or replica's) first client started (+1), or its last stopped (-1),
   * following this fill: it counts for the abandoned limit as a reader here does, but holds no
   * descriptor here.
   */
  followedElsewhere(delta: 1 | -1): void {
    if (delta > 0) {
      this.remoteReaders++;
      this.opts.watch?.joined();
    } else if (this.remoteReaders > 0) {
      // A -1 whose +1 reached an earlier fill of this blob changes nothing here.
      this.remoteReaders--;
      this.opts.watch?.left();
    }
  }

  /** Copies `body` into the cache. Resolves when published; rejects (after cleanup) otherwise. */
  async pump(body: Readable): Promise<void> {
    const writer = this.opts.writer;
    const signal = this.opts.watch?.signal;
    const onAbort = () => body.destroy(signal?.reason as Error);
    if (signal?.aborted) onAbort();
    else signal?.addEventListener("abort", onAbort, { once: true });
    try {
      await this.copy(body, writer);
      // Verified and durable before the last byte goes out: a client never gets a whole wrong
      // blob. With releaseBeforePublish, publishing (an upload) goes on after it: until it is
      // done the flight is still held, so the next request follows this fill's file.
      await writer.verify();
      if (this.opts.releaseBeforePublish) {
        this.verified = true;
        this.events.emit("change");
      }
      await writer.publish().catch((err: unknown) => {
        // The bytes were right and are in the temp file, but the storage would not take them:
        // readers still on their way finish from the upstream, as when a write fails mid-fill.
        throw err instanceof PublishError ? new StorageError(err) : err;
      });
      this.verified = true;
      this.state = "done";
      // Everything is in the file now: let the memory go at once rather than at the next full
      // GC (readers still on their way read the rest back through the shared descriptor).
      this.tail.length = 0;
      this.tailOffsets.length = 0;
      this.tailBytes = 0;
    } catch (err) {
      body.destroy();
      await writer.abort();
      // The watch's reason names the limit; the body's own error would only say "aborted".
      this.error = signal?.aborted ? (signal.reason as Error) : (err as Error);
      this.state = "failed";
      throw this.error;
    } finally {
      signal?.removeEventListener("abort", onAbort);
      this.opts.watch?.dispose();
      this.let();
      this.events.emit("change");
    }
  }

  /** One holder of the file is done with it; the last one closes it. */
  private let(): void {
    if (--this.holders > 0 || !this.file) return;
    const file = this.file;
    this.file = undefined;
    // A read descriptor has nothing left to flush: an error closing it changes nothing for anyone.
    void file.close().catch(() => undefined);
  }

  private copy(body: Readable, writer: FillWriter): Promise<void> {
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
      // Bytes taken since the body last waited for a turn; `turn` is set while it waits.
      let taken = 0;
      let turn: NodeJS.Immediate | undefined;
      const unwrittenFull = () => this.received - this.written > MAX_UNWRITTEN;
      const resume = () => {
        if (body.isPaused() && turn === undefined && !unwrittenFull()) body.resume();
      };
      const flush = async () => {
        writing = true;
        while (queue.length > 0 && !failed) {
          const batch = queue.splice(0);
          try {
            await writer.writev(batch);
          } catch (err) {
            return fail(new StorageError(err));
          }
          this.written = writer.written;
          resume();
          // The body may be paused for a slow disk: progress there is not an upstream stall.
          this.opts.watch?.progress();
          this.trim();
          this.events.emit("change");
        }
        writing = false;
        if (ended && !failed) resolve();
      };
      body.on("data", (chunk: Buffer) => {
        this.opts.watch?.progress();
        this.tail.push(chunk);
        this.tailOffsets.push(this.received);
        this.tailBytes += chunk.length;
        this.received += chunk.length;
        queue.push(chunk);
        taken += chunk.length;
        if (taken >= TURN_BYTES && turn === undefined) {
          turn = setImmediate(() => {
            turn = undefined;
            taken = 0;
            resume();
          });
          body.pause();
        }
        if (unwrittenFull()) body.pause();
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

  /**
   * A stream of bytes [start, end] (inclusive) of the blob, following the fill as it grows.
   * Call between join() and its leave: the stream reads through the fill's shared file.
   */
  stream(start: number, end: number | undefined): AsyncIterable<Buffer> {
    return this.read(start, end);
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

  private async openPublished(): Promise<FillFile> {
    const file = await this.opts.openPublished();
    if (!file) throw new Error("the blob left the cache as it landed");
    return file;
  }

  private async *read(start: number, end: number | undefined): AsyncGenerator<Buffer> {
    const stop = end === undefined ? Infinity : end + 1;
    let pos = start;
    /** Only for a reader that joined after the fill let its file go (the fill was just done). */
    let own: FillFile | undefined;
    let buf: Buffer | undefined;
    try {
      while (pos < stop && this.state !== "failed") {
        const avail = Math.min(this.readable(), stop);
        if (pos < avail) {
          const mem = this.fromTail(pos, avail);
          if (mem) {
            pos += mem.length;
            yield mem;
            continue;
          }
          // Older than the tail: it was written, so the file has it.
          const file = this.file ?? (own ??= await this.openPublished());
          buf ??= Buffer.allocUnsafe(READ_CHUNK);
          const { bytesRead } = await file.read(buf, 0, Math.min(READ_CHUNK, avail - pos), pos);
          if (bytesRead === 0) throw new Error("cache file shorter than what landed");
          pos += bytesRead;
          // Copy: the buffer is reused for the next read while this chunk may still be queued.
          yield Buffer.from(buf.subarray(0, bytesRead));
        } else if (this.verified) {
          return;
        } else {
          await this.changed();
        }
      }
    } finally {
      await own?.close();
    }
    if (pos >= stop) return;
    if (!(this.error instanceof StorageError)) throw this.error ?? new Error("fill failed");
    yield* this.opts.fallback(pos, end);
  }
}
