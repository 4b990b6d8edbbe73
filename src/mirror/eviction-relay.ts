import type { Events } from "../coordination/coordinator.ts";
import type { BlobIndex, Evictor } from "./eviction.ts";

// One eviction index for all the workers, so the byte total is exact and each blob is removed
// once. The index (an Evictor) lives in one member of the scope — the cluster's primary — and
// the workers tell it what they commit and read through the coordinator's events: commits at
// once (the total must not lag), reads batched, since recency needs seconds, not a message per
// request. What it removes goes back the same way, so every worker drops its copy in memory.

/** The events' names in the coordinator. */
export const BLOB_ACTIVITY = "blob-activity";
export const BLOB_REMOVED = "blob-removed";

export interface BlobActivity {
  added: Array<[hex: string, size: number]>;
  read: string[];
}

/** Reads are sent at most this often. */
const READ_BATCH_MS = 1000;

/** A worker's BlobIndex: passes everything on to the scope's Evictor. */
export class EvictionRelay implements BlobIndex {
  private commits: Array<[string, number]> = [];
  private reads = new Set<string>();
  private timer: NodeJS.Timeout | undefined;
  private immediate: NodeJS.Immediate | undefined;

  constructor(
    private readonly activity: Events<BlobActivity>,
    private readonly onError: (err: Error) => void,
  ) {}

  added(hex: string, size: number): void {
    this.commits.push([hex, size]);
    this.immediate ??= setImmediate(() => this.flush());
  }

  read(hex: string): void {
    this.reads.add(hex);
    if (!this.timer) {
      this.timer = setTimeout(() => this.flush(), READ_BATCH_MS);
      this.timer.unref();
    }
  }

  /** Sends what is waiting (also on shutdown, so the last reads are not lost). */
  flush(): void {
    if (this.timer) clearTimeout(this.timer);
    if (this.immediate) clearImmediate(this.immediate);
    this.timer = this.immediate = undefined;
    if (this.commits.length === 0 && this.reads.size === 0) return;
    const batch: BlobActivity = { added: this.commits, read: [...this.reads] };
    this.commits = [];
    this.reads = new Set();
    this.activity.publish(batch).catch(this.onError);
  }
}

/** In the member that runs the Evictor: feeds it every worker's activity. Returns the unsubscribe. */
export function feedEvictor(activity: Events<BlobActivity>, evictor: Evictor): () => void {
  return activity.subscribe((batch) => {
    for (const [hex, size] of batch.added) evictor.added(hex, size);
    for (const hex of batch.read) evictor.read(hex);
  });
}
