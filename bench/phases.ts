// The order of measurement. The machine is shared and noisy, so every figure is repeated, the
// targets take turns within each figure (and the turn order rotates between repetitions), and
// each repetition records how busy the machine was beforehand so noisy ones can be dropped.
// Every loop has a count, and every measurement a deadline of its own (see loadgen.ts, wrk.ts).
import type { Upstream } from "../test/fixtures/upstream.ts";
import type { Content } from "./content.ts";
import { coalescing, coldPull, type Endpoint, type Values } from "./figures-cold.ts";
import { exercise, warmBlobs, warmManifests, warmUp } from "./figures-warm.ts";
import { backgroundCores } from "./proc.ts";
import { NOISY_CORES, type Results } from "./results.ts";
import { makeStartupCache, startupTime } from "./startup.ts";
import { startTarget, type LaunchOptions, type Target, type TargetSpec } from "./targets.ts";

export interface PhaseContext {
  upstream: Upstream;
  content: Content;
  launch: LaunchOptions;
  results: Results;
  reps: number;
  /** Length of one warm blob measurement, s. */
  blobSeconds: number;
  /** Length of one wrk run, whole seconds. */
  wrkSeconds: number;
  /** What went wrong without stopping the run (a target that died); goes into the report. */
  failures: string[];
  /** Seconds the whole run may spend waiting out other tenants' load and redoing noisy samples. */
  noiseBudget: NoiseBudget;
}

/** A run-wide allowance of time for noise, so that waiting and redoing never run away. */
export class NoiseBudget {
  private spentS = 0;
  constructor(readonly totalS: number) {}
  take(seconds: number): boolean {
    if (this.spentS + seconds > this.totalS) return false;
    this.spentS += seconds;
    return true;
  }
  get spent(): number {
    return this.spentS;
  }
}

/** Cores busy elsewhere now; while that is noise, waits in 1 s steps as the budget allows. */
export async function quietBackground(budget: NoiseBudget): Promise<number> {
  let background = await backgroundCores();
  while (background > NOISY_CORES && budget.take(1.5)) {
    await new Promise((r) => setTimeout(r, 1000));
    background = await backgroundCores();
  }
  return background;
}

export const DIRECT = "upstream (direct)";

function rotate<T>(xs: T[], by: number): T[] {
  const k = by % xs.length;
  return [...xs.slice(k), ...xs.slice(0, k)];
}

function progress(phase: string, rep: number, reps: number, figure: string, target: string, v: Values): void {
  const keys = [
    "wall_s",
    "mb_per_s",
    "req_per_s",
    "upstream_blob_gets",
    "ttfb_max_ms",
    "start_ms",
    "cpu_cores",
    "other_cores",
    "errors",
  ];
  const shown = keys
    .filter((k) => v[k] !== undefined)
    .map((k) => `${k}=${Math.round(v[k]! * 100) / 100}`)
    .join(" ");
  process.stderr.write(`[${phase} ${rep + 1}/${reps}] ${figure} ${target}: ${shown}\n`);
}

/** Cold pull and coalescing, each on a target started with an empty cache. */
export async function coldPhase(ctx: PhaseContext, specs: TargetSpec[]): Promise<void> {
  const { upstream, content, results } = ctx;
  const direct: Endpoint = { port: Number(new URL(upstream.url).port) };
  const names = [DIRECT, ...specs.map((s) => s.name)];
  for (let rep = 0; rep < ctx.reps; rep++) {
    const background = await quietBackground(ctx.noiseBudget);
    for (const name of rotate(names, rep)) {
      const spec = specs.find((s) => s.name === name);
      const record = (figure: string, values: Values) => {
        results.add({ figure, target: name, rep, background, values });
        progress("cold", rep, ctx.reps, figure, name, values);
      };
      // The upstream serves the floor: what the same GETs cost with no mirror in between.
      const withTarget = async (fn: (t: Endpoint) => Promise<void>) => {
        if (spec === undefined) return fn(direct);
        const t = await startTarget(spec, ctx.launch);
        try {
          await fn(t);
        } finally {
          await t.stop();
        }
      };
      await withTarget(async (t) => {
        record("cold-big", await coldPull(upstream, t, content.big, 4));
        record("cold-small", await coldPull(upstream, t, content.small, 8));
      });
      const layer = content.big.layerPaths[0]!;
      await withTarget(async (t) =>
        record("coalesce-fresh", await coalescing(upstream, t, layer, 64 * 1024 * 1024, 32)),
      );
      // The same on a target that has served one pull before (small:1, none of whose blobs is
      // this layer): a mirror that has been up, as when a fleet pulls a new image together.
      // Fresh, the figure also holds each new process's first requests (V8 compiling the
      // request path, undici its parser), which "coalesce-fresh" keeps showing.
      await withTarget(async (t) => {
        await coldPull(upstream, t, content.small, 8);
        record("coalesce", await coalescing(upstream, t, layer, 64 * 1024 * 1024, 32));
      });
    }
  }
}

