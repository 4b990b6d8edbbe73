// wrk (Debian's package) for the manifest figures: small responses, many requests, where wrk's
// 8 KiB reads do not matter and its latency histogram (--latency) gives p50/p99.
import { execFile } from "node:child_process";

export interface WrkResult {
  requests: number;
  req_per_s: number;
  p50_ms: number;
  p99_ms: number;
  /** Non-2xx/3xx responses plus socket errors (connect, read, write, timeout). */
  errors: number;
  /** wrk's own CPU seconds (user + system). */
  client_cpu_s: number;
}

export interface WrkOptions {
  url: string;
  conns: number;
  threads: number;
  /** wrk takes whole seconds. */
  durationS: number;
  headers?: string[];
}

const UNIT_MS: Record<string, number> = { us: 1e-3, ms: 1, s: 1000, m: 60_000 };

function durationMs(value: string, unit: string): number {
  const factor = UNIT_MS[unit];
  if (factor === undefined) throw new Error(`wrk: unknown time unit ${unit}`);
  return Number(value) * factor;
}

/** The shell builtin `times` prints the children's user and system time on its second line. */
function childCpu(out: string): number {
  const m = /^(\d+)m([\d.]+)s (\d+)m([\d.]+)s\s*$/gm;
  let last: RegExpExecArray | null = null;
  for (let x = m.exec(out); x !== null; x = m.exec(out)) last = x;
  if (!last) return 0;
  return Number(last[1]) * 60 + Number(last[2]) + Number(last[3]) * 60 + Number(last[4]);
}

export function parseWrk(out: string): WrkResult {
  const rps = /Requests\/sec:\s+([\d.]+)/.exec(out);
  const total = /(\d+) requests in/.exec(out);
  const p50 = /^\s+50%\s+([\d.]+)(us|ms|s|m)\s*$/m.exec(out);
  const p99 = /^\s+99%\s+([\d.]+)(us|ms|s|m)\s*$/m.exec(out);
  if (!rps || !total || !p50 || !p99) throw new Error(`cannot read wrk output:\n${out}`);
  let errors = 0;
  const non2xx = /Non-2xx or 3xx responses:\s+(\d+)/.exec(out);
  if (non2xx) errors += Number(non2xx[1]);
  const sock = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out);
  if (sock) errors += sock.slice(1).reduce((a, b) => a + Number(b), 0);
  return {
    requests: Number(total[1]),
    req_per_s: Number(rps[1]),
    p50_ms: durationMs(p50[1]!, p50[2]!),
    p99_ms: durationMs(p99[1]!, p99[2]!),
    errors,
    client_cpu_s: childCpu(out),
  };
}

export function runWrk(opts: WrkOptions): Promise<WrkResult> {
  const args = [
    "-t",
    String(opts.threads),
    "-c",
    String(opts.conns),
    "-d",
    `${opts.durationS}s`,
    "--latency",
  ];
  for (const h of opts.headers ?? []) args.push("-H", h);
  args.push(opts.url);
  return new Promise((resolve, reject) => {
    // Through bash, whose `times` then tells wrk's CPU use: the noise estimate needs it.
    const script = 'wrk "$@"; rc=$?; times; exit $rc';
    execFile(
      "bash",
      ["-c", script, "wrk", ...args],
      { timeout: (opts.durationS + 20) * 1000, killSignal: "SIGKILL" },
      (err, stdout, stderr) => {
        if (err) return reject(new Error(`wrk failed: ${err.message}\n${stderr}`));
        try {
          resolve(parseWrk(stdout));
        } catch (e) {
          reject(e instanceof Error ? e : new Error(String(e)));
        }
      },
    );
  });
}
