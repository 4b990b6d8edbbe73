import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";

// Every metric regmirror exports, on one registry of its own (tests build several mirrors in
// one process, so the global registry would mix them). Names follow Prometheus conventions.

export type Kind = "manifest" | "blob";
export type Source = "cache" | "upstream";

/** A hit and a miss counter, bound to their labels. */
export interface Lookups {
  hit: { inc(): void };
  miss: { inc(): void };
}

export class Metrics {
  readonly registry = new Registry();
  /**
   * Where /metrics, /stats and the status page read the figures: this registry, or in a worker
   * every worker's (and the primary's) summed by the primary (cluster/metrics.ts).
   */
  view: () => Promise<Registry> = async () => this.registry;

  readonly hits = new Counter({
    name: "regmirror_cache_hits_total",
    help: "Requests answered from the cache, by kind and upstream",
    labelNames: ["kind", "upstream"] as const,
    registers: [this.registry],
  });
  readonly misses = new Counter({
    name: "regmirror_cache_misses_total",
    help: "Requests that had to go to the upstream, by kind and upstream",
    labelNames: ["kind", "upstream"] as const,
    registers: [this.registry],
  });
  readonly bytesServed = new Counter({
    name: "regmirror_served_bytes_total",
    help: "Body bytes sent to clients, by where they came from",
    labelNames: ["source"] as const,
    registers: [this.registry],
  });
  readonly upstreamRequests = new Counter({
    name: "regmirror_upstream_requests_total",
    help: "Requests sent to the upstream, by upstream, method and status (0 = no answer)",
    labelNames: ["upstream", "method", "status"] as const,
    registers: [this.registry],
  });
  readonly upstreamDuration = new Histogram({
    name: "regmirror_upstream_request_duration_seconds",
    help: "Time to the upstream's response headers",
    labelNames: ["upstream", "method", "status"] as const,
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
    registers: [this.registry],
  });
  readonly fillsInFlight = new Gauge({
    name: "regmirror_fills_in_flight",
    help: "Blob downloads from the upstream into the cache under way",
    registers: [this.registry],
  });
  readonly fastAnswers = new Counter({
    name: "regmirror_fast_answers_total",
    help: "Requests answered on the connection itself, before Node's HTTP server (cache.fastPath)",
    registers: [this.registry],
  });
  readonly coalesced = new Counter({
    name: "regmirror_coalesced_requests_total",
    help: "Requests that joined a download already under way instead of starting their own",
    labelNames: ["kind"] as const,
    registers: [this.registry],
  });
  readonly hostedPushes = new Counter({
    name: "regmirror_hosted_pushes_total",
    help: "Blobs and manifests stored in hosted repositories, by kind and how (upload, mount, put)",
    labelNames: ["kind", "via"] as const,
    registers: [this.registry],
  });
  readonly hostedPushedBytes = new Counter({
    name: "regmirror_hosted_pushed_bytes_total",
    help: "Bytes of blobs and manifests stored in hosted repositories",
    registers: [this.registry],
  });
  readonly fillFailures = new Counter({
    name: "regmirror_fill_failures_total",
    help: "Cache fills dropped, by reason",
    labelNames: ["reason"] as const,
    registers: [this.registry],
  });
  readonly servedStale = new Counter({
    name: "regmirror_served_stale_total",
    help: "Tags served past their TTL because the upstream could not be asked",
    labelNames: ["upstream"] as const,
    registers: [this.registry],
  });

  readonly pulls = new Counter({
    name: "regmirror_pulls_total",
    help: "Image pulls: manifest requests by tag (what every client starts a pull with)",
    labelNames: ["upstream"] as const,
    registers: [this.registry],
  });
  readonly rateLimitRemaining = new Gauge({
    name: "regmirror_upstream_ratelimit_remaining",
    help: "The upstream's last ratelimit-remaining header (Docker Hub: pulls left in the window)",
    labelNames: ["upstream"] as const,
    // Over several workers: the lowest any of them was told, not a sum.
    aggregator: "min",
    registers: [this.registry],
  });
  readonly upstreamUp = new Gauge({
    name: "regmirror_upstream_up",
    help: "1 when the upstream's last answer was not an outage (no answer, 429, 5xx), else 0",
    labelNames: ["upstream"] as const,
    aggregator: "min",
    registers: [this.registry],
  });
  readonly clusterUp = new Gauge({
    name: "regmirror_cluster_redis_up",
    help: "In a cluster (cluster.redis): 1 while this replica reaches Redis, else 0 (it then serves and fills on its own)",
    aggregator: "min",
    registers: [this.registry],
  });
  readonly clusterOutages = new Counter({
    name: "regmirror_cluster_redis_outages_total",
    help: "Times this replica lost Redis (coordination falls back to this replica alone until it is back)",
    registers: [this.registry],
  });
  readonly evictions = new Counter({
    name: "regmirror_evictions_total",
    help: "Blobs removed from the cache, by reason (size: over cache.maxSize; age: unread for cache.blobTTL)",
    labelNames: ["reason"] as const,
    registers: [this.registry],
  });
  readonly cacheBytes = new Gauge({
    name: "regmirror_cache_size_bytes",
    help: "Bytes of blobs in the cache",
    registers: [this.registry],
  });
  readonly cacheBlobs = new Gauge({
    name: "regmirror_cache_blobs",
    help: "Blobs in the cache",
    registers: [this.registry],
  });
  readonly cacheLimit = new Gauge({
    name: "regmirror_cache_limit_bytes",
    help: "cache.maxSize",
    aggregator: "max",
    registers: [this.registry],
  });

  private readonly bound = new Map<string, { inc(by?: number): void }>();

  private readonly lookups = new Map<string, Lookups>();

  /** Hits and misses of one kind and upstream, bound once (see bind): one map lookup a request. */
  lookupsOf(kind: Kind, upstream: string): Lookups {
    const key = `${kind}\0${upstream}`;
    let l = this.lookups.get(key);
    if (!l) {
      l = { hit: this.hits.labels({ kind, upstream }), miss: this.misses.labels({ kind, upstream }) };
      this.lookups.set(key, l);
    }
    return l;
  }

  /** Pulls of one upstream, bound once: prom-client hashes a label object on every inc() otherwise. */
  pullsOf(upstream: string): { inc(): void } {
    return this.bind(`pulls\0${upstream}`, () => this.pulls.labels({ upstream }));
  }

  /** Bytes served from one source, bound once (the hot path: every response counts here). */
  servedFrom(source: Source): { inc(bytes: number): void } {
    return this.bind(`served\0${source}`, () => this.bytesServed.labels({ source }));
  }

  /** prom-client hashes a label object on every inc(): on the hot path, bind the labels once. */
  private bind(key: string, make: () => { inc(by?: number): void }) {
    let c = this.bound.get(key);
    if (!c) this.bound.set(key, (c = make()));
    return c;
  }

  constructor(opts: { processMetrics?: boolean } = {}) {
    if (opts.processMetrics ?? true) collectDefaultMetrics({ register: this.registry, prefix: "regmirror_" });
  }
}
