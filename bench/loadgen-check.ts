// Is the load generator the bottleneck? The same load (64 MiB blobs, N streams) from loadgen and
// from N parallel `curl -o /dev/null` loops against the same target: if curl got more, loadgen
// would be what limits the blob figures. Also reports loadgen's own CPU use.
import { execFile, spawnSync } from "node:child_process";
import type { Values } from "./figures-cold.ts";
import { runLoadgen } from "./loadgen.ts";
import type { Target } from "./targets.ts";

function curlLoops(
  url: string,
  streams: number,
  seconds: number,
): Promise<{ bytes: number; seconds: number }> {
  // Each loop fetches until the deadline; %{size_download} is the body size of each transfer.
  const script = `end=$(( $(date +%s%N) + ${Math.round(seconds * 1e9)} ))
for i in $(seq ${streams}); do
  ( while [ "$(date +%s%N)" -lt "$end" ]; do curl -s -o /dev/null -w '%{size_download}\\n' "$1"; done ) &
done
wait`;
  const t0 = performance.now();
  return new Promise((resolve, reject) => {
    execFile(
      "bash",
      ["-c", script, "curl-loops", url],
      { timeout: (seconds + 60) * 1000, maxBuffer: 1 << 24, killSignal: "SIGKILL" },
      (err, stdout) => {
        if (err) return reject(err);
        const bytes = stdout
          .trim()
          .split("\n")
          .reduce((s, l) => s + (Number(l) || 0), 0);
        resolve({ bytes, seconds: (performance.now() - t0) / 1000 });
      },
    );
  });
}

export function haveCurl(): boolean {
  return spawnSync("curl", ["--version"]).status === 0;
}

/**
 * curl's transfers are whole blobs, so its window is as long as its last transfer (longer than
 * `seconds`): it divides by the time it really took. loadgen counts only bytes inside its window.
 */
export async function checkLoadgen(
  target: Target,
  path: string,
  streams: number,
  seconds: number,
): Promise<Values> {
  const lg = await runLoadgen({ port: target.port, conns: streams, durationS: seconds, paths: [path] });
  const curl = await curlLoops(target.url + path, streams, seconds);
  return {
    loadgen_mb_per_s: lg.mb_per_s,
    loadgen_client_cores: lg.client_cpu_s / seconds,
    curl_mb_per_s: curl.bytes / curl.seconds / 1e6,
    streams,
  };
}
