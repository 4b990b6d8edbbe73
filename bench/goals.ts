// The targets of issue 3, checked against one run. Each is a ratio to a peer measured in the same
// run, or an absolute bound the issue sets; a goal whose peer was not run is "n/a".
import { Results } from "./results.ts";

export type Verdict = "met" | "missed" | "n/a";

export interface GoalResult {
  goal: string;
  verdict: Verdict;
  detail: string;
}

const f1 = (x: number) => (Math.round(x * 100) / 100).toString();

function all(checks: Array<[boolean | undefined, string]>): { verdict: Verdict; detail: string } {
  if (checks.some(([ok]) => ok === undefined))
    return { verdict: "n/a", detail: checks.map((c) => c[1]).join("; ") };
  return {
    verdict: checks.every(([ok]) => ok) ? "met" : "missed",
    detail: checks.map((c) => c[1]).join("; "),
  };
}

export function evaluateGoals(res: Results): GoalResult[] {
  const m = (fig: string, metric: string, target = "regmirror") => res.median(fig, target, metric);
  const out: GoalResult[] = [];
  const goal = (text: string, checks: Array<[boolean | undefined, string]>) =>
    out.push({ goal: text, ...all(checks) });

  const cmp = (
    label: string,
    mine: number | undefined,
    peer: number | undefined,
    pass: (a: number, b: number) => boolean,
  ): [boolean | undefined, string] =>
    mine === undefined || peer === undefined
      ? [undefined, `${label}: not measured`]
      : [pass(mine, peer), `${label}: ${f1(mine)} vs ${f1(peer)} (${f1(mine / peer)}×)`];
  const abs = (
    label: string,
    v: number | undefined,
    pass: (a: number) => boolean,
    unit = "",
  ): [boolean | undefined, string] =>
    v === undefined ? [undefined, `${label}: not measured`] : [pass(v), `${label}: ${f1(v)}${unit}`];

  goal(
    "Cold pull: at most nginx's time, exactly one upstream GET per blob, first byte as soon as the upstream's",
    [
      cmp("big:1 wall s", m("cold-big", "wall_s"), m("cold-big", "wall_s", "nginx"), (a, b) => a <= b),
      cmp("small:1 wall s", m("cold-small", "wall_s"), m("cold-small", "wall_s", "nginx"), (a, b) => a <= b),
      abs("big:1 upstream blob GETs", m("cold-big", "upstream_blob_gets"), (v) => v === 5),
      abs("small:1 upstream blob GETs", m("cold-small", "upstream_blob_gets"), (v) => v === 51),
      cmp(
        "big:1 TTFB p50 ms vs direct",
        m("cold-big", "ttfb_p50_ms"),
        m("cold-big", "ttfb_p50_ms", "upstream (direct)"),
        (a, b) => a - b <= 50,
      ),
    ],
  );
  goal(
    "Coalescing: 32 clients → exactly 1 upstream GET, every client's TTFB within 50 ms of the upstream's",
    [
      abs("upstream GETs", m("coalesce", "upstream_blob_gets"), (v) => v === 1),
      abs("TTFB max − upstream TTFB", m("coalesce", "ttfb_max_over_upstream_ms"), (v) => v <= 50, " ms"),
    ],
  );
  goal(
    "Warm 64 MiB blobs: ≥ 0.8× nginx at 1, 8, 64 streams",
    [1, 8, 64].map((n) =>
      cmp(
        `×${n} MB/s`,
        m(`warm-64MiB-x${n}`, "mb_per_s"),
        m(`warm-64MiB-x${n}`, "mb_per_s", "nginx"),
        (a, b) => a >= 0.8 * b,
      ),
    ),
  );
  goal("Warm 64 KiB blobs: ≥ 0.5× nginx and ≥ 20× distribution", [
    ...[1, 8, 64].map((n) =>
      cmp(
        `×${n} vs nginx`,
        m(`warm-64KiB-x${n}`, "mb_per_s"),
        m(`warm-64KiB-x${n}`, "mb_per_s", "nginx"),
        (a, b) => a >= 0.5 * b,
      ),
    ),
    ...[1, 8, 64].map((n) =>
      cmp(
        `×${n} vs distribution`,
        m(`warm-64KiB-x${n}`, "mb_per_s"),
        m(`warm-64KiB-x${n}`, "mb_per_s", "distribution"),
        (a, b) => a >= 20 * b,
      ),
    ),
  ]);
  goal("Warm manifests: ≥ 15,000 req/s at 64 connections, p99 < 10 ms", [
    abs("by tag req/s", m("manifest-tag", "req_per_s"), (v) => v >= 15_000),
    abs("by tag p99", m("manifest-tag", "p99_ms"), (v) => v < 10, " ms"),
    abs("by digest req/s", m("manifest-digest", "req_per_s"), (v) => v >= 15_000),
    abs("by digest p99", m("manifest-digest", "p99_ms"), (v) => v < 10, " ms"),
  ]);
  goal("CPU per GB on warm 64 MiB blobs (8 streams): ≤ 1.5× nginx's", [
    cmp(
      "CPU s/GB",
      m("warm-64MiB-x8", "cpu_s_per_gb"),
      m("warm-64MiB-x8", "cpu_s_per_gb", "nginx"),
      (a, b) => a <= 1.5 * b,
    ),
  ]);
  goal("Peak RSS < 150 MB with 64 concurrent 64 MiB streams", [
    abs("peak RSS", res.max(["warm-64MiB-x64"], "regmirror", "rss_peak_mb"), (v) => v < 150, " MB"),
  ]);
  goal("Start-up with 100,000 cached blobs < 2 s", [
    abs("start-up", m("startup-100k", "start_ms"), (v) => v < 2000, " ms"),
  ]);
  return out;
}

export function goalsText(goals: GoalResult[]): string {
  return goals.map((g) => `- **${g.verdict.toUpperCase()}** ${g.goal} — ${g.detail}`).join("\n");
}
