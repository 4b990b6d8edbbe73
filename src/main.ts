#!/usr/bin/env node
import { realpathSync } from "node:fs";
import { pathToFileURL } from "node:url";
import { Command } from "commander";
import { loadConfig } from "./config/load.ts";
import { ConfigError } from "./config/errors.ts";
import { redact } from "./config/redact.ts";
import type { Config } from "./config/schema.ts";
import { resolveWorkers } from "./cluster/cpus.ts";
import { registerCommands } from "./cli/index.ts";
import { checkFilesReadable } from "./config/files.ts";
import { serveProcess } from "./serve.ts";

// The program: the command line, and `serve`, which becomes a single process or a cluster's
// primary (its workers start from worker.ts). What each needs is loaded when it is chosen
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
  if (count > 1) {
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
  return serveProcess(config);
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
