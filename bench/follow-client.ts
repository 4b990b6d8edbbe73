// follow-client: the warm blob load for a column whose mirror answers a cached blob's GET with a
// 307 to a presigned bucket URL (storage.s3.redirect). loadgen.c does not follow redirects, so
// this measures what a client gets there: GET mirror → 307 → GET Location, both on keep-alive
// connections (undici), the same CONNS streams as loadgen, each taking the paths in turn from a
// different start. A 200 from the mirror itself (a small blob it holds in memory) is read as is.
//
// Usage: node --import tsx bench/follow-client.ts -p PORT -c CONNS -d SECONDS PATH...
// It prints "ready" once loaded and starts the load when a line arrives on stdin, so that its own
// start-up (tsx, undici) falls outside the measured window (bench/follow.ts).
//
// Prints one JSON object in loadgen's shape (see loadgen.ts, LoadResult): bytes are body bytes
// that arrived before the deadline (responses in flight then are abandoned, as loadgen does);
// ttfb_ms is from the GET to the mirror until the first body byte of the final answer, so it
// includes the redirect's round trip; headers_ms until the final answer's headers; client_cpu_s
// is its CPU during the load alone. Also: answers (the mirror's answers, finished or not) and
// redirects (those that were a 307).
import { parseArgs } from "node:util";
import { Agent, Pool, type Dispatcher } from "undici";

const { values, positionals } = parseArgs({
  options: {
    port: { type: "string", short: "p" },
    conns: { type: "string", short: "c" },
    duration: { type: "string", short: "d" },
  },
  allowPositionals: true,
  strict: true,
});
const port = Number(values.port);
const conns = Number(values.conns);
const durationS = Number(values.duration);
const paths = positionals;
if (!(port > 0) || !(conns > 0) || !(durationS > 0) || paths.length === 0) {
  process.stderr.write("usage: follow-client -p PORT -c CONNS -d SECONDS PATH...\n");
  process.exit(2);
}

const mirror = new Pool(`http://127.0.0.1:${port}`, { connections: conns, pipelining: 1 });
// One pool per bucket origin, CONNS connections each: every stream holds one to each side.
const bucket = new Agent({ connections: conns, pipelining: 1 });

const ttfb: number[] = [];
const headers: number[] = [];
const total: number[] = [];
let bytes = 0;
let completed = 0;
let errors = 0;
let redirects = 0;
let answers = 0;

const controller = new AbortController();
const signal = controller.signal;
let stopping = false;

async function fetchOnce(path: string): Promise<void> {
  const t0 = performance.now();
  let res: Dispatcher.ResponseData = await mirror.request({ path, method: "GET", signal });
  answers++;
  if (res.statusCode === 307) {
    redirects++;
    const location = res.headers.location;
    await res.body.dump();
    if (typeof location !== "string") throw new Error("307 without a Location");
    const url = new URL(location);
    res = await bucket.request({
      origin: url.origin,
      path: url.pathname + url.search,
      method: "GET",
      signal,
    });
  }
  headers.push(performance.now() - t0);
  if (res.statusCode !== 200) {
    await res.body.dump();
    errors++;
    return;
  }
  let first = true;
  for await (const chunk of res.body as AsyncIterable<Buffer>) {
    if (stopping) return;
    if (first) {
      ttfb.push(performance.now() - t0);
      first = false;
    }
    bytes += chunk.length;
  }
  total.push(performance.now() - t0);
  completed++;
}

async function stream(start: number): Promise<void> {
  for (let i = start; !stopping; i++) {
    try {
      await fetchOnce(paths[i % paths.length]!);
    } catch (err) {
      if (stopping) return;
      errors++;
      process.stderr.write(`follow-client: ${(err as Error).message}\n`);
    }
  }
}

function percentiles(xs: number[]): Record<string, number> {
  const s = [...xs].sort((a, b) => a - b);
  const at = (q: number) => (s.length ? s[Math.round(q * (s.length - 1))]! : 0);
  return { p50: at(0.5), p90: at(0.9), p99: at(0.99), max: at(1), min: at(0) };
}

process.stdout.write("ready\n");
await new Promise<void>((resolve) => process.stdin.once("data", () => resolve()));
const cpu0 = process.cpuUsage();
const timer = setTimeout(() => {
  stopping = true;
  controller.abort();
}, durationS * 1000);
await Promise.all(Array.from({ length: conns }, (_, i) => stream(i)));
clearTimeout(timer);
const elapsed = durationS; // bytes after the deadline are not counted
const load = process.cpuUsage(cpu0);
process.stdout.write(
  JSON.stringify({
    conns,
    requests: completed,
    errors,
    bytes,
    elapsed_s: elapsed,
    mb_per_s: bytes / elapsed / 1e6,
    req_per_s: completed / elapsed,
    client_cpu_s: (load.user + load.system) / 1e6,
    timed_out: false,
    answers,
    redirects,
    headers_ms: percentiles(headers),
    ttfb_ms: percentiles(ttfb),
    total_ms: percentiles(total),
  }) + "\n",
);
// Abandoned responses may hold sockets open; the numbers are out.
process.exit(0);
