// Runs bench/follow-client.ts, the redirect-following client (see there for why and what it
// measures), as a process of its own, so that its CPU is the client's and not the benchmark's.
// It is started and loaded first (tsx and undici take a moment), then told to go: the measured
// window holds the load alone, as it does with loadgen.
import { spawn } from "node:child_process";
import { join } from "node:path";
import type { LoadResult } from "./loadgen.ts";
import { REPO_ROOT } from "./targets.ts";

export interface FollowResult extends LoadResult {
  /** The mirror's answers (finished or not) and how many were a 307 to the bucket. */
  answers: number;
  redirects: number;
}

export interface FollowClient {
  /** Starts the load; resolves with its figures once the duration is over. */
  go(): Promise<FollowResult>;
  kill(): void;
}

const SCRIPT = join(REPO_ROOT, "bench/follow-client.ts");

export async function startFollowClient(opts: {
  port: number;
  conns: number;
  durationS: number;
  paths: string[];
}): Promise<FollowClient> {
  const args = ["--import", "tsx", SCRIPT, "-p", String(opts.port), "-c", String(opts.conns)];
  args.push("-d", String(opts.durationS), ...opts.paths);
  const child = spawn(process.execPath, args, { cwd: REPO_ROOT, stdio: ["pipe", "pipe", "pipe"] });
  let stdout = "";
  let stderr = "";
  child.stdout.setEncoding("utf8").on("data", (d: string) => (stdout += d));
  child.stderr.setEncoding("utf8").on("data", (d: string) => (stderr = (stderr + d).slice(-4000)));
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  const kill = () => child.kill("SIGKILL");
  const deadline = (ms: number, what: string) => {
    const timer = setTimeout(() => {
      kill();
      process.stderr.write(`bench: follow-client ${what} after ${ms} ms; killed\n`);
    }, ms);
    return () => clearTimeout(timer);
  };
  const cancel = deadline(30_000, "not ready");
  await new Promise<void>((resolve, reject) => {
    const check = () => {
      if (stdout.includes("ready\n")) resolve();
    };
    child.stdout.on("data", check);
    void exited.then((code) => reject(new Error(`follow-client exited (${code}) before ready: ${stderr}`)));
    check();
  }).finally(cancel);
  return {
    kill,
    async go() {
      const done = deadline((opts.durationS + 30) * 1000, "not done");
      child.stdin.end("go\n");
      const code = await exited.finally(done);
      const last = stdout.trim().split("\n").pop() ?? "";
      if (code !== 0) throw new Error(`follow-client failed (exit ${code}): ${stderr}`);
      const r = JSON.parse(last) as FollowResult;
      if (typeof r.mb_per_s !== "number" || typeof r.redirects !== "number")
        throw new Error(`unexpected follow-client output: ${last}`);
      return r;
    },
  };
}
