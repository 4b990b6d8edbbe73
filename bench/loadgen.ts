// Builds bench/loadgen.c (at bench time, with the system's cc) and runs it. See loadgen.c for
// why blob figures need a client in C and what it measures.
import { execFile, execFileSync } from "node:child_process";
import { existsSync, mkdirSync, statSync } from "node:fs";
import { join } from "node:path";
import { REPO_ROOT } from "./targets.ts";

export interface Percentiles {
  p50: number;
  p90: number;
  p99: number;
  max: number;
  min: number;
}

export interface LoadResult {
  conns: number;
  requests: number;
  errors: number;
  bytes: number;
  elapsed_s: number;
  mb_per_s: number;
  req_per_s: number;
  client_cpu_s: number;
  timed_out: boolean;
  headers_ms: Percentiles;
  ttfb_ms: Percentiles;
  total_ms: Percentiles;
}

export interface LoadOptions {
  port: number;
  /** Several ports instead (replicas): connection i goes to ports[i % ports.length]. */
  ports?: number[];
  conns: number;
  paths: string[];
  /** Stop after this many responses (exactly one of count and durationS). */
  count?: number;
  durationS?: number;
  /** Hard limit in count mode (default 120 s). */
  timeoutS?: number;
  headers?: string[];
}

const SOURCE = join(REPO_ROOT, "bench/loadgen.c");
export const OUT_DIR = join(REPO_ROOT, "bench/out");
const BINARY = join(OUT_DIR, "loadgen");

/** Compiles loadgen when the binary is missing or older than its source; returns its path. */
export function buildLoadgen(): string {
  mkdirSync(OUT_DIR, { recursive: true });
  if (!existsSync(BINARY) || statSync(BINARY).mtimeMs < statSync(SOURCE).mtimeMs) {
    execFileSync("cc", ["-O2", "-Wall", "-o", BINARY, SOURCE], { stdio: "inherit" });
  }
  return BINARY;
}

function isPercentiles(v: unknown): v is Percentiles {
  if (typeof v !== "object" || v === null) return false;
  const o = v as Record<string, unknown>;
  return ["p50", "p90", "p99", "max", "min"].every((k) => typeof o[k] === "number");
}

function parseResult(text: string): LoadResult {
  const v: unknown = JSON.parse(text);
  if (typeof v !== "object" || v === null) throw new Error(`loadgen printed no object: ${text}`);
  const o = v as Record<string, unknown>;
  const numbers = [
    "conns",
    "requests",
    "errors",
    "bytes",
    "elapsed_s",
    "mb_per_s",
    "req_per_s",
    "client_cpu_s",
  ];
  const ok =
    numbers.every((k) => typeof o[k] === "number") &&
    typeof o.timed_out === "boolean" &&
    isPercentiles(o.headers_ms) &&
    isPercentiles(o.ttfb_ms) &&
    isPercentiles(o.total_ms);
  if (!ok) throw new Error(`unexpected loadgen output: ${text}`);
  return v as LoadResult;
}

export function runLoadgen(opts: LoadOptions): Promise<LoadResult> {
  const args = ["-p", (opts.ports ?? [opts.port]).join(","), "-c", String(opts.conns)];
  if (opts.count !== undefined) args.push("-n", String(opts.count), "-t", String(opts.timeoutS ?? 120));
  else if (opts.durationS !== undefined) args.push("-d", String(opts.durationS));
  else throw new Error("runLoadgen needs count or durationS");
  for (const h of opts.headers ?? []) args.push("-H", h);
  args.push(...opts.paths);
  // Its own deadline plus slack: the benchmark never waits on a stuck client.
  const limitMs = ((opts.count !== undefined ? (opts.timeoutS ?? 120) : opts.durationS!) + 15) * 1000;
  return new Promise((resolve, reject) => {
    execFile(BINARY, args, { timeout: limitMs, killSignal: "SIGKILL" }, (err, stdout, stderr) => {
      if (err) return reject(new Error(`loadgen failed: ${err.message}\n${stderr}`));
      try {
        resolve(parseResult(stdout.trim()));
      } catch (e) {
        reject(e instanceof Error ? e : new Error(String(e)));
      }
    });
  });
}
