// Warm figures: serving from a full cache, the steady state of a mirror. Each figure also reads
// what it cost the target from /proc: peak RSS (sampled every 50 ms) and CPU seconds (utime +
// stime of the process tree before and after), per GB for blobs and per request for manifests,
// and how many requests still reached the upstream (a warm cache should send none).
import type { Upstream } from "../test/fixtures/upstream.ts";
import { MANIFEST_ACCEPT, type Content, type BenchImage } from "./content.ts";
import type { Values } from "./figures-cold.ts";
import { startFollowClient, type FollowResult } from "./follow.ts";
import { runLoadgen, type LoadResult } from "./loadgen.ts";
import { cpuMeter, machineBusySeconds, RssSampler } from "./proc.ts";
import type { Target } from "./targets.ts";
import { runWrk } from "./wrk.ts";

const MB = 1e6;

/** Fetches every blob and both manifest forms once so that the target has them all cached. */
export async function warmUp(upstream: Upstream, target: Target, content: Content): Promise<void> {
  for (const image of [content.big, content.small]) {
    const blobs = await runLoadgen({
      port: target.port,
      conns: 4,
      count: image.blobPaths.length,
      paths: image.blobPaths,
      timeoutS: 120,
    });
    const manifests = await runLoadgen({
      port: target.port,
      conns: 1,
      count: 2,
      paths: [image.tagPath, image.digestPath],
      headers: [MANIFEST_ACCEPT],
      timeoutS: 30,
    });
    if (blobs.errors + manifests.errors > 0 || blobs.bytes !== image.blobBytes)
      throw new Error(
        `${target.name}: warm-up of ${image.repo} failed (${blobs.errors + manifests.errors} errors)`,
      );
  }
  // distribution stores a missed blob with a second, background download; let it land.
  await new Promise((r) => setTimeout(r, 1000));
  await upstream.resetRequests();
}

/**
 * Serves the warm workloads for a moment, unmeasured: manifests by tag and by digest, and small
 * blobs, at 64 connections. A warm figure is the steady state of a mirror that has been serving,
 * and a fresh Node process is not there yet: its request path runs unoptimised for its first
 * second or so under load. Measured without this, a fresh regmirror's first wrk run on a
 * manifest had a 34–64 ms p99 where the next ones had 9–11 ms. Every target gets the same.
 */
export async function exercise(target: Target, content: Content, seconds = 1): Promise<void> {
  for (const path of [content.big.tagPath, content.big.digestPath])
    await runWrk({
      url: target.url + path,
      conns: 64,
      threads: 2,
      durationS: seconds,
      headers: [MANIFEST_ACCEPT],
    });
  await runLoadgen({ port: target.port, conns: 64, durationS: seconds, paths: content.small.layerPaths });
}

interface Measured<T> {
  result: T;
  cpuS: number;
  rssPeakMb: number;
  /** Peak with file-backed and shared pages counted once for the tree (proc.ts, TreeMemory). */
  rssSharedOnceMb: number;
  /** Processes in the target's tree (regmirror: 1, or the primary + its workers). */
  processes: number;
  upstreamRequests: number;
  /** Share of the target's CPU time spent in the kernel (stime / (utime + stime)). */
  sysShare: number;
  /** Cores the rest of the machine used meanwhile: other tenants (noise). */
  otherCores: number;
  /** CPU seconds of the target's storage processes (RGW, OSD), if it has any. */
  storageCpuS?: number;
}

async function measured<T extends { client_cpu_s: number }>(
  upstream: Upstream,
  target: Target,
  seconds: number,
  run: () => Promise<T>,
): Promise<Measured<T>> {
  await upstream.resetRequests();
  const rss = new RssSampler(target.pid);
  const cpu = cpuMeter(target.pid);
  const storage = (target.storagePids ?? []).map((pid) => cpuMeter(pid));
  const machine0 = machineBusySeconds();
  const self0 = process.cpuUsage();
  let result: T;
  try {
    result = await run();
  } catch (err) {
    rss.stop(); // or its interval keeps the benchmark alive
    throw err;
  }
  const { cpu: cpuS, sys: sysS } = cpu.done();
  const storageCpuS = target.storagePids ? storage.reduce((sum, m) => sum + m.done().cpu, 0) : undefined;
  const machine = machineBusySeconds() - machine0;
  const self = process.cpuUsage(self0);
  const rssPeak = rss.stop();
  // Everything busy that was neither the target, nor its storage, nor the client, nor this process.
  const other = machine - cpuS - (storageCpuS ?? 0) - result.client_cpu_s - (self.user + self.system) / 1e6;
  const upstreamRequests = (await upstream.requests()).length;
  return {
    result,
    cpuS,
    sysShare: cpuS > 0 ? sysS / cpuS : 0,
    rssPeakMb: rssPeak / MB,
    rssSharedOnceMb: rss.peakSharedOnceBytes / MB,
    processes: rss.processes,
    upstreamRequests,
    otherCores: Math.max(0, other) / seconds,
    storageCpuS,
  };
}

