// Runs bench/follow-client.ts, the redirect-following client (see there for why and what it
// measures), as a process of its own, so that its CPU is the client's and not the benchmark's.
import { execFile } from "node:child_process";
import { join } from "node:path";
import type { LoadResult } from "./loadgen.ts";
import { REPO_ROOT } from "./targets.ts";

export interface FollowResult extends LoadResult {
  /** Answers that were a 307 to the bucket (the rest the mirror served itself). */
  redirects: number;
  /** The client's CPU during the load alone (client_cpu_s includes its start-up). */
  load_cpu_s: number;
}

const SCRIPT = join(REPO_ROOT, "bench/follow-client.ts");

export function runFollowClient(opts: {
  port: number;
  conns: number;
  durationS: number;
  paths: string[];
}): Promise<FollowResult> {
  const args = ["--import", "tsx", SCRIPT, "-p", String(opts.port), "-c", String(opts.conns)];
  args.push("-d", String(opts.durationS), ...opts.paths);
  return new Promise((resolve, reject) => {
    execFile(
      process.execPath,
      args,
      { cwd: REPO_ROOT, timeout: (opts.durationS + 30) * 1000, killSignal: "SIGKILL", maxBuffer: 1 << 20 },
      (err, stdout, stderr) => {
        if (err) return reject(new Error(`follow-client failed: ${err.message}\n${stderr.slice(-2000)}`));
        try {
          const r = JSON.parse(stdout.trim()) as FollowResult;
          if (typeof r.mb_per_s !== "number" || typeof r.redirects !== "number")
            throw new Error(`unexpected follow-client output: ${stdout}`);
          resolve(r);
        } catch (e) {
          reject(e instanceof Error ? e : new Error(String(e)));
        }
      },
    );
  });
}
