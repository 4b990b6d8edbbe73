import cluster, { type Worker } from "node:cluster";
import type { Logger } from "winston";
import type { Config } from "../config/schema.ts";
import { CoordinationHub } from "../coordination/hub.ts";
import { Metrics } from "../metrics/metrics.ts";
import { Evictor } from "../mirror/eviction.ts";
import { BLOB_ACTIVITY, BLOB_REMOVED, feedEvictor, type BlobActivity } from "../mirror/eviction-relay.ts";
import { BlobStore } from "../storage/blob-store.ts";
import { watchGeneration } from "../storage/generation.ts";
import { openCache } from "../storage/cache.ts";
import { MetricsCollector } from "./metrics.ts";
import { answerHello, ipcChannel } from "./channel.ts";
import { randomBytes } from "node:crypto";
import { fileURLToPath } from "node:url";

// `workers: N` (N > 1): this process forks N workers that each run the whole mirror on the
// same listen addresses (node:cluster hands them the connections) and the same cache
// directory, and serves them what must exist once:
//
// - the coordination hub (coordination/hub.ts): flights, leases and events across workers;
// - the eviction index: one byte total, each blob removed once (mirror/eviction-relay.ts);
// - the sum of every worker's metrics (cluster/metrics.ts);
// - the lifecycle: a worker that dies is replaced at once, its fills end as failed for every
//   worker following them, and its temp files are removed; SIGTERM drains every worker,
//   SIGHUP has every worker reload TLS.
//
// The primary serves no request itself: a crash on a request's path takes one worker, never
// the process that holds the others together.

type WorkerState = "starting" | "serving";

/** This many deaths within CRASH_WINDOW_MS and the next fork waits a second. */
const CRASHES_BEFORE_BACKOFF = 3;
const CRASH_WINDOW_MS = 10_000;

/**
 * V8's young generation (two semi-spaces, 16 MiB each by default on 64-bit) is the largest
 * part of a busy worker's heap that it does not need: it grows to the maximum on the first
 * fills and stays resident. WORKER_SEMI_SPACE_MB caps it; see docs/workers.md for the
 * figures, and for why smaller is not better (1 MiB: 20-40 % more CPU on cold fills). A
 * --max-semi-space-size of the operator's own (command line or NODE_OPTIONS) is kept.
 */
const WORKER_SEMI_SPACE_MB = 4;

/** The workers' node options: the primary's own, and the young generation's cap. */
export function workerExecArgv(
  execArgv: string[] = process.execArgv,
  nodeOptions: string | undefined = process.env.NODE_OPTIONS,
): string[] {
  const given = [...execArgv, ...(nodeOptions ?? "").split(/\s+/)];
  if (given.some((a) => /^--max[-_]semi[-_]space[-_]size\b/.test(a))) return execArgv;
  return [...execArgv, `--max-semi-space-size=${WORKER_SEMI_SPACE_MB}`];
}

/** The workers' entry, next to main: worker.js once built, worker.ts where tsx runs the source. */
const WORKER_ENTRY = fileURLToPath(
  new URL(import.meta.url.endsWith(".ts") ? "../worker.ts" : "../worker.js", import.meta.url),
);

