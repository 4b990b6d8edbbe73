import { EventEmitter } from "node:events";
import { open, type FileHandle } from "node:fs/promises";
import { setTimeout as sleep } from "node:timers/promises";
import { StorageError, type Fallback, type FillFile, type Followable, type FillState } from "./fill.ts";
import type { FillOrigin } from "./remote-fill.ts";

// A blob fill that another worker runs, followed through its temp file.
//
// The worker running a fill shares a ticket (the temp file's name, the size the upstream
// announced) through the "blob-fills" flight; a client in any other worker reads that file as it
// grows, as BlobFill's own readers do, only without the memory tail: the clients of one worker
// share one descriptor, and one poll of the file's size runs while any of them has caught up.
// BlobService keeps one FillFollower per fill per worker. The last byte is held back until the flight has ended "done" (the
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
  /** In a cluster (cluster.redis): the replica running the fill, for the others (remote-fill.ts). */
  origin?: FillOrigin;
}

/** How often a follower that has caught up looks for new bytes: well under the 50 ms target. */
const POLL_MS = 2;
/**
 * Followers mostly read what landed long ago: big reads, few syscalls and chunks. But a burst of
 * clients joins at once, and a worker's clients take turns: were each one's first read a whole
 * READ_CHUNK, the last would get its first byte only after every other one's megabyte had been
 * read and copied to its socket. So each client's reads start at FIRST_CHUNK and double.
 */
const READ_CHUNK = 1024 * 1024;
const FIRST_CHUNK = 64 * 1024;

/** The file a follower reads: the owner's temp file, or the published blob once it is committed. */
interface FollowedFile extends FillFile {
  /** How many bytes are in it now. */
  size(): Promise<number>;
}

/** The published blob (a reader from the storage driver, which knows its size). */
export interface PublishedFile extends FillFile {
  readonly size: number;
}

export class FillFollowerError extends Error {
  constructor() {
    super("the transfer of this blob failed in another worker");
    this.name = "FillFollowerError";
  }
}

/**
 * A fill run elsewhere — by another worker (FillFollower) or another replica (RemoteFill) — as
 * this process's clients see it: its state follows the flight's end, and each client following
 * it counts as a reader for the owner while it runs.
 */
export abstract class ElsewhereFill implements Followable {
  state: FillState = "running";
  error: Error | undefined;
  readonly size: number | undefined;
  protected readonly ended: Promise<void>;
  protected readonly events = new EventEmitter();
  /** Clients here that joined while the owner ran the fill and have not left. */
  private followingHere = 0;

  constructor(
    readonly ticket: FillTicket,
    ended: Promise<"done" | "failed">,
    /** Opens the published blob: where the bytes are once the owner has committed them. */
    protected readonly openPublished: () => Promise<PublishedFile | undefined>,
    protected readonly fallback: Fallback,
    /**
     * Tells the owner this worker's first client started (+1), or its last stopped (-1),
     * following: see BlobFill.followedElsewhere.
     */
    private readonly following: (delta: 1 | -1) => void = () => undefined,
  ) {
    this.events.setMaxListeners(0);
    this.size = ticket.size;
    if (!ticket.temp) {
      this.state = "failed";
      this.error = new StorageError(new Error("the cache could not start this blob's file"));
    }
    this.ended = ended.then((how) => {
      if (this.state === "running") {
        this.state = how;
        if (how === "failed") this.error = new FillFollowerError();
      }
      this.events.emit("change");
    });
  }

  join(): () => void {
    // Only while the owner still runs the fill: after it, there is nothing to keep alive.
    const counted = this.state === "running";
    // The owner needs to know only whether anyone here follows: a burst of 32 clients is then
    // two messages through the primary, not 64 (each one serialized, broadcast and answered).
    if (counted && this.followingHere++ === 0) this.following(1);
    let left = false;
    return () => {
      if (left) return;
      left = true;
      if (counted && --this.followingHere === 0) this.following(-1);
      this.left();
    };
  }

