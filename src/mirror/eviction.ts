import { LRUCache } from "lru-cache";
import type { Logger } from "winston";
import type { BlobStore } from "../storage/blob-store.ts";
import type { Metrics } from "../metrics/metrics.ts";
import { parseDigest } from "../oci/digest.ts";
import { loadLastRead, saveLastRead } from "../storage/last-read.ts";

// Keeps the blob cache under cache.maxSize and drops blobs unread for cache.blobTTL.
//
// The index is an lru-cache keyed by digest hex, sized in bytes, with the TTL counted from the
// last read (read() sets the entry again). Recency survives a restart because the index saves
// the last reads about once a minute (storage/last-read.ts), and is rebuilt at start from a
// listing of the blobs and those reads, oldest read first.
// Removal happens in the background, never on a request's path. A response that is reading a
// blob holds it open, so removing it does not cut the response short.

export interface EvictionOptions {
  store: BlobStore;
  metrics: Metrics;
  log: Logger;
  maxSizeBytes: number;
  blobTtlMs: number;
  /** Told of every blob removed, so copies elsewhere (memory) go too. */
  onRemove?: (hex: string) => void;
}

type Reason = "size" | "age";

/** How often the last reads are saved, when any changed. */
const SAVE_EVERY_MS = 60_000;

interface Entry {
  size: number;
  lastRead: number;
}

/**
 * What the request path tells the blob index. In one process that is the Evictor itself; in a
 * worker, an EvictionRelay that hands it to the one Evictor of all the workers (the primary's).
 */
export interface BlobIndex {
  /** A blob was committed to the cache. */
  added(hex: string, size: number): void;
  /** A cached blob was read: it moves to the front, and its age restarts. */
  read(hex: string): void;
}

export class Evictor implements BlobIndex {
  private readonly lru: LRUCache<string, Entry>;
  private bytes = 0;
  private sweeper: NodeJS.Timeout | undefined;
  private saver: NodeJS.Timeout | undefined;
  /** Reads (or blobs) not yet saved. */
  private dirty = false;
  private saving: Promise<void> | undefined;
  private readonly removing = new Set<Promise<void>>();

  constructor(private readonly opts: EvictionOptions) {
    opts.metrics.cacheLimit.set(opts.maxSizeBytes);
    this.lru = new LRUCache<string, Entry>({
      maxSize: Math.max(opts.maxSizeBytes, 1),
      sizeCalculation: (e) => Math.max(e.size, 1),
      ttl: opts.blobTtlMs || undefined,
      // Stale entries are swept by purgeStale() on a timer, not one timer per blob.
      ttlAutopurge: false,
      allowStale: true,
      dispose: (e, hex, reason) => {
        this.bytes -= e.size;
        this.report();
        if (reason === "evict") this.remove(hex, "size");
        else if (reason === "expire") this.remove(hex, "age");
      },
    });
  }

  /** Loads what is on disk (least recently read first), then sweeps periodically. */
  async start(): Promise<void> {
    await this.load();
    const every = Math.min(Math.max(this.opts.blobTtlMs / 10, 1000), 3_600_000);
    this.sweeper = setInterval(() => this.sweep(), every);
    this.sweeper.unref();
    this.saver = setInterval(() => void this.save(), SAVE_EVERY_MS);
    this.saver.unref();
  }

  /** Saves the last reads if any changed; a failure is logged, and tried again next time. */
  save(): Promise<void> {
    if (!this.dirty) return this.saving ?? Promise.resolve();
    this.dirty = false;
    const reads: Array<[string, number]> = [];
    for (const [hex, e] of this.lru.entries()) reads.push([hex, e.lastRead]);
    const done = saveLastRead(this.opts.store.driver, reads).catch((err: Error) => {
      this.dirty = true;
      this.opts.log.warn("could not save when blobs were last read", { error: err.message });
    });
    this.saving = done.finally(() => {
      if (this.saving === done) this.saving = undefined;
    });
    return done;
  }

  /**
   * Files were removed behind the index's back (storage/generation.ts): forget it all (nothing
   * is removed for that) and load it again from the disk, so the byte total is exact again.
   */
  async reload(): Promise<void> {
    // What this index knows of reads is newer than what it last saved: keep it.
    const known = new Map<string, number>();
    for (const [hex, e] of this.lru.entries()) known.set(hex, e.lastRead);
    this.lru.clear();
    await this.load(known);
  }

  private async load(known = new Map<string, number>()): Promise<void> {
    const entries: Array<{ hex: string; size: number; lastRead: number }> = [];
    // An unreadable folder is reported and skipped: the rest of the cache is still kept in bounds.
    const skipped = (err: Error) =>
      this.opts.log.error("cannot index part of the cache", { error: err.message });
    const reads = await loadLastRead(this.opts.store.driver).catch((err: Error) => {
      skipped(err);
      return new Map<string, number>();
    });
    for await (const b of this.opts.store.list(skipped)) {
      const lastRead = Math.max(b.modifiedMs, reads.get(b.hex) ?? 0, known.get(b.hex) ?? 0);
      entries.push({ hex: b.hex, size: b.size, lastRead });
    }
    entries.sort((a, b) => a.lastRead - b.lastRead);
    for (const e of entries) {
      // A blob committed since start() began is already in, and newer than what disk said.
      if (!this.lru.has(e.hex)) this.add(e.hex, e.size, e.lastRead);
    }
    this.opts.log.info("blob index loaded", { blobs: this.lru.size, bytes: this.bytes });
    this.sweep();
  }

  added(hex: string, size: number): void {
    this.add(hex, size, Date.now());
  }

  read(hex: string): void {
    // set, not get: get() of an entry past its TTL would evict the blob being read right now.
    const e = this.lru.peek(hex, { allowStale: true });
    if (e === undefined) return;
    // The same object: a new one would be disposed of as replaced, and its bytes subtracted.
    e.lastRead = Date.now();
    this.lru.set(hex, e);
    this.dirty = true;
  }

  /** Removes blobs unread for longer than blobTTL. */
  sweep(): void {
    this.lru.purgeStale();
  }

  /** Stops sweeping, waits for removals under way, and saves the last reads. */
  async close(): Promise<void> {
    if (this.sweeper) clearInterval(this.sweeper);
    if (this.saver) clearInterval(this.saver);
    await Promise.all([...this.removing]);
    await this.save();
  }

  private add(hex: string, size: number, lastRead: number): void {
    this.bytes += size;
    // The TTL counts from the last read, which for a blob loaded from disk was in the past.
    // lru-cache keeps time on performance.now()'s clock, not the wall clock.
    this.lru.set(hex, { size, lastRead }, { start: performance.now() - (Date.now() - lastRead) });
    this.dirty = true;
    if (!this.lru.has(hex)) {
      // Larger than the whole cache: lru-cache refused it without calling dispose.
      this.bytes -= size;
      this.remove(hex, "size");
    }
    this.report();
  }

  private remove(hex: string, reason: Reason): void {
    const d = parseDigest(`sha256:${hex}`);
    if (!d) return;
    this.opts.metrics.evictions.inc({ reason });
    this.opts.onRemove?.(hex);
    const p = this.opts.store
      .remove(d)
      .catch((err: Error) => {
        this.opts.log.warn("could not remove an evicted blob", { hex, error: err.message });
      })
      .finally(() => this.removing.delete(p));
    this.removing.add(p);
  }

  private report(): void {
    this.opts.metrics.cacheBytes.set(this.bytes);
    this.opts.metrics.cacheBlobs.set(this.lru.size);
  }
}