export async function runPrimary(config: Config, count: number, log: Logger): Promise<void> {
  const { driver, paths } = await openCache(config);
  const store = new BlobStore(driver, paths);
  // Only here, before any worker runs: debris of a previous run, never a live worker's fill.
  await store.init();
  const hub = new CoordinationHub({
    onError: (err) => log.error("an event handler failed", { error: (err as Error).message }),
  });
  const metrics = new Metrics();
  const removed = hub.local.events<{ hex: string }>(BLOB_REMOVED);
  const evictor = new Evictor({
    store,
    metrics,
    log,
    maxSizeBytes: config.cache.maxSize,
    blobTtlMs: config.cache.blobTTL,
    onRemove: (hex) => void removed.publish({ hex }),
  });
  feedEvictor(hub.local.events<BlobActivity>(BLOB_ACTIVITY), evictor);
  const stopWatching = watchGeneration(paths, () => {
    evictor.reload().catch((err: Error) => log.error("could not index the cache", { error: err.message }));
  });

  const hello = { config, workers: count, tokenKey: randomBytes(32) };
  const workers = new Map<Worker, WorkerState>();
  const deaths: number[] = [];
  const collector = new MetricsCollector(metrics.registry, () => workers.keys());
  let stopping = false;
  let running = false;
  let started: () => void;
  const allStarted = new Promise<void>((resolve) => (started = resolve));

  // The workers accept connections themselves, from the one listening socket, rather than the
  // primary accepting each and handing it over. The hand-over is one IPC round trip per
  // connection and one at a time per worker: 32 clients arriving together for a cold blob
  // waited up to 0.4–0.7 s for it, and the primary's other messages (the fills' flights) queued
  // behind it (docs/workers.md). A worker busy serving is slower to accept, so new connections
  // lean to the idler one. An operator's NODE_CLUSTER_SCHED_POLICY (rr) is kept.
  if (process.env.NODE_CLUSTER_SCHED_POLICY === undefined) cluster.schedulingPolicy = cluster.SCHED_NONE;
  cluster.setupPrimary({ exec: WORKER_ENTRY, serialization: "advanced", execArgv: workerExecArgv() });
  const fork = (): void => {
    const worker = cluster.fork();
    const pid = worker.process.pid!;
    workers.set(worker, "starting");
    hub.attach(String(worker.id), ipcChannel(worker));
    collector.attach(worker);
    answerHello(worker, hello);
    worker.on("message", (m: unknown) => {
      if ((m as { regmirrorWorker?: string } | null)?.regmirrorWorker !== "listening") return;
      workers.set(worker, "serving");
      if (!running && [...workers.values()].every((s) => s === "serving")) {
        running = true;
        started();
      }
    });
    worker.on("exit", (code, signal) => {
      const state = workers.get(worker);
      workers.delete(worker);
      // Its flights end as failed everywhere; followers in other workers cut their clients.
      hub.detach(String(worker.id));
      void store
        .removeTempOf(pid)
        .then((n) => n > 0 && log.info("removed a dead worker's temp files", { pid, files: n }))
        .catch((err: Error) =>
          log.error("could not remove a dead worker's temp files", { error: err.message }),
        );
      if (stopping) return;
      // One that dies before it ever listened is a bad start (a certificate it cannot read),
      // not a crash to repair by forking again and again.
      if (state === "starting" && !running) {
        log.error("a worker could not start; stopping", { pid, code, signal });
        return void stop(code || 1);
      }
      // At once, unless workers keep dying (a request that crashes every worker it reaches):
      // then a second between forks, so the primary does not spin.
      const now = Date.now();
      deaths.push(now);
      while (deaths.length > 0 && deaths[0]! < now - CRASH_WINDOW_MS) deaths.shift();
      const delay = deaths.length >= CRASHES_BEFORE_BACKOFF ? 1000 : 0;
      log.error("a worker died; starting another", { pid, code, signal, inMs: delay });
      if (delay === 0) fork();
      else
        setTimeout(() => {
          if (!stopping) fork();
        }, delay);
    });
  };

  const stop = (code = 0): void => {
    if (stopping) return;
    stopping = true;
    // Each worker drains its own responses (shutdownTimeout) and exits.
    for (const w of workers.keys()) w.process.kill("SIGTERM");
    const exited = () => workers.size === 0;
    const finish = async () => {
      stopWatching();
      await evictor.close();
      hub.close();
      log.info("regmirror stopped");
      process.exit(code);
    };
    if (exited()) return void finish();
    cluster.on("exit", () => exited() && void finish());
  };
  process.on("SIGTERM", () => stop());
  process.on("SIGINT", () => stop());
  process.on("SIGHUP", () => {
    for (const w of workers.keys()) w.process.kill("SIGHUP");
  });

  for (let i = 0; i < count; i++) fork();
  await allStarted;
  // Loaded after the workers listen: a large cache must not delay the start.
  evictor.start().catch((err: Error) => log.error("could not index the cache", { error: err.message }));
  log.info("regmirror workers started", { workers: count });
}