type WarmFigure = [string, (t: Target) => Promise<Values>];

/** A target that crashes is started afresh at most this often in one run. */
const MAX_RESTARTS = 10;

interface Slot {
  spec: TargetSpec;
  target: Target;
  crashes: number;
}

/**
 * Starts every target once, fills its cache, then measures the warm figures in turns. A target
 * that dies is counted ("crashes" in the report, with its log kept), started again with a fresh
 * cache, and the measurement is repeated: one crash costs a figure's sample, not the run.
 */
export async function warmPhase(
  ctx: PhaseContext,
  specs: TargetSpec[],
  after?: (targets: Target[]) => Promise<void>,
): Promise<void> {
  const { upstream, content, results } = ctx;
  const slots: Slot[] = [];
  const start = async (spec: TargetSpec): Promise<Target> => {
    const t = await startTarget(spec, ctx.launch);
    try {
      await warmUp(upstream, t, content);
      await exercise(t, content);
    } catch (err) {
      await t.stop();
      throw err;
    }
    return t;
  };
  try {
    for (const spec of specs) slots.push({ spec, target: await start(spec), crashes: 0 });
    const figures: WarmFigure[] = [];
    for (const n of [1, 8, 64])
      figures.push([`warm-64MiB-x${n}`, (t) => warmBlobs(upstream, t, content.big, n, ctx.blobSeconds)]);
    for (const n of [1, 8, 64])
      figures.push([`warm-64KiB-x${n}`, (t) => warmBlobs(upstream, t, content.small, n, ctx.blobSeconds)]);
    figures.push([
      "manifest-tag",
      (t) => warmManifests(upstream, t, content.big.tagPath, 64, ctx.wrkSeconds),
    ]);
    figures.push([
      "manifest-digest",
      (t) => warmManifests(upstream, t, content.big.digestPath, 64, ctx.wrkSeconds),
    ]);

    for (let rep = 0; rep < ctx.reps; rep++) {
      const background = await quietBackground(ctx.noiseBudget);
      for (const [figure, run] of figures) {
        for (const slot of rotate(slots, rep)) {
          // Warm figures measure the rest of the machine while they run; that is the better noise
          // figure. A noisy sample is kept (results.kept() drops it when enough clean ones exist)
          // and measured once more while the budget lasts.
          for (let attempt = 0; attempt < 2; attempt++) {
            let values: Values;
            try {
              values = await run(slot.target);
            } catch (err) {
              await new Promise((r) => setTimeout(r, 200)); // let its exit be noticed
              const death = slot.target.died();
              if (death === undefined || slot.crashes >= MAX_RESTARTS) throw err;
              slot.crashes++;
              ctx.failures.push(`warm ${figure}, run ${rep + 1}: ${death}`);
              process.stderr.write(`bench: ${death}; starting it again\n`);
              await slot.target.stop();
              slot.target = await start(slot.spec);
              attempt--; // the crashed measurement does not count as one
              continue;
            }
            const noise = values.other_cores ?? background;
            results.add({ figure, target: slot.spec.name, rep, background: noise, values });
            progress("warm", rep, ctx.reps, figure, slot.spec.name, values);
            if (noise <= NOISY_CORES || !ctx.noiseBudget.take(ctx.wrkSeconds + 1)) break;
          }
        }
      }
    }
    for (const slot of slots)
      results.add({
        figure: "crashes",
        target: slot.spec.name,
        rep: 0,
        background: 0,
        values: { count: slot.crashes },
      });
    if (after) await after(slots.map((s) => s.target));
  } finally {
    for (const slot of slots) await slot.target.stop();
  }
}

/** regmirror's start-up time on an empty cache and on one with `blobs` cached blobs, alternating. */
export async function startupPhase(ctx: PhaseContext, blobs: number): Promise<void> {
  const cache = await makeStartupCache(blobs);
  process.stderr.write(`[startup] created ${blobs} blob files in ${Math.round(cache.fillMs)} ms\n`);
  try {
    for (let rep = 0; rep < ctx.reps; rep++) {
      const background = await quietBackground(ctx.noiseBudget);
      for (const [figure, dir] of [
        ["startup-empty", undefined],
        // The table and the goal know 100,000 only; other counts go to the JSON lines.
        [blobs === 100_000 ? "startup-100k" : `startup-${blobs}-blobs`, cache.dir],
      ] as const) {
        const values = await startupTime(ctx.launch, dir);
        ctx.results.add({ figure, target: "regmirror", rep, background, values });
        progress("startup", rep, ctx.reps, figure, "regmirror", values);
      }
    }
  } finally {
    await cache.remove();
  }
}
