// The side-by-side table (Markdown, so that it can go into docs/performance.md as printed) and the
// ratios of regmirror (workers=auto) and regmirror(workers=1) to each peer, and of the one to the
// other, computed within this run only.
import { Results, WARM_FIGURES } from "./results.ts";
import { S3_REDIRECT, S3_STREAMED } from "./s3.ts";

interface Row {
  label: string;
  figures: string[];
  metric: string;
  /** median over repetitions of the first figure, or max over all samples of all figures */
  agg: "median" | "max";
  digits: number;
  /** A count, not a cost: no ratio columns (regmirror's 3 processes are not "0.60× nginx's"). */
  noRatio?: boolean;
  /** Shown only when an S3 column ran (--storage s3): latency and storage rows. */
  s3Only?: boolean;
}

const row = (label: string, figure: string, metric: string, digits: number): Row => ({
  label,
  figures: [figure],
  metric,
  agg: "median",
  digits,
});

export const ROWS: Row[] = [
  row("cold pull big:1, wall s", "cold-big", "wall_s", 2),
  row("cold pull big:1, CPU s (process tree)", "cold-big", "cpu_s", 2),
  { ...row("cold pull big:1, S3 server (RGW+OSD) CPU s", "cold-big", "storage_cpu_s", 2), s3Only: true },
  row("cold pull big:1, TTFB p50 ms", "cold-big", "ttfb_p50_ms", 1),
  row("cold pull big:1, upstream blob GETs (of 5)", "cold-big", "upstream_blob_gets", 0),
  row("cold pull big:1, upstream blob HEADs", "cold-big", "upstream_blob_heads", 0),
  row("cold pull big:1, upstream bytes per client byte", "cold-big", "upstream_bytes_per_client_byte", 2),
  row("cold pull small:1, wall s", "cold-small", "wall_s", 2),
  row("cold pull small:1, CPU s (process tree)", "cold-small", "cpu_s", 2),
  row("cold pull small:1, TTFB p50 ms", "cold-small", "ttfb_p50_ms", 1),
  row("cold pull small:1, upstream blob GETs (of 51)", "cold-small", "upstream_blob_gets", 0),
  row("cold pull small:1, upstream requests (all)", "cold-small", "upstream_requests", 0),
  row("32 × same cold 64 MiB blob: upstream GETs", "coalesce", "upstream_blob_gets", 0),
  row("32 × same cold blob: TTFB p50 ms", "coalesce", "ttfb_p50_ms", 0),
  row("32 × same cold blob: TTFB max ms", "coalesce", "ttfb_max_ms", 0),
  row("32 × same cold blob: TTFB max − upstream's TTFB, ms", "coalesce", "ttfb_max_over_upstream_ms", 0),
  row("32 × same cold blob: done p50 ms", "coalesce", "total_p50_ms", 0),
  row("32 × same cold blob: done max ms", "coalesce", "total_max_ms", 0),
  row("… the same as a fresh target's first requests: TTFB max ms", "coalesce-fresh", "ttfb_max_ms", 0),
  row(
    "… the same as a fresh target's first requests: TTFB max − upstream's, ms",
    "coalesce-fresh",
    "ttfb_max_over_upstream_ms",
    0,
  ),
  row("warm 64 MiB blobs ×1, MB/s", "warm-64MiB-x1", "mb_per_s", 0),
  row("warm 64 MiB blobs ×8, MB/s", "warm-64MiB-x8", "mb_per_s", 0),
  row("warm 64 MiB blobs ×64, MB/s", "warm-64MiB-x64", "mb_per_s", 0),
  row("warm 64 KiB blobs ×1, MB/s", "warm-64KiB-x1", "mb_per_s", 0),
  row("warm 64 KiB blobs ×8, MB/s", "warm-64KiB-x8", "mb_per_s", 0),
  row("warm 64 KiB blobs ×64, MB/s", "warm-64KiB-x64", "mb_per_s", 0),
  row("warm 64 KiB blobs ×64, TTFB p99 ms", "warm-64KiB-x64", "ttfb_p99_ms", 1),
  ...["64MiB", "64KiB"].flatMap((size) =>
    [1, 8, 64].flatMap((n) =>
      (["p50", "p99"] as const)
        .filter((p) => !(size === "64KiB" && n === 64 && p === "p99")) // a row of its own above
        .map((p) => ({
          ...row(
            `warm ${size === "64MiB" ? "64 MiB" : "64 KiB"} blobs ×${n}, TTFB ${p} ms`,
            `warm-${size}-x${n}`,
            `ttfb_${p}_ms`,
            1,
          ),
          s3Only: true,
        })),
    ),
  ),
  ...["64MiB", "64KiB"].flatMap((size) => {
    const label = size === "64MiB" ? "64 MiB" : "64 KiB";
    const f = `warm-${size}-x8`;
    return [
      { ...row(`mirror CPU cores (process tree), ${label} ×8`, f, "cpu_cores", 2), s3Only: true },
      { ...row(`S3 server (RGW+OSD) CPU cores, ${label} ×8`, f, "storage_cpu_cores", 2), s3Only: true },
      { ...row(`S3 server (RGW+OSD) CPU s per GB, ${label} ×8`, f, "storage_cpu_s_per_gb", 2), s3Only: true },
      { ...row(`client CPU cores, ${label} ×8`, f, "client_cpu_cores", 2), s3Only: true },
      {
        ...row(`share of answers that were a 307, ${label} ×8`, f, "redirected_share", 2),
        s3Only: true,
        noRatio: true,
      },
    ];
  }),
  row("manifest by tag, 64 conns, req/s", "manifest-tag", "req_per_s", 0),
  row("manifest by tag, p50 ms", "manifest-tag", "p50_ms", 2),
  row("manifest by tag, p99 ms", "manifest-tag", "p99_ms", 2),
  row("manifest by digest, 64 conns, req/s", "manifest-digest", "req_per_s", 0),
  row("manifest by digest, p50 ms", "manifest-digest", "p50_ms", 2),
  row("manifest by digest, p99 ms", "manifest-digest", "p99_ms", 2),
  row("CPU s per GB, 64 MiB ×8", "warm-64MiB-x8", "cpu_s_per_gb", 2),
  row("CPU s per GB, 64 KiB ×8", "warm-64KiB-x8", "cpu_s_per_gb", 2),
  row("CPU µs per manifest request (by tag)", "manifest-tag", "cpu_us_per_req", 0),
  {
    label: "peak RSS MB, 64 MiB ×64",
    figures: ["warm-64MiB-x64"],
    metric: "rss_peak_mb",
    agg: "max",
    digits: 0,
  },
  {
    label: "peak RSS MB, all warm figures",
    figures: WARM_FIGURES,
    metric: "rss_peak_mb",
    agg: "max",
    digits: 0,
  },
  {
    label: "peak MB, all warm figures, shared file pages counted once",
    figures: WARM_FIGURES,
    metric: "rss_shared_once_peak_mb",
    agg: "max",
    digits: 0,
  },
  {
    label: "processes in the tree, warm figures (max)",
    figures: WARM_FIGURES,
    metric: "processes",
    agg: "max",
    digits: 0,
    noRatio: true,
  },
  {
    label: "upstream requests during warm figures (max)",
    figures: WARM_FIGURES,
    metric: "upstream_requests",
    agg: "max",
    digits: 0,
  },
  row("crashes during warm figures (restarted)", "crashes", "count", 0),
  row("start-up ms, empty cache", "startup-empty", "start_ms", 0),
  row("start-up ms, 100,000 cached blobs", "startup-100k", "start_ms", 0),
];

