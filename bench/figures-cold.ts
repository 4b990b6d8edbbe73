// Cold figures: what the first pull through an empty cache costs. Each needs a target with a
// fresh cache, so run.ts starts one per figure group. The upstream itself can stand in as a
// "target" (direct GETs): it gives the floor a mirror adds its cost to.
import type { Upstream, AccessLogEntry } from "../test/fixtures/upstream.ts";
import type { BenchImage } from "./content.ts";
import { runLoadgen } from "./loadgen.ts";
import { cpuMeter } from "./proc.ts";

export type Values = Record<string, number>;

/** Anything with a port that serves /v2/: a Target, or the upstream itself. */
export interface Endpoint {
  port: number;
  /** The process tree to charge CPU time to (a Target's); the upstream's own is not measured. */
  pid?: number;
  /** Its storage's processes (an S3 column's RGW and OSD), whose CPU is reported apart. */
  storagePids?: number[];
}

// distribution fetches a missed blob a second time in the background, after the client has its
// bytes; the upstream writes its access-log line when a transfer ends. Wait this long before
// counting, on top of the fixture's own wait for a quiet log.
const LATE_FILL_MS = 750;

function blobRequests(entries: AccessLogEntry[], method: string, paths: string[]): AccessLogEntry[] {
  const set = new Set(paths);
  return entries.filter((e) => e.method === method && set.has(e.path));
}

/**
 * GETs every blob of `image` with `conns` in parallel on an empty cache: wall time, time to first
 * body byte, what reached the upstream (blob GETs, blob HEADs, all requests, bytes it sent per
 * byte the client received), and the CPU seconds of the target's process tree from the first GET
 * until the late fills have landed (cpu_s; a background second download counts).
 */
export async function coldPull(
  upstream: Upstream,
  target: Endpoint,
  image: BenchImage,
  conns: number,
): Promise<Values> {
  await upstream.resetRequests();
  const cpu = target.pid === undefined ? undefined : cpuMeter(target.pid);
  const storage = target.storagePids?.map((pid) => cpuMeter(pid));
  const r = await runLoadgen({
    port: target.port,
    conns,
    count: image.blobPaths.length,
    paths: image.blobPaths,
    timeoutS: 120,
  });
  await new Promise((res) => setTimeout(res, LATE_FILL_MS));
  const cpuS = cpu?.done().cpu;
  const storageCpuS = storage?.reduce((sum, m) => sum + m.done().cpu, 0);
  const seen = await upstream.requests();
  const gets = blobRequests(seen, "GET", image.blobPaths);
  const upstreamBytes = seen.reduce((s, e) => s + e.bytes, 0);
  return {
    wall_s: r.elapsed_s,
    ...(cpuS === undefined ? {} : { cpu_s: cpuS }),
    ...(storageCpuS === undefined ? {} : { storage_cpu_s: storageCpuS }),
    ttfb_p50_ms: r.ttfb_ms.p50,
    ttfb_max_ms: r.ttfb_ms.max,
    upstream_blob_gets: gets.length,
    upstream_blob_heads: blobRequests(seen, "HEAD", image.blobPaths).length,
    upstream_requests: seen.length,
    upstream_bytes_per_client_byte: r.bytes > 0 ? upstreamBytes / r.bytes : 0,
    errors: r.errors + (r.timed_out ? 1 : 0) + (r.bytes === image.blobBytes ? 0 : 1),
  };
}

/** Time to first body byte of one GET straight from the upstream: the floor for a mirror's TTFB. */
export async function upstreamTtfb(upstream: Upstream, path: string): Promise<number> {
  const port = Number(new URL(upstream.url).port);
  const r = await runLoadgen({ port, conns: 1, count: 1, paths: [path], timeoutS: 60 });
  return r.ttfb_ms.p50;
}

/**
 * `clients` connections GET the same cold blob at the same moment. A mirror that coalesces makes
 * one upstream GET; one that streams to latecomers gives each of them its first byte about when
 * the upstream sends its first (ttfb_max_over_upstream_ms, against a direct GET just before).
 */
export async function coalescing(
  upstream: Upstream,
  target: Endpoint,
  path: string,
  size: number,
  clients: number,
): Promise<Values> {
  const direct = await upstreamTtfb(upstream, path);
  await upstream.resetRequests();
  const r = await runLoadgen({
    port: target.port,
    conns: clients,
    count: clients,
    paths: [path],
    timeoutS: 120,
  });
  await new Promise((res) => setTimeout(res, LATE_FILL_MS));
  const seen = await upstream.requests();
  return {
    upstream_blob_gets: blobRequests(seen, "GET", [path]).length,
    upstream_blob_heads: blobRequests(seen, "HEAD", [path]).length,
    ttfb_p50_ms: r.ttfb_ms.p50,
    ttfb_max_ms: r.ttfb_ms.max,
    total_p50_ms: r.total_ms.p50,
    total_max_ms: r.total_ms.max,
    upstream_ttfb_ms: direct,
    ttfb_max_over_upstream_ms: r.ttfb_ms.max - direct,
    errors: r.errors + (r.timed_out ? 1 : 0) + (r.bytes === size * clients ? 0 : 1),
  };
}
