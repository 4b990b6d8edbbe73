import type { Point } from "../metrics/history.ts";
import { formatBytes } from "../format.ts";
import { html, type Html, type Part } from "./html.ts";

// The status page's two charts, drawn on the server as inline SVG (no script, no library, works
// offline): the hit ratio over time, and the bytes served from the cache against those fetched
// from the upstream. The history holds cumulative counters a minute apart; the charts plot what
// changed in each interval, merged into at most MAX_BUCKETS bars so that a day stays legible.

const MAX_BUCKETS = 48;
const W = 480;
const H = 150;
const PAD = { left: 58, right: 8, top: 10, bottom: 22 };
const PLOT_W = W - PAD.left - PAD.right;
const PLOT_H = H - PAD.top - PAD.bottom;

export interface Bucket {
  from: number;
  to: number;
  hits: number;
  misses: number;
  bytesCache: number;
  bytesUpstream: number;
}

/** What changed between samples, merged into buckets of equal time. */
export function buckets(points: Point[], max = MAX_BUCKETS): Bucket[] {
  if (points.length < 2) return [];
  const t0 = points[0]!.t;
  const span = Math.max(points[points.length - 1]!.t - t0, 1);
  const n = Math.min(points.length - 1, max);
  const out: Bucket[] = Array.from({ length: n }, (_, i) => ({
    from: t0 + (span * i) / n,
    to: t0 + (span * (i + 1)) / n,
    hits: 0,
    misses: 0,
    bytesCache: 0,
    bytesUpstream: 0,
  }));
  for (let i = 1; i < points.length; i++) {
    const a = points[i - 1]!;
    const b = points[i]!;
    const k = Math.min(Math.floor(((b.t - t0) / span) * n - 1e-9), n - 1);
    const bucket = out[Math.max(k, 0)]!;
    // Counters only grow within a process; clamp anyway, a negative bar would be nonsense.
    bucket.hits += Math.max(b.hits - a.hits, 0);
    bucket.misses += Math.max(b.misses - a.misses, 0);
    bucket.bytesCache += Math.max(b.bytesCache - a.bytesCache, 0);
    bucket.bytesUpstream += Math.max(b.bytesUpstream - a.bytesUpstream, 0);
  }
  return out;
}

export function hitRatioChart(bs: Bucket[], now: number): Html {
  if (bs.length === 0) return empty();
  const x = (i: number) => PAD.left + (PLOT_W * (i + 0.5)) / bs.length;
  const y = (ratio: number) => PAD.top + PLOT_H * (1 - ratio);
  // A bucket without requests has no ratio: the line breaks there instead of dropping to zero.
  const runs: Array<Array<[number, number]>> = [[]];
  const dots: Html[] = [];
  bs.forEach((b, i) => {
    const total = b.hits + b.misses;
    if (total === 0) {
      if (runs[runs.length - 1]!.length > 0) runs.push([]);
      return;
    }
    const r = b.hits / total;
    runs[runs.length - 1]!.push([x(i), y(r)]);
    dots.push(
      html`<circle cx="${x(i).toFixed(1)}" cy="${y(r).toFixed(1)}" r="2.5" class="hit"
        ><title>${span(b, now)}: ${(r * 100).toFixed(1)}% (${b.hits} hits, ${b.misses} misses)</title></circle
      >`,
    );
  });
  const lines = runs
    .filter((r) => r.length > 1)
    .map(
      (r) =>
        html`<polyline
          class="hit"
          points="${r.map(([a, b]) => `${a.toFixed(1)},${b.toFixed(1)}`).join(" ")}"
        />`,
    );
  return svg("Hit ratio per interval", [
    grid(y, [0, 0.5, 1], (v) => `${v * 100}%`),
    lines,
    dots,
    axis(bs, now),
  ]);
}

export function bytesChart(bs: Bucket[], now: number): Html {
  if (bs.length === 0) return empty();
  const max = Math.max(...bs.map((b) => b.bytesCache + b.bytesUpstream), 1);
  const y = (v: number) => PAD.top + PLOT_H * (1 - v / max);
  const slot = PLOT_W / bs.length;
  const w = Math.max(slot * 0.8, 1);
  const bars = bs.map((b, i) => {
    const left = PAD.left + slot * i + (slot - w) / 2;
    const hCache = (PLOT_H * b.bytesCache) / max;
    const hUp = (PLOT_H * b.bytesUpstream) / max;
    const base = PAD.top + PLOT_H;
    return html`<g
      ><title>
        ${span(b, now)}: ${formatBytes(b.bytesCache)} from the cache, ${formatBytes(b.bytesUpstream)} from the
        upstream</title
      ><rect
        class="cache"
        x="${left.toFixed(1)}"
        y="${(base - hCache).toFixed(1)}"
        width="${w.toFixed(1)}"
        height="${hCache.toFixed(1)}" /><rect
        class="upstream"
        x="${left.toFixed(1)}"
        y="${(base - hCache - hUp).toFixed(1)}"
        width="${w.toFixed(1)}"
        height="${hUp.toFixed(1)}"
    /></g>`;
  });
  return svg("Bytes served per interval, from the cache and from the upstream", [
    grid(y, [0, max / 2, max], (v) => (v === 0 ? "0" : formatBytes(v))),
    bars,
    axis(bs, now),
  ]);
}

function svg(label: string, body: Part): Html {
  return html`<svg class="chart" viewBox="0 0 ${W} ${H}" role="img" aria-label="${label}">${body}</svg>`;
}

function grid(y: (v: number) => number, values: number[], label: (v: number) => string): Html[] {
  return values.map(
    (v) =>
      html`<line
          class="grid"
          x1="${PAD.left}"
          x2="${W - PAD.right}"
          y1="${y(v).toFixed(1)}"
          y2="${y(v).toFixed(1)}"
        /><text class="label" x="${PAD.left - 4}" y="${(y(v) + 3).toFixed(1)}" text-anchor="end"
          >${label(v)}</text
        >`,
  );
}

/** Relative times under the plot: timezone-free, and right wherever the browser is. */
function axis(bs: Bucket[], now: number): Html {
  const base = H - 6;
  return html`<text class="label" x="${PAD.left}" y="${base}">${ago(now - bs[0]!.from)}</text
    ><text class="label" x="${W - PAD.right}" y="${base}" text-anchor="end"
      >${ago(now - bs[bs.length - 1]!.to)}</text
    >`;
}

function empty(): Html {
  return html`<p class="muted">No samples yet: the first is taken at start, then one a minute.</p>`;
}

function span(b: Bucket, now: number): string {
  return `${ago(now - b.from)} to ${ago(now - b.to)}`;
}

/** "now", "40 s ago", "12 min ago", "3 h ago", "2 d ago". */
export function ago(ms: number): string {
  const s = Math.round(ms / 1000);
  if (s < 5) return "now";
  if (s < 90) return `${s} s ago`;
  const m = Math.round(s / 60);
  if (m < 90) return `${m} min ago`;
  const h = Math.round(m / 60);
  return h < 48 ? `${h} h ago` : `${Math.round(h / 24)} d ago`;
}