/** What a column with storage processes (S3) spent there, and how its blobs reached the client. */
function storageValues(m: Measured<unknown>, durationS: number, bytes: number): Values {
  if (m.storageCpuS === undefined) return {};
  return {
    storage_cpu_cores: m.storageCpuS / durationS,
    storage_cpu_s_per_gb: bytes > 0 ? m.storageCpuS / (bytes / 1e9) : 0,
  };
}

/**
 * MB/s (10^6 bytes per second) serving the layers of `image` over `conns` keep-alive streams.
 * Measured with loadgen, or for a column that redirects to its bucket with the client that
 * follows the 307 (then `redirected_share` says how many answers were one).
 */
export async function warmBlobs(
  upstream: Upstream,
  target: Target,
  image: BenchImage,
  conns: number,
  durationS: number,
): Promise<Values> {
  // Each stream starts on a different layer (the load generator takes paths in turn).
  const opts = { port: target.port, conns, durationS, paths: image.layerPaths };
  if (target.blobClient === "follow") {
    const client = await startFollowClient(opts);
    let m: Measured<FollowResult>;
    try {
      m = await measured(upstream, target, durationS, () => client.go());
    } finally {
      client.kill();
    }
    const r = m.result;
    return {
      ...blobValues(m, durationS),
      ...storageValues(m, durationS, r.bytes),
      redirected_share: r.answers > 0 ? r.redirects / r.answers : 0,
    };
  }
  const m = await measured(upstream, target, durationS, () => runLoadgen(opts));
  return { ...blobValues(m, durationS), ...storageValues(m, durationS, m.result.bytes) };
}

function blobValues(m: Measured<LoadResult>, durationS: number): Values {
  const r = m.result;
  return {
    mb_per_s: r.mb_per_s,
    req_per_s: r.req_per_s,
    ttfb_p50_ms: r.ttfb_ms.p50,
    ttfb_p99_ms: r.ttfb_ms.p99,
    cpu_s_per_gb: r.bytes > 0 ? m.cpuS / (r.bytes / 1e9) : 0,
    cpu_cores: m.cpuS / durationS,
    cpu_sys_share: m.sysShare,
    rss_peak_mb: m.rssPeakMb,
    rss_shared_once_peak_mb: m.rssSharedOnceMb,
    processes: m.processes,
    client_cpu_cores: r.client_cpu_s / durationS,
    other_cores: m.otherCores,
    upstream_requests: m.upstreamRequests,
    errors: r.errors,
  };
}

/** wrk at `conns` connections on one manifest URL, with a Docker client's Accept header. */
export async function warmManifests(
  upstream: Upstream,
  target: Target,
  path: string,
  conns: number,
  durationS: number,
): Promise<Values> {
  const m = await measured(upstream, target, durationS, () =>
    runWrk({ url: target.url + path, conns, threads: 2, durationS, headers: [MANIFEST_ACCEPT] }),
  );
  const r = m.result;
  return {
    req_per_s: r.req_per_s,
    p50_ms: r.p50_ms,
    p99_ms: r.p99_ms,
    cpu_us_per_req: r.requests > 0 ? (m.cpuS / r.requests) * 1e6 : 0,
    cpu_cores: m.cpuS / durationS,
    cpu_sys_share: m.sysShare,
    rss_peak_mb: m.rssPeakMb,
    rss_shared_once_peak_mb: m.rssSharedOnceMb,
    processes: m.processes,
    client_cpu_cores: r.client_cpu_s / durationS,
    other_cores: m.otherCores,
    upstream_requests: m.upstreamRequests,
    errors: r.errors,
  };
}
