import { setFlagsFromString } from "node:v8";
import { ConfigError } from "./config/errors.ts";
import type { Config } from "./config/schema.ts";
import type { StartOptions } from "./start.ts";

// A process that serves: a single process (main.ts) or one of a cluster's workers (worker.ts).
// It starts the mirror, and stays up until SIGTERM or SIGINT, reloading TLS on SIGHUP.

/** In a cluster worker: how many workers share the mirror, and the secret they share. */
export type ServeOptions = Pick<StartOptions, "workers" | "tokenKey">;

/** Resolves once the mirror listens; exits with 2 on a configuration it cannot use. */
export async function serveProcess(config: Config, opts: ServeOptions = {}): Promise<void> {
  // undici's HTTP parser is WebAssembly (llhttp). V8 tiers it up to TurboFan once it is hot,
  // which costs each serving process 0.3–0.5 CPU-seconds on a helper thread during its first
  // big fills (a cold pull of 4 × 64 MiB: a sixth of the CPU with one process, twice that with
  // two workers) — and buys nothing: a body is parsed in one span per read, the parser's own
  // code was 0.2 % of the main thread left in Liftoff. Set before the first upstream request,
  // which is when undici compiles the module.
  setFlagsFromString("--liftoff-only");
  const { startMirror } = await import("./start.ts");
  let running: Awaited<ReturnType<typeof startMirror>>;
  try {
    running = await startMirror(config, opts);
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    process.stderr.write(`regmirror: invalid configuration:\n  ${err.problems.join("\n  ")}\n`);
    process.exit(2);
  }
  // Every request path answers its own failures (a 500 and a log line). A promise that rejects
  // with no one to hear it is a lost error, not a broken process: say so, and keep serving
  // rather than drop every client's transfer. (An uncaught exception still ends the process:
  // after one, no state can be trusted.)
  process.on("unhandledRejection", (reason) => {
    const err = reason instanceof Error ? reason : new Error(String(reason));
    process.stderr.write(`regmirror: unhandled rejection: ${err.stack ?? err.message}\n`);
  });
  process.on("SIGHUP", () => {
    try {
      running.reloadTls();
    } catch (err) {
      process.stderr.write(
        `regmirror: TLS reload failed, keeping the old certificate: ${(err as Error).message}\n`,
      );
    }
  });
  let stopping = false;
  const stop = () => {
    if (stopping) return;
    stopping = true;
    void running.close().then(() => process.exit(0));
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
}