  /** A client stopped following (once per join). */
  protected left(): void {}

  stream(start: number, end: number | undefined): AsyncIterable<Buffer> {
    return this.read(start, end);
  }

  protected abstract read(start: number, end: number | undefined): AsyncGenerator<Buffer>;
}

export class FillFollower extends ElsewhereFill {
  /** Bytes known to be in the file: what the shared poll last saw. */
  private known = 0;
  /** One descriptor for every reader in this worker (reads are positional); opened by the first. */
  private file: Promise<FollowedFile> | undefined;
  private holders = 0;
  private polling = false;

  /** A client follows the fill: the shared descriptor stays open until the last one leaves. */
  override join(): () => void {
    this.holders++;
    return super.join();
  }

  protected override left(): void {
    if (--this.holders > 0 || !this.file) return;
    const file = this.file;
    this.file = undefined;
    void file.then((f) => f.close()).catch(() => undefined);
  }

  /** The temp file, or the published blob if the owner has committed it meanwhile. */
  private async openFile(): Promise<FollowedFile> {
    try {
      const fh: FileHandle = await open(this.ticket.temp, "r");
      return {
        read: (buffer, offset, length, position) => fh.read(buffer, offset, length, position),
        close: () => fh.close(),
        size: async () => (await fh.stat()).size,
      };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
    }
    // Published (renamed or uploaded) or removed (failed): only the flight's end tells which.
    await this.ended;
    if (this.state !== "done") throw this.error ?? new FillFollowerError();
    const published = await this.openPublished();
    if (!published) throw new Error("the blob left the cache as it landed");
    return {
      read: (b, o, l, p) => published.read(b, o, l, p),
      close: () => published.close(),
      size: () => Promise.resolve(published.size),
    };
  }

  /**
   * Resolves when the file has grown or the fill has ended. One poll runs for all the readers
   * of this worker, and only while one of them waits: 16 clients cost one fstat every POLL_MS,
   * not sixteen.
   */
  private more(file: FollowedFile): Promise<void> {
    const changed = new Promise<void>((resolve) => this.events.once("change", resolve));
    if (!this.polling) void this.poll(file);
    return changed;
  }

  private async poll(file: FollowedFile): Promise<void> {
    this.polling = true;
    try {
      while (this.events.listenerCount("change") > 0 && this.state === "running") {
        const size = await file.size();
        if (size > this.known) {
          this.known = size;
          this.events.emit("change");
        } else {
          await Promise.race([sleep(POLL_MS), this.ended]);
        }
      }
    } catch {
      // The descriptor was closed under us (every reader left): nobody is waiting any more.
    } finally {
      this.polling = false;
    }
  }

  protected async *read(start: number, end: number | undefined): AsyncGenerator<Buffer> {
    if (this.error instanceof StorageError) {
      yield* this.fallback(start, end);
      return;
    }
    const stop = end === undefined ? Infinity : end + 1;
    let pos = start;
    const file = await (this.file ??= this.openFile());
    let final: number | undefined;
    let most = FIRST_CHUNK;
    while (pos < stop) {
      if (this.state === "failed") throw this.error ?? new FillFollowerError();
      // Once "done" is seen, a size read after it is the blob's whole size.
      if (this.state === "done") final ??= await file.size();
      const size = final ?? this.known;
      const avail = Math.min(final !== undefined ? size : Math.max(0, size - 1), stop);
      if (pos < avail) {
        const chunk = Buffer.allocUnsafe(Math.min(most, avail - pos));
        most = Math.min(most * 2, READ_CHUNK);
        const { bytesRead } = await file.read(chunk, 0, chunk.length, pos);
        if (bytesRead === 0) throw new Error("cache file shorter than its size");
        pos += bytesRead;
        yield bytesRead === chunk.length ? chunk : chunk.subarray(0, bytesRead);
      } else if (final !== undefined) {
        if (end !== undefined) throw new Error("the blob is shorter than the range asked for");
        return;
      } else {
        await this.more(file);
      }
    }
  }
}
