import type { Logger } from "winston";
import type { Events, Lease, Leases } from "../coordination/coordinator.ts";
import type { Evictor } from "../mirror/eviction.ts";
import { feedEvictor, type BlobActivity } from "../mirror/eviction-relay.ts";

// The replicas of a cluster share one bucket, so its size is one number and each blob must be
// evicted once: one replica holds the "eviction" lease and runs the cluster's Evictor, fed by
// every replica's activity (EvictionRelay, through Redis). The others only relay. If the holder
// dies, its lease runs out and another replica takes over; the new index is built from a
// listing of the bucket and the saved last reads, as at any start.

/** How long the lease lasts without renewal; renewed every third of it. */
const LEASE_MS = 30_000;

export class EvictionLeader {
  private lease: Lease | undefined;
  private evictor: Evictor | undefined;
  private unfeed: (() => void) | undefined;
  private timer: NodeJS.Timeout | undefined;
  private busy: Promise<void> = Promise.resolve();
  private stopped = false;

  constructor(
    private readonly leases: Leases,
    private readonly activity: Events<BlobActivity>,
    private readonly makeEvictor: () => Evictor,
    private readonly log: Logger,
    private readonly leaseMs = LEASE_MS,
  ) {}

  /** The Evictor while this replica leads; undefined otherwise. */
  get current(): Evictor | undefined {
    return this.evictor;
  }

  start(): void {
    const tick = () => {
      this.busy = this.busy
        .then(() => this.step())
        .catch((err: Error) => {
          this.log.warn("eviction lease", { error: err.message });
        });
    };
    tick();
    this.timer = setInterval(tick, this.leaseMs / 3);
    this.timer.unref();
  }

  /** Takes the lease if it is free, keeps it if ours, and lets the index go if it was lost. */
  private async step(): Promise<void> {
    if (this.stopped) return;
    if (this.lease) {
      if (await this.lease.renew()) return;
      this.log.warn("lost the eviction lease: another replica keeps the cache's size now");
      await this.resign();
    }
    const lease = await this.leases.acquire("eviction", this.leaseMs);
    if (!lease) return;
    this.lease = lease;
    const evictor = this.makeEvictor();
    this.evictor = evictor;
    // Fed from now on; what was committed before is in the listing the index starts from.
    this.unfeed = feedEvictor(this.activity, evictor);
    this.log.info("this replica keeps the cache's size (eviction lease)");
    await evictor.start();
  }

  private async resign(): Promise<void> {
    this.unfeed?.();
    this.unfeed = undefined;
    const evictor = this.evictor;
    this.evictor = undefined;
    this.lease = undefined;
    await evictor?.close();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    await this.busy;
    const lease = this.lease;
    await this.resign();
    await lease?.release();
  }
}
