import type { Metrics } from "./metrics.ts";
import type { ReplicaRecord } from "../cluster/registry.ts";

// The same figures as /metrics, summed into the JSON a person (or the status page) reads:
// GET /stats. Derived from the Prometheus registry, so the two can never disagree.

export interface UpstreamStats {
  name: string;
  url: string;
  /** null until the mirror has asked it anything. */
  up: boolean | null;
  rateLimitRemaining: number | null;
  requests: number;
  pulls: number;
}

export interface Stats {
  uptimeSeconds: number;
  hits: { manifest: number; blob: number };
  misses: { manifest: number; blob: number };
  /** hits / (hits + misses), manifests and blobs together; null before the first request. */
  hitRatio: number | null;
  bytesServed: { cache: number; upstream: number };
  /** Bytes clients got from the cache: what the upstream link did not have to carry. */
  bytesSaved: number;
  cache: { bytes: number; blobs: number; limitBytes: number };
  fillsInFlight: number;
  coalesced: number;
  servedStale: number;
  evictions: { size: number; age: number };
  pulls: number;
  upstreams: UpstreamStats[];
  /** In a cluster (cluster.redis): every replica's record; null while Redis cannot be asked. */
  cluster?: { replicas: ReplicaRecord[] | null };
}

type Sample = { labels: Record<string, string | number>; value: number };

export async function collectStats(
  metrics: Metrics,
  upstreams: ReadonlyArray<{ name: string; url: string }>,
  startedAt: number,
): Promise<Stats> {
  const byName = new Map<string, Sample[]>();
  for (const m of await (await metrics.view()).getMetricsAsJSON()) byName.set(m.name, m.values as Sample[]);
  const sum = (name: string, where: Record<string, string> = {}): number =>
    (byName.get(name) ?? [])
      .filter((v) => Object.entries(where).every(([k, want]) => String(v.labels[k]) === want))
      .reduce((a, v) => a + v.value, 0);
  const one = (name: string, where: Record<string, string>): number | null => {
    const v = (byName.get(name) ?? []).find((s) =>
      Object.entries(where).every(([k, want]) => String(s.labels[k]) === want),
    );
    return v ? v.value : null;
  };
  const hits = {
    manifest: sum("regmirror_cache_hits_total", { kind: "manifest" }),
    blob: sum("regmirror_cache_hits_total", { kind: "blob" }),
  };
  const misses = {
    manifest: sum("regmirror_cache_misses_total", { kind: "manifest" }),
    blob: sum("regmirror_cache_misses_total", { kind: "blob" }),
  };
  const total = hits.manifest + hits.blob + misses.manifest + misses.blob;
  const cacheBytes = sum("regmirror_served_bytes_total", { source: "cache" });
  return {
    uptimeSeconds: Math.round((Date.now() - startedAt) / 1000),
    hits,
    misses,
    hitRatio: total === 0 ? null : (hits.manifest + hits.blob) / total,
    bytesServed: { cache: cacheBytes, upstream: sum("regmirror_served_bytes_total", { source: "upstream" }) },
    bytesSaved: cacheBytes,
    cache: {
      bytes: sum("regmirror_cache_size_bytes"),
      blobs: sum("regmirror_cache_blobs"),
      limitBytes: sum("regmirror_cache_limit_bytes"),
    },
    fillsInFlight: sum("regmirror_fills_in_flight"),
    coalesced: sum("regmirror_coalesced_requests_total"),
    servedStale: sum("regmirror_served_stale_total"),
    evictions: {
      size: sum("regmirror_evictions_total", { reason: "size" }),
      age: sum("regmirror_evictions_total", { reason: "age" }),
    },
    pulls: sum("regmirror_pulls_total"),
    upstreams: upstreams.map((u) => {
      const up = one("regmirror_upstream_up", { upstream: u.name });
      return {
        name: u.name,
        url: u.url,
        up: up === null ? null : up === 1,
        rateLimitRemaining: one("regmirror_upstream_ratelimit_remaining", { upstream: u.name }),
        requests: sum("regmirror_upstream_requests_total", { upstream: u.name }),
        pulls: sum("regmirror_pulls_total", { upstream: u.name }),
      };
    }),
  };
}
