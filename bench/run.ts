// `npm run bench [-- --vs distribution --vs nginx] [--quick] [--reps N] [--only cold,warm,...] [--profile]
//   [--env NAME=VALUE]... [--no-info] [--no-workers1] [--startup-blobs N] [--storage s3] [--replicas]`
//
// Measures regmirror against a real upstream (Debian's docker-registry on loopback) the way its
// users feel it, side by side with the peers, and prints a Markdown table, the goals of issues 3
// and 10 with met/missed, and one JSON line per figure. See docs/performance.md.
//
// "regmirror" runs as users run it, with `workers` at its default (auto: one worker per CPU);
// "regmirror(workers=1)" is the single process next to it, so the gain from workers shows.
// `--storage s3` adds "regmirror(s3)" and "regmirror(s3,redirect)" to the cold and warm figures:
// the same mirror on the S3 driver against a local Ceph RGW (bench/s3.ts).
// `--replicas` runs the replica figures of issue 12 (bench/replicas.ts): 3 and 1 replicas sharing
// a Redis and a bucket, behind nginx; alone unless `--only` names other phases too.
import { spawnSync } from "node:child_process";
import { existsSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { cpus, release, tmpdir } from "node:os";
import { parseArgs } from "node:util";
import { installCleanup } from "./cleanup.ts";
import { startLoadedUpstream } from "./content.ts";
import { evaluateGoals, goalsText } from "./goals.ts";
import { checkLoadgen, haveCurl } from "./loadgen-check.ts";
import { buildLoadgen, OUT_DIR } from "./loadgen.ts";
import { coldPhase, NoiseBudget, startupPhase, warmPhase, type PhaseContext } from "./phases.ts";
import { profileRegmirror } from "./profile.ts";
import { replicasPhase } from "./replicas.ts";
import { SINGLE, table } from "./report.ts";
import { Results, WARM_FIGURES } from "./results.ts";
import { S3_REDIRECT, S3_STREAMED, startBenchS3, type BenchS3 } from "./s3.ts";
import {
  REPO_ROOT,
  regmirrorCommand,
  startTarget,
  type RegmirrorCommand,
  type Target,
  type TargetSpec,
} from "./targets.ts";
import { NGINX_BIN, REGISTRY_BIN } from "./peers.ts";

const PHASES = ["cold", "warm", "startup", "check"] as const;
type Phase = (typeof PHASES)[number];

const { values: args } = parseArgs({
  options: {
    vs: { type: "string", multiple: true, default: [] },
    quick: { type: "boolean", default: false },
    reps: { type: "string" },
    only: { type: "string" },
    "no-info": { type: "boolean", default: false },
    "no-workers1": { type: "boolean", default: false },
    profile: { type: "boolean", default: false },
    "startup-blobs": { type: "string", default: "100000" },
    env: { type: "string", multiple: true, default: [] },
    storage: { type: "string", default: "filesystem" },
    replicas: { type: "boolean", default: false },
  },
  strict: true,
});

const peers = args.vs
  .flatMap((v) => v.split(","))
  .map((p) => {
    if (p !== "distribution" && p !== "nginx")
      throw new Error(`--vs ${p}: known peers are distribution, nginx`);
    return p;
  });
const phases = new Set<Phase>(
  args.only === undefined
    ? PHASES
    : args.only.split(",").map((p) => {
        if (!(PHASES as readonly string[]).includes(p))
          throw new Error(`--only ${p}: phases are ${PHASES.join(", ")}`);
        return p as Phase;
      }),
);
// --profile or --replicas alone runs only the profile or the replica figures
if ((args.profile || args.replicas) && args.only === undefined) phases.clear();
const storages = new Set(
  args.storage.split(",").map((s) => {
    if (s !== "filesystem" && s !== "s3") throw new Error(`--storage ${s}: storages are filesystem, s3`);
    return s;
  }),
);
const withS3 = storages.has("s3");
const quick = args.quick;
const reps = Number(args.reps ?? (quick ? 1 : 4));
const withInfo = !args["no-info"];
const withSingle = !args["no-workers1"];
const regmirrorEnv = Object.fromEntries(
  args.env.map((kv) => {
    const i = kv.indexOf("=");
    if (i < 1) throw new Error(`--env ${kv}: expected NAME=VALUE`);
    return [kv.slice(0, i), kv.slice(i + 1)];
  }),
);

// Every loop is bounded on its own; this is the backstop for the run as a whole.
const LIMIT_MIN = quick ? 10 : 35;
setTimeout(() => {
  process.stderr.write(`bench: still running after ${LIMIT_MIN} minutes; giving up\n`);
  process.exit(1);
}, LIMIT_MIN * 60_000).unref();

function ensureTools(): void {
  const missing =
    [REGISTRY_BIN, NGINX_BIN].some((b) => !existsSync(b)) ||
    spawnSync("wrk", ["-v"]).error ||
    spawnSync("cc", ["--version"]).error;
  if (!missing) return;
  const r = spawnSync("bash", [join(REPO_ROOT, "bench/setup.sh")], { stdio: "inherit" });
  if (r.status !== 0) throw new Error("bench/setup.sh could not install what the benchmark needs");
}

/** One line on where the numbers come from: they only compare within a run on one machine. */
function machine(): string {
  const cpu = cpus();
  const version = (cmd: string, args: string[], re: RegExp) =>
    re.exec(spawnSync(cmd, args, { encoding: "utf8" }).output.join(" "))?.[1] ?? "?";
  return (
    `${cpu.length} × ${cpu[0]?.model.trim() ?? "?"}, Linux ${release()}, Node ${process.versions.node}, ` +
    `nginx ${version(NGINX_BIN, ["-v"], /nginx\/(\S+)/)}, ` +
    `distribution ${version(REGISTRY_BIN, ["--version"], /distribution (\S+)/)}`
  );
}

/** Which regmirror column ran how, and how many processes its tree had in the warm figures. */
function workersNote(results: Results): string {
  const tree = (target: string) => {
    const n = results.max(WARM_FIGURES, target, "processes");
    return n === undefined
      ? ""
      : ` (${n === 1 ? "1 process" : `${n} processes: the primary and ${n - 1} workers`} in the warm figures)`;
  };
  const workers = regmirrorEnv.REGMIRROR_WORKERS;
  const lines = [
    `"regmirror" ran with workers=${workers ?? "auto"}${workers === undefined ? ` (the default; ${cpus().length} CPUs here)` : " (--env)"}${tree("regmirror")}` +
      (results.targets().includes("regmirror(info)") ? `, as did "regmirror(info)"` : "") +
      ".",
  ];
  if (results.targets().includes(SINGLE))
    lines.push(`"${SINGLE}" ran with REGMIRROR_WORKERS=1${tree(SINGLE)}.`);
  return lines.join(" ");
}

/** What the S3 columns are, which client measured them, and what the S3 server was. */
function s3Note(results: Results, s3: BenchS3): string {
  const cores = (target: string) => {
    const v = results.median("warm-64MiB-x8", target, "cpu_cores");
    return v === undefined ? "" : ` (${v.toFixed(2)} cores at 64 MiB ×8)`;
  };
  return [
    `"regmirror" keeps its cache on the filesystem (the default). "${S3_STREAMED}" is the same mirror`,
    `(workers=${regmirrorEnv.REGMIRROR_WORKERS ?? "auto"}) with storage.driver s3, cached blobs streamed`,
    `from the bucket through it; "${S3_REDIRECT}" also has storage.s3.redirect true: a cached`,
    `blob's GET is a 307 to a presigned bucket URL (blobs of up to 1 MiB held in memory excepted).`,
    `The S3 server is the tests' single-node Ceph 16 RADOS Gateway (one mon, one bluestore OSD on`,
    `a sparse file under ${tmpdir()}) on loopback, on the same cores as everything else; each`,
    `start of an S3 column had a new, empty bucket (${s3.buckets()} in this run). Clients: every`,
    `column's cold figures and warm manifest figures, and the warm blob figures of all columns but`,
    `"${S3_REDIRECT}", are loadgen (C, does not follow redirects) and wrk; "${S3_REDIRECT}"'s warm`,
    `blob figures are bench/follow-client.ts (Node + undici, GET mirror → 307 → GET bucket on`,
    `keep-alive connections, same stream counts), whose TTFB includes the redirect's round trip.`,
    `"S3 server (RGW+OSD) CPU" is radosgw + ceph-osd from /proc${cores(S3_REDIRECT) ? `; the redirecting mirror itself used` + cores(S3_REDIRECT) : ""}.`,
  ].join(" ");
}

/** Is the load generator the bottleneck? Against the fastest server there is, loadgen vs curl. */
async function loadgenCheck(results: Results, targets: Target[], path: string): Promise<string[]> {
  if (!haveCurl()) return ["curl is not installed: check skipped"];
  const t = targets.find((x) => x.name === "nginx") ?? targets[0]!;
  const lines: string[] = [];
  for (const streams of [1, 8]) {
    const v = await checkLoadgen(t, path, streams, quick ? 1 : 3);
    results.add({ figure: `loadgen-check-x${streams}`, target: t.name, rep: 0, background: 0, values: v });
    lines.push(
      `${t.name}, 64 MiB × ${streams}: loadgen ${Math.round(v.loadgen_mb_per_s!)} MB/s ` +
        `(itself using ${v.loadgen_client_cores!.toFixed(2)} cores), ` +
        `${streams} × curl ${Math.round(v.curl_mb_per_s!)} MB/s`,
    );
  }
  return lines;
}

/**
 * Starts regmirror once before anything else: a working tree in the middle of someone's edit may
 * not even start, and that should cost seconds, not a run. Its /v2/ answers without the upstream.
 */
async function preflight(regmirror: RegmirrorCommand): Promise<void> {
  try {
    const t = await startTarget(
      { name: "regmirror", kind: "regmirror" },
      { upstreamUrl: "http://127.0.0.1:9", regmirror, env: regmirrorEnv, readyTimeoutMs: 20_000 },
    );
    await t.stop();
  } catch (err) {
    throw new Error(`regmirror does not start from this working tree: ${(err as Error).message}`);
  }
}

async function main(): Promise<void> {
  installCleanup();
  ensureTools();
  buildLoadgen();
  const regmirror = regmirrorCommand();
  await preflight(regmirror);
  process.stderr.write(
    `bench: regmirror runs from ${regmirror.mode === "dist" ? "dist/" : "src/ via tsx"}\n`,
  );
  const t0 = performance.now();
  const { upstream, content } = await startLoadedUpstream();
  process.stderr.write(
    `bench: upstream ${upstream.url} loaded in ${Math.round(performance.now() - t0)} ms\n`,
  );

  const results = new Results();
  const ctx: PhaseContext = {
    upstream,
    content,
    launch: { upstreamUrl: upstream.url, regmirror, env: regmirrorEnv },
    results,
    reps,
    blobSeconds: quick ? 1 : 2,
    wrkSeconds: quick ? 1 : 2,
    noiseBudget: new NoiseBudget(quick ? 15 : 90),
    failures: [],
  };
  // regmirror as shipped: workers=auto unless `--env REGMIRROR_WORKERS=...` says otherwise.
  const mirror: TargetSpec = { name: "regmirror", kind: "regmirror", logLevel: "warn" };
  // The same in one process, to show what the workers gain (and cost, in memory).
  const single: TargetSpec = {
    name: SINGLE,
    kind: "regmirror",
    logLevel: "warn",
    env: { REGMIRROR_WORKERS: "1" },
  };
  const peerSpecs: TargetSpec[] = peers.map((p) => ({ name: p, kind: p }));
  let s3: BenchS3 | undefined;
  if (withS3 && (phases.has("cold") || phases.has("warm"))) {
    const t1 = performance.now();
    s3 = await startBenchS3();
    process.stderr.write(
      `bench: S3 server (Ceph RGW) ${s3.server.endpoint} up in ${Math.round(performance.now() - t1)} ms\n`,
    );
  }
  const s3Specs = s3?.specs ?? [];
  const coldSpecs = [mirror, ...s3Specs, ...(withSingle ? [single] : []), ...peerSpecs];
  // The same mirror with per-request log lines (info), to show what logging costs.
  const info: TargetSpec = { name: "regmirror(info)", kind: "regmirror", logLevel: "info" };
  const warmSpecs = withInfo
    ? [mirror, ...s3Specs, ...(withSingle ? [single] : []), info, ...peerSpecs]
    : coldSpecs;

  // A failing phase (a target that would not start, a peer missing) is reported, and the figures
  // of the other phases still are: a long run is not thrown away for one part.
  const failures = ctx.failures;
  const attempt = async (phase: string, fn: () => Promise<void>) => {
    try {
      await fn();
    } catch (err) {
      const msg = err instanceof Error ? err.message : String(err);
      failures.push(`${phase}: ${msg}`);
      process.stderr.write(`bench: ${phase} failed: ${msg}\n`);
    }
  };
  let checks: string[] = [];
  try {
    if (phases.has("cold")) await attempt("cold", () => coldPhase(ctx, coldSpecs));
    if (phases.has("warm"))
      await attempt("warm", () =>
        warmPhase(ctx, warmSpecs, async (targets) => {
          if (phases.has("check")) checks = await loadgenCheck(results, targets, content.big.layerPaths[0]!);
        }),
      );
  } finally {
    // Stopped before start-up and the profile, which do not use it; its exit hook covers a crash.
    await s3?.stop();
  }
  if (phases.has("startup")) await attempt("startup", () => startupPhase(ctx, Number(args["startup-blobs"])));
  let replicas: { markdown: string; json: string[] } | undefined;
  if (args.replicas)
    await attempt("replicas", async () => {
      replicas = await replicasPhase(ctx);
    });
  let profile = "";
  if (args.profile)
    await attempt("profile", async () => {
      profile = await profileRegmirror(upstream, content, ctx.launch, quick ? 2 : 5);
    });

  const argv = process.argv.slice(2);
  const command = `npm run bench${argv.length ? " -- " + argv.join(" ") : ""}`;
  const report: string[] = [`\`${command}\` — ${new Date().toISOString()}`, "", `Machine: ${machine()}.`];
  report.push(
    `regmirror ran from ${regmirror.mode}; medians of ${reps} run${reps > 1 ? "s" : ""}; ` +
      `${Math.round(ctx.noiseBudget.spent)} s spent waiting out or redoing noisy measurements.`,
    "",
    workersNote(results),
  );
  if (s3) report.push("", s3Note(results, s3));
  if (results.samples.length > 0) {
    report.push("", table(results), "", goalsText(evaluateGoals(results)));
  }
  if (replicas) report.push("", "### Replicas (issue 12)", "", replicas.markdown);
  if (checks.length) report.push("", "### Load generator check", "", ...checks.map((c) => `- ${c}`));
  if (profile) report.push("", "### CPU profile of regmirror (self time)", "", profile);
  if (failures.length) report.push("", "### Failed", "", ...failures.map((f) => `- ${f}`));
  const jsonLines = [...results.figures().map((f) => results.figureJson(f)), ...(replicas?.json ?? [])];
  process.stdout.write(report.join("\n") + "\n\n" + jsonLines.join("\n") + "\n");
  writeFileSync(join(OUT_DIR, "last-run.md"), report.join("\n") + "\n");
  writeFileSync(join(OUT_DIR, "last-run.jsonl"), jsonLines.join("\n") + "\n");
  await upstream.stop();
  if (failures.length) process.exitCode = 1;
}

main().then(
  () => process.exit(process.exitCode ?? 0),
  (err: unknown) => {
    process.stderr.write(`bench: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  },
);
