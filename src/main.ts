#!/usr/bin/env node
import cluster from "node:cluster";
import { realpathSync } from "node:fs";
import { pathToFileURL } from "node:url";
import { setFlagsFromString } from "node:v8";
import { Command } from "commander";
import { loadConfig } from "./config/load.ts";
import { ConfigError } from "./config/validate.ts";
import { redact } from "./config/redact.ts";
import type { Config } from "./config/schema.ts";
import { resolveWorkers } from "./cluster/cpus.ts";
import { registerCommands } from "./cli/index.ts";
import { checkFilesReadable } from "./config/files.ts";
import type { Running } from "./start.ts";

// The program: the command line, and `serve`, which becomes a single process, a cluster's
// primary or one of its workers. What each of those needs is loaded when it is chosen
// (import()), so the primary stays small: it serves no request (cluster/primary.ts).

function configOrExit(): Config {
  try {
    return loadConfig().config;
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`regmirror: invalid configuration:\n  ${err.problems.join("\n  ")}\n`);
      process.exit(2);
    }
    throw err;
  }
}

async function serve(): Promise<void> {
  const config = configOrExit();
  // A replica of a cluster is one process: it scales out with replicas (schema.ts).
  const count = config.cluster.redis ? 1 : resolveWorkers(config.workers);
  if (cluster.isPrimary && count > 1) {
    try {
      // Checked here, once: a worker that cannot read them would only die at start.
      checkFilesReadable(config);
    } catch (err) {
      if (!(err instanceof ConfigError)) throw err;
      process.stderr.write(`regmirror: invalid configuration:\n  ${err.problems.join("\n  ")}\n`);
      process.exit(2);
    }
    const [{ runPrimary }, { createLogger }] = await Promise.all([
      import("./cluster/primary.ts"),
      import("./log.ts"),
    ]);
    const log = createLogger(config.log.level, config.log.format, { worker: "primary" });
    return runPrimary(config, count, log);
  }
  // undici's HTTP parser is WebAssembly (llhttp). V8 tiers it up to TurboFan once it is hot,
  // which costs each serving process 0.3–0.5 CPU-seconds on a helper thread during its first
  // big fills (a cold pull of 4 × 64 MiB: a sixth of the CPU with one process, twice that with
  // two workers) — and buys nothing: a body is parsed in one span per read, the parser's own
  // code was 0.2 % of the main thread left in Liftoff. Set before the first upstream request,
  // which is when undici compiles the module.
  setFlagsFromString("--liftoff-only");
  const [{ startMirror }, { workerHello }] = await Promise.all([
    import("./start.ts"),
    import("./cluster/channel.ts"),
  ]);
  let running: Running;
  try {
    running = cluster.isWorker
      ? await startMirror(config, { workers: count, tokenKey: (await workerHello()).tokenKey })
      : await startMirror(config);
    if (cluster.isWorker) process.send!({ regmirrorWorker: "listening" });
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

function main(argv: string[]): void {
  const program = new Command()
    // A script can tell a usage error (2) from a failed operation (1).
    .exitOverride((e) => process.exit(e.exitCode === 0 ? 0 : 2))
    .name("regmirror")
    .description("A pull-through caching mirror for container registries")
    .option("-c, --config <file>", "config file (default: mirror.yml, or $REGMIRROR_CONFIG)")
    .hook("preAction", (cmd) => {
      const file = cmd.opts<{ config?: string }>().config;
      if (file) process.env.REGMIRROR_CONFIG = file;
    });
  program.command("serve", { isDefault: true }).description("run the mirror").action(serve);
  const config = program.command("config").description("configuration tools");
  config
    .command("check")
    .description("validate the configuration and print the effective settings")
    .action(() => {
      const shown = redact(configOrExit(), "", "(set)");
      process.stdout.write(JSON.stringify(shown, null, 2) + "\n");
    });
  registerCommands(
    program,
    () => configOrExit(),
    async (c) => (await import("./start.ts")).startMirror(c, { processMetrics: false }),
  );
  program.parse(argv);
}

// Run only as a program (the bin, `tsx src/main.ts`), not when a test imports this file.
const entry = process.argv[1];
if (entry && import.meta.url === pathToFileURL(realpathSync(entry)).href) main(process.argv);
