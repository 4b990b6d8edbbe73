// `--profile`: where regmirror spends its time on the hot paths. A first regmirror fills a cache
// dir; then, for each warm workload, a fresh regmirror under `node --cpu-prof` serves it from that
// cache (so the profile holds the workload, not the fills); the cold workload gets an empty cache.
// Each is stopped with SIGTERM (node writes the profile on exit) and summarised by self time per
// function. The profiler samples the main JavaScript thread by wall clock: time in a system call,
// and time waiting for a core while in one, counts as that call's; other threads do not show.
//
// The profiled regmirror runs as one process (REGMIRROR_WORKERS=1): under workers=auto the
// primary and every worker would write their profile to the same --cpu-prof-name, and the file
// kept would be whichever exited last. One process shows the same request path.
import { readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { Upstream } from "../test/fixtures/upstream.ts";
import { makeTempDir } from "./cleanup.ts";
import { MANIFEST_ACCEPT, type Content } from "./content.ts";
import { runLoadgen, OUT_DIR } from "./loadgen.ts";
import { startTarget, type LaunchOptions } from "./targets.ts";
import { warmUp } from "./figures-warm.ts";
import { runWrk } from "./wrk.ts";

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
}
interface ProfileNode {
  id: number;
  callFrame: CallFrame;
  children?: number[];
}
interface CpuProfile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

export interface SelfTime {
  fn: string;
  where: string;
  ms: number;
  percent: number;
  /** The callers (nearest first) through which most of this self time was reached. */
  via: string;
}

function where(cf: CallFrame): string {
  if (!cf.url) return "(native)";
  const u = cf.url.replace(/^file:\/\//, "");
  const short = u.includes("/node_modules/")
    ? u.slice(u.lastIndexOf("/node_modules/") + 14)
    : u.includes("/src/") || u.includes("/dist/")
      ? u.slice(u.search(/\/(src|dist)\//) + 1)
      : u;
  return `${short}:${cf.lineNumber + 1}`;
}

const VIA_DEPTH = 3;

/** Self time per function (summed over call sites), largest first; idle time is left out. */
export function selfTimes(profile: CpuProfile, top = 15): { total: number; idle: number; rows: SelfTime[] } {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const callers = (id: number): string => {
    const out: string[] = [];
    for (let p = parent.get(id); p !== undefined && out.length < VIA_DEPTH; p = parent.get(p)) {
      const cf = byId.get(p)?.callFrame;
      if (!cf || cf.functionName === "(root)") break;
      out.push(`${cf.functionName || "(anonymous)"} ${where(cf)}`);
    }
    return out.join(" ← ");
  };
  const acc = new Map<string, SelfTime & { chains: Map<string, number> }>();
  let total = 0;
  let idle = 0;
  profile.samples.forEach((id, i) => {
    const ms = (profile.timeDeltas[i] ?? 0) / 1000;
    const cf = byId.get(id)?.callFrame;
    if (!cf) return;
    if (cf.functionName === "(idle)") {
      idle += ms;
      return;
    }
    total += ms;
    const key = `${cf.functionName}@${where(cf)}`;
    let row = acc.get(key);
    if (!row) {
      row = {
        fn: cf.functionName || "(anonymous)",
        where: where(cf),
        ms: 0,
        percent: 0,
        via: "",
        chains: new Map(),
      };
      acc.set(key, row);
    }
    row.ms += ms;
    const chain = callers(id);
    row.chains.set(chain, (row.chains.get(chain) ?? 0) + ms);
  });
  const rows = [...acc.values()]
    .sort((a, b) => b.ms - a.ms)
    .slice(0, top)
    .map(({ chains, ...r }) => ({
      ...r,
      percent: (100 * r.ms) / total,
      via: [...chains].sort((a, b) => b[1] - a[1])[0]?.[0] ?? "",
    }));
  return { total, idle, rows };
}

function render(name: string, s: ReturnType<typeof selfTimes>): string {
  const lines = [
    `### ${name}: ${Math.round(s.total)} ms busy, ${Math.round(s.idle)} ms idle (main thread)`,
    "| self ms | % of busy | function | where | mostly via |",
    "|---:|---:|---|---|---|",
    ...s.rows.map(
      (r) => `| ${Math.round(r.ms)} | ${r.percent.toFixed(1)} | \`${r.fn}\` | ${r.where} | ${r.via} |`,
    ),
  ];
  return lines.join("\n");
}

export async function profileRegmirror(
  upstream: Upstream,
  content: Content,
  launch: LaunchOptions,
  durationS: number,
): Promise<string> {
  const cacheDir = await makeTempDir("profile-cache");
  const filler = await startTarget({ name: "regmirror", kind: "regmirror" }, { ...launch, cacheDir });
  await warmUp(upstream, filler, content);
  await filler.stop();

  const profDir = join(OUT_DIR, "profiles");
  // [name, workload, cache dir: the filled one, or undefined for a fresh empty one]
  const workloads: Array<[string, (port: number, url: string) => Promise<unknown>, string | undefined]> = [
    // The fill path: every blob of big:1 through an empty cache, as in the cold-big figure.
    [
      "cold-big",
      (port) =>
        runLoadgen({ port, conns: 4, count: content.big.blobPaths.length, paths: content.big.blobPaths }),
      undefined,
    ],
    [
      // Blob workloads run by count, not to a deadline: every response completes, so the profile
      // holds serving only, not clients hanging up mid-transfer (the figures cover that).
      "warm-64MiB-x8",
      (port) =>
        runLoadgen({ port, conns: 8, count: 40 * durationS, paths: content.big.layerPaths, timeoutS: 60 }),
      cacheDir,
    ],
    [
      "warm-64KiB-x8",
      (port) =>
        runLoadgen({
          port,
          conns: 8,
          count: 15_000 * durationS,
          paths: content.small.layerPaths,
          timeoutS: 60,
        }),
      cacheDir,
    ],
    [
      "manifest-tag",
      (_port, url) =>
        runWrk({
          url: url + content.big.tagPath,
          conns: 64,
          threads: 2,
          durationS,
          headers: [MANIFEST_ACCEPT],
        }),
      cacheDir,
    ],
  ];
  const out: string[] = [];
  for (const [name, work, dir] of workloads) {
    const file = `${name}.cpuprofile`;
    const opts: LaunchOptions = {
      ...launch,
      nodeFlags: ["--cpu-prof", "--cpu-prof-dir", profDir, "--cpu-prof-name", file],
    };
    if (dir !== undefined) opts.cacheDir = dir;
    const t = await startTarget(
      { name: "regmirror", kind: "regmirror", env: { REGMIRROR_WORKERS: "1" } },
      opts,
    );
    try {
      await work(t.port, t.url);
    } catch (err) {
      await new Promise((r) => setTimeout(r, 200));
      out.push(`### ${name}: no profile — ${t.died() ?? (err as Error).message}`);
      await t.stop();
      continue;
    }
    await t.stop(); // SIGTERM: regmirror closes and exits, and node writes the profile
    if (!readdirSync(profDir).includes(file)) throw new Error(`no profile written for ${name}`);
    const profile = JSON.parse(readFileSync(join(profDir, file), "utf8")) as CpuProfile;
    out.push(render(name, selfTimes(profile)));
  }
  const text = out.join("\n\n");
  writeFileSync(join(profDir, "summary.md"), text + "\n");
  return text;
}
