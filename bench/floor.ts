// `npx tsx bench/floor.ts [--reps N]`: how low a Node.js process can go, next to nginx and
// regmirror, on the figures of issue 10 that regmirror misses.
//
// - Cold pull of library/big:1 (4 × 64 MiB and a config, 4 parallel GETs), as in run.ts, through
//   the floor servers of bench/floor-server.ts — a socket-to-socket pipe, an undici-to-http proxy,
//   and that proxy hashing and writing every byte — then through nginx and regmirror (workers=1
//   and auto), each started afresh for every pull. The issue asks for wall ≤ 1.0× and CPU ≤ 1.5×
//   nginx's; the pipe shows whether any JavaScript server can get there.
// - Memory: the resident set of an idle `node` that has loaded nothing, and of three of them (a
//   primary and two workers), against the issue's 200 MB for the whole tree.
//
// Prints a Markdown table (medians) and one JSON line with every sample.
import { spawn, type ChildProcess } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { freePort } from "../test/fixtures/ports.ts";
import { installCleanup, stopGroup, trackGroup } from "./cleanup.ts";
import { startLoadedUpstream } from "./content.ts";
import { coldPull, type Endpoint, type Values } from "./figures-cold.ts";
import { buildLoadgen } from "./loadgen.ts";
import { REPO_ROOT, regmirrorCommand, startTarget, type TargetSpec } from "./targets.ts";

const { values: args } = parseArgs({ options: { reps: { type: "string", default: "3" } } });
const reps = Number(args.reps);
installCleanup();
buildLoadgen();

async function floorServer(
  mode: string,
  upstreamUrl: string,
): Promise<{ child: ChildProcess; port: number }> {
  const port = await freePort();
  const script = join(REPO_ROOT, "bench/floor-server.ts");
  const child = spawn(process.execPath, ["--import", "tsx", script, mode, upstreamUrl, String(port)], {
    cwd: REPO_ROOT,
    stdio: ["ignore", "pipe", "inherit"],
    detached: true,
  });
  trackGroup(child);
  await new Promise<void>((resolve, reject) => {
    child.stdout!.on("data", (d: Buffer) => d.toString().includes("ready") && resolve());
    child.once("exit", (code) => reject(new Error(`floor server ${mode} exited (${code})`)));
  });
  return { child, port };
}

/** Resident and file-backed (shared) kB of an idle node process that has loaded nothing. */
async function idleNode(): Promise<{ rssKb: number; sharedKb: number }> {
  const child = spawn(process.execPath, ["-e", "setTimeout(() => {}, 60_000)"], { stdio: "ignore" });
  await new Promise((r) => setTimeout(r, 500));
  const rollup = readFileSync(`/proc/${child.pid}/smaps_rollup`, "utf8");
  const kb = (name: string) => Number(new RegExp(`^${name}:\\s+(\\d+)`, "m").exec(rollup)?.[1] ?? 0);
  child.kill("SIGKILL");
  return { rssKb: kb("Rss"), sharedKb: kb("Shared_Clean") };
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? NaN;

const { upstream, content } = await startLoadedUpstream();
const regmirror = regmirrorCommand();
const launch = { upstreamUrl: upstream.url, regmirror };
const samples = new Map<string, Values[]>();
const record = (name: string, v: Values) => samples.set(name, [...(samples.get(name) ?? []), v]);
const direct: Endpoint = { port: Number(new URL(upstream.url).port) };
const specs: TargetSpec[] = [
  { name: "nginx", kind: "nginx" },
  { name: "regmirror(workers=1)", kind: "regmirror", env: { REGMIRROR_WORKERS: "1" } },
  { name: "regmirror", kind: "regmirror" },
];
try {
  for (let rep = 0; rep < reps; rep++) {
    record("upstream (direct)", await coldPull(upstream, direct, content.big, 4));
    for (const mode of ["pipe", "proxy", "store"]) {
      const { child, port } = await floorServer(mode, upstream.url);
      try {
        record(`node ${mode}`, await coldPull(upstream, { port, pid: child.pid! }, content.big, 4));
      } finally {
        await stopGroup(child, 2000);
      }
    }
    for (const spec of specs) {
      const t = await startTarget(spec, launch);
      try {
        record(spec.name, await coldPull(upstream, t, content.big, 4));
      } finally {
        await t.stop();
      }
    }
    process.stderr.write(`bench/floor: rep ${rep + 1}/${reps} done\n`);
  }
  const nginx = samples.get("nginx") ?? [];
  const nginxWall = median(nginx.map((v) => v.wall_s!));
  const nginxCpu = median(nginx.map((v) => v.cpu_s!));
  const lines = [
    `Cold pull of library/big:1 (4 × 64 MiB + config, 4 parallel GETs), medians of ${reps}:`,
    "",
    "| server | wall s | CPU s | wall × nginx | CPU × nginx |",
    "|---|---:|---:|---:|---:|",
  ];
  for (const [name, vs] of samples) {
    const wall = median(vs.map((v) => v.wall_s!));
    const cpus = vs.map((v) => v.cpu_s).filter((c): c is number => c !== undefined);
    const cpu = cpus.length ? median(cpus) : undefined;
    const errors = vs.reduce((s, v) => s + (v.errors ?? 0), 0);
    lines.push(
      `| ${name}${errors ? ` (${errors} errors)` : ""} | ${wall.toFixed(2)} | ${cpu?.toFixed(2) ?? "–"} | ` +
        `${(wall / nginxWall).toFixed(2)}× | ${cpu === undefined ? "–" : `${(cpu / nginxCpu).toFixed(2)}×`} |`,
    );
  }
  const idle = await idleNode();
  lines.push(
    "",
    `An idle \`node\` that has loaded nothing: ${Math.round(idle.rssKb / 1024)} MB resident, ` +
      `${Math.round(idle.sharedKb / 1024)} MB of it the node binary and libraries (shared, but counted in ` +
      `each process's RSS). Three of them (a primary and two workers): ${Math.round((3 * idle.rssKb) / 1024)} MB ` +
      `summed, ${Math.round((3 * idle.rssKb - 2 * idle.sharedKb) / 1024)} MB with shared pages counted once.`,
  );
  process.stdout.write(lines.join("\n") + "\n");
  process.stdout.write(JSON.stringify({ samples: Object.fromEntries(samples), idleNode: idle }) + "\n");
} finally {
  await upstream.stop();
}
process.exit(0);
