// The samples a run collects, and how they are summarised: the median over repetitions, leaving
// out repetitions measured while other tenants kept the machine busy (when enough clean ones
// remain). Comparisons are made only between targets of the same run.
import type { Values } from "./figures-cold.ts";

export interface Sample {
  figure: string;
  target: string;
  rep: number;
  /**
   * Cores busy outside the benchmark: during the sample for warm figures (machine minus target,
   * client and benchmark), just before the repetition otherwise (proc.backgroundCores).
   */
  background: number;
  values: Values;
}

/** A repetition that started with more than this many cores busy elsewhere is noise. */
export const NOISY_CORES = 0.5;

export const FIGURES: Record<string, string> = {
  "cold-big": "cold pull of library/big:1 (4 × 64 MiB + config), 4 parallel GETs, empty cache",
  "cold-small": "cold pull of library/small:1 (50 × 64 KiB + config), 8 parallel GETs, empty cache",
  coalesce:
    "32 clients GET the same cold 64 MiB blob at once, on a target that has served one pull (small:1)",
  "coalesce-fresh":
    "32 clients GET the same cold 64 MiB blob at once, as the first requests of a fresh target",
  "warm-64MiB-x1": "warm 64 MiB blobs, 1 stream",
  "warm-64MiB-x8": "warm 64 MiB blobs, 8 streams",
  "warm-64MiB-x64": "warm 64 MiB blobs, 64 streams",
  "warm-64KiB-x1": "warm 64 KiB blobs, 1 stream",
  "warm-64KiB-x8": "warm 64 KiB blobs, 8 streams",
  "warm-64KiB-x64": "warm 64 KiB blobs, 64 streams",
  "manifest-tag": "warm manifest by tag, wrk, 64 connections",
  "manifest-digest": "warm manifest by digest, wrk, 64 connections",
  crashes: "times the target process died during the warm figures (it was restarted each time)",
  "startup-empty": "regmirror start-up (spawn until GET /v2/ is 200), empty cache",
  "startup-100k": "regmirror start-up with 100,000 blobs in the cache dir",
};

export const WARM_FIGURES = Object.keys(FIGURES).filter(
  (f) => f.startsWith("warm-") || f.startsWith("manifest-"),
);

export function median(xs: number[]): number | undefined {
  if (xs.length === 0) return undefined;
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid] : (s[mid - 1]! + s[mid]!) / 2;
}

export class Results {
  readonly samples: Sample[] = [];

  add(sample: Sample): void {
    this.samples.push(sample);
  }

  targets(): string[] {
    return [...new Set(this.samples.map((s) => s.target))];
  }

  figures(): string[] {
    return [...new Set(this.samples.map((s) => s.figure))];
  }

  /** The samples that count: noisy repetitions are dropped when at least two clean ones remain. */
  kept(figure: string, target: string): Sample[] {
    const all = this.samples.filter((s) => s.figure === figure && s.target === target);
    const clean = all.filter((s) => s.background <= NOISY_CORES);
    return clean.length >= 2 ? clean : all;
  }

  median(figure: string, target: string, metric: string): number | undefined {
    return median(
      this.kept(figure, target)
        .map((s) => s.values[metric])
        .filter((v): v is number => v !== undefined),
    );
  }

  /** The largest value of `metric` over every kept sample of these figures. */
  max(figures: string[], target: string, metric: string): number | undefined {
    const xs = figures.flatMap((f) =>
      this.kept(f, target)
        .map((s) => s.values[metric])
        .filter((v): v is number => v !== undefined),
    );
    return xs.length ? Math.max(...xs) : undefined;
  }

  /** One JSON object per figure: every target's medians and its individual runs. */
  figureJson(figure: string): string {
    const targets: Record<string, unknown> = {};
    for (const t of this.targets()) {
      const kept = this.kept(figure, t);
      const all = this.samples.filter((s) => s.figure === figure && s.target === t);
      if (all.length === 0) continue;
      const metrics = [...new Set(all.flatMap((s) => Object.keys(s.values)))];
      const med: Record<string, number> = {};
      for (const m of metrics) {
        const v = this.median(figure, t, m);
        if (v !== undefined) med[m] = Math.round(v * 1000) / 1000;
      }
      targets[t] = {
        median: med,
        runs: all.length,
        dropped_noisy: all.length - kept.length,
        samples: all.map((s) => ({
          rep: s.rep,
          background_cores: round(s.background),
          ...roundAll(s.values),
        })),
      };
    }
    return JSON.stringify({ figure, title: FIGURES[figure] ?? figure, targets });
  }
}

function round(x: number): number {
  return Math.round(x * 1000) / 1000;
}

function roundAll(v: Values): Values {
  return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, round(x)]));
}
