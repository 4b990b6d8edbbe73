import type { Worker } from "node:cluster";
import {
  AggregatorRegistry,
  type MetricObjectWithValues,
  type MetricValue,
  type Registry,
} from "prom-client";

// /metrics, /stats and the status page over all the workers. Whichever worker a scrape lands
// on asks the primary; the primary asks every worker for its registry (as JSON), adds its own
// (the eviction index's gauges live there) and sums them with prom-client's aggregator.
// Process metrics (memory, CPU, event-loop lag) are not summed: each worker's keep a `worker`
// label, so a leak or a busy loop can still be pinned on one process.

type Json = MetricObjectWithValues<MetricValue<string>>[];

type Message =
  | { regmirrorMetrics: "ask"; id: number }
  | { regmirrorMetrics: "answer"; id: number; json: Json }
  | { regmirrorMetrics: "collect"; id: number }
  | { regmirrorMetrics: "report"; id: number; json: Json };

function isMessage(m: unknown): m is Message {
  return typeof m === "object" && m !== null && "regmirrorMetrics" in m;
}

/** A dead or stuck worker must not hang a scrape: its figures are left out after this. */
const COLLECT_TIMEOUT_MS = 2000;

/** Labels a process's own metrics with its worker id, so the aggregation keeps them apart. */
function labelProcess(json: Json, worker: string): Json {
  return json.map((m) =>
    /^regmirror_(process|nodejs)_/.test(m.name)
      ? { ...m, values: m.values.map((v) => ({ ...v, labels: { ...v.labels, worker } })) }
      : m,
  );
}

/** The primary's side: answers every worker's "ask" with the sum over all workers. */
export class MetricsCollector {
  private next = 0;
  private readonly waiting = new Map<number, { json: Json[]; left: Set<Worker>; done: () => void }>();

  constructor(
    private readonly own: Registry,
    private readonly workers: () => Iterable<Worker>,
  ) {}

  /** Wire a new worker in. */
  attach(worker: Worker): void {
    worker.on("message", (m: unknown) => {
      if (!isMessage(m)) return;
      if (m.regmirrorMetrics === "ask") {
        void this.collect().then((json) => {
          if (worker.isConnected())
            worker.send({ regmirrorMetrics: "answer", id: m.id, json } satisfies Message);
        });
      } else if (m.regmirrorMetrics === "report") {
        const round = this.waiting.get(m.id);
        if (!round || !round.left.delete(worker)) return;
        round.json.push(labelProcess(m.json, String(worker.id)));
        if (round.left.size === 0) round.done();
      }
    });
  }

  async collect(): Promise<Json> {
    const id = this.next++;
    const json: Json[] = [labelProcess(await this.own.getMetricsAsJSON(), "primary")];
    const left = new Set([...this.workers()].filter((w) => w.isConnected()));
    if (left.size > 0) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, COLLECT_TIMEOUT_MS);
        this.waiting.set(id, {
          json,
          left,
          done: () => {
            clearTimeout(timer);
            resolve();
          },
        });
        for (const w of left) w.send({ regmirrorMetrics: "collect", id } satisfies Message);
      });
      this.waiting.delete(id);
    }
    return AggregatorRegistry.aggregate(json).getMetricsAsJSON() as Promise<Json>;
  }
}

/**
 * A worker's side: answers the primary's "collect" with its own registry, and gives the view
 * (Metrics.view) that asks the primary for the sum.
 */
export function workerMetrics(own: Registry): () => Promise<Registry> {
  let next = 0;
  const asked = new Map<number, (json: Json) => void>();
  process.on("message", (m: unknown) => {
    if (!isMessage(m)) return;
    if (m.regmirrorMetrics === "collect") {
      void own.getMetricsAsJSON().then((json) => {
        if (process.connected)
          process.send!({ regmirrorMetrics: "report", id: m.id, json: json as Json } satisfies Message);
      });
    } else if (m.regmirrorMetrics === "answer") {
      asked.get(m.id)?.(m.json);
      asked.delete(m.id);
    }
  });
  return async () => {
    const id = next++;
    const json = await new Promise<Json | undefined>((resolve) => {
      // A scrape must answer even if the primary cannot (it is stopping): with this worker's own.
      const timer = setTimeout(() => {
        asked.delete(id);
        resolve(undefined);
      }, COLLECT_TIMEOUT_MS * 2);
      asked.set(id, (answer) => {
        clearTimeout(timer);
        resolve(answer);
      });
      if (process.connected) process.send!({ regmirrorMetrics: "ask", id } satisfies Message);
    });
    return json ? (AggregatorRegistry.aggregate([json]) as unknown as Registry) : own;
  };
}