/** The single-process column next to "regmirror" (workers=auto). */
export const SINGLE = "regmirror(workers=1)";

/** Column order: the direct upstream (cold floor) first, regmirror, then the peers. */
const ORDER = [
  "upstream (direct)",
  "regmirror",
  S3_STREAMED,
  S3_REDIRECT,
  SINGLE,
  "regmirror(info)",
  "distribution",
  "nginx",
];
const PEERS = ["distribution", "nginx"];

export function rowValue(res: Results, r: Row, target: string): number | undefined {
  return r.agg === "median"
    ? res.median(r.figures[0]!, target, r.metric)
    : res.max(r.figures, target, r.metric);
}

function fmt(v: number | undefined, digits: number): string {
  if (v === undefined || !Number.isFinite(v)) return "–";
  return v.toLocaleString("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

function ratio(a: number | undefined, b: number | undefined): string {
  if (a === undefined || b === undefined || b === 0) return "–";
  return `${(a / b).toFixed(2)}×`;
}

/**
 * The Markdown table: one row per measured quantity, one column per target, then the ratios:
 * regmirror (workers=auto) and regmirror(workers=1) to each peer, workers=auto to workers=1 (the
 * gain from workers), the info log to the warn log, and each S3 column to the filesystem one.
 */
export function table(res: Results): string {
  const present = res.targets();
  const cols = ORDER.filter((t) => present.includes(t));
  const peers = PEERS.filter((p) => present.includes(p));
  const single = present.includes(SINGLE);
  const head = [
    "figure",
    ...cols,
    ...peers.map((p) => `regmirror / ${p}`),
    ...(single ? [...peers.map((p) => `workers=1 / ${p}`), "auto / workers=1"] : []),
  ];
  if (present.includes("regmirror(info)")) head.push("info / warn log");
  const s3 = [S3_STREAMED, S3_REDIRECT].filter((c) => present.includes(c));
  head.push(...s3.map((c) => `${c.slice("regmirror(".length, -1)} / fs`));
  const lines = [`| ${head.join(" | ")} |`, `|${head.map((_, i) => (i === 0 ? "---" : "---:")).join("|")}|`];
  for (const r of ROWS) {
    if (r.s3Only && s3.length === 0) continue;
    const vals = cols.map((t) => rowValue(res, r, t));
    if (vals.every((v) => v === undefined)) continue;
    const mine = rowValue(res, r, "regmirror");
    const one = rowValue(res, r, SINGLE);
    const rt = (a: number | undefined, b: number | undefined) => (r.noRatio ? "–" : ratio(a, b));
    const cells = [
      r.label,
      ...vals.map((v) => fmt(v, r.digits)),
      ...peers.map((p) => rt(mine, rowValue(res, r, p))),
    ];
    if (single) cells.push(...peers.map((p) => rt(one, rowValue(res, r, p))), rt(mine, one));
    if (present.includes("regmirror(info)")) cells.push(rt(rowValue(res, r, "regmirror(info)"), mine));
    cells.push(...s3.map((c) => rt(rowValue(res, r, c), mine)));
    lines.push(`| ${cells.join(" | ")} |`);
  }
  return lines.join("\n");
}
