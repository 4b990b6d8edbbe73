import type { Stats } from "./stats.ts";

// A day of figures in memory, one sample a minute, for the status page's chart and its
// "pulls in the last hour". Counters are cumulative; the page plots differences.

export interface Point {
  t: number;
  hits: number;
  misses: number;
  bytesCache: number;
  bytesUpstream: number;
  pulls: number;
}

export class History {
  private readonly points: Point[] = [];
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly sample: () => Promise<Stats>,
    private readonly everyMs = 60_000,
    private readonly keep = 24 * 60,
  ) {}

  start(): void {
    void this.take();
    this.timer = setInterval(() => void this.take(), this.everyMs);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
  }

  list(): Point[] {
    return [...this.points];
  }

  /** Pulls since `ms` ago, from the oldest sample in that window to now. */
  pullsSince(ms: number, now: Stats): number {
    const from = Date.now() - ms;
    const base = this.points.find((p) => p.t >= from);
    return now.pulls - (base?.pulls ?? 0);
  }

  /** The samples, then one for `now`: a chart reaches the present, not the last whole minute. */
  listWithNow(now: Stats): Point[] {
    return [...this.points, toPoint(now, Date.now())];
  }

  private async take(): Promise<void> {
    this.points.push(toPoint(await this.sample(), Date.now()));
    if (this.points.length > this.keep) this.points.splice(0, this.points.length - this.keep);
  }
}

export function toPoint(s: Stats, t: number): Point {
  return {
    t,
    hits: s.hits.manifest + s.hits.blob,
    misses: s.misses.manifest + s.misses.blob,
    bytesCache: s.bytesServed.cache,
    bytesUpstream: s.bytesServed.upstream,
    pulls: s.pulls,
  };
}
