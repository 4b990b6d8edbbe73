#!/usr/bin/env node
import { once } from "node:events";
import { realpathSync } from "node:fs";
import { pathToFileURL } from "node:url";
import { Command } from "commander";
import { loadConfig } from "./config/load.ts";
import { ConfigError } from "./config/validate.ts";
import type { Config } from "./config/schema.ts";
import { createLogger } from "./log.ts";
import { Metrics } from "./metrics/metrics.ts";
import { CachePaths } from "./storage/paths.ts";
import { BlobStore } from "./storage/blob-store.ts";
import { ManifestStore } from "./storage/manifest-store.ts";
import { UpstreamClient } from "./upstream/client.ts";
import { BlobService } from "./mirror/blobs.ts";
import { ManifestService } from "./mirror/manifests.ts";
import { createApp } from "./http/app.ts";

// The composition root: the one place that reads config and the environment, builds every
// part and wires them together with plain constructor arguments.

const MAX_MANIFEST_BYTES = 4 * 1024 * 1024;

export interface Running {
  url: string;
  close(): Promise<void>;
}

/** Starts a mirror from a validated config; used by `serve` and by the tests. */
export async function startMirror(config: Config, opts: { processMetrics?: boolean } = {}): Promise<Running> {
  const log = createLogger(config.log.level, config.log.format);
  const metrics = new Metrics({ processMetrics: opts.processMetrics });
  const paths = new CachePaths(config.cache.dir);
  const blobStore = new BlobStore(paths);
  await blobStore.init();
  const manifestStore = new ManifestStore(paths, config.cache.manifestMemory);
  const credentials = config.upstream.username
    ? { username: config.upstream.username, password: config.upstream.password }
    : undefined;
  const upstream = new UpstreamClient({
    url: config.upstream.url,
    credentials,
    concurrency: config.upstream.concurrency,
    timeoutMs: config.upstream.timeout,
    metrics,
  });
  const blobs = new BlobService({
    store: blobStore,
    upstream,
    metrics,
    log,
    fillTimeoutMs: config.cache.fillTimeout,
  });
  const manifests = new ManifestService({
    store: manifestStore,
    upstream,
    upstreamName: new URL(config.upstream.url).host,
    metrics,
    log,
    tagTtlMs: config.tag.ttl,
    maxStaleMs: config.tag.maxStale,
    maxManifestBytes: MAX_MANIFEST_BYTES,
  });
  const server = createApp({ blobs, manifests, metrics, log });
  server.listen(config.listen.port, config.listen.host);
  await once(server, "listening");
  const addr = server.address();
  const port = typeof addr === "object" && addr ? addr.port : config.listen.port;
  const host = config.listen.host.includes(":") ? `[${config.listen.host}]` : config.listen.host;
  const url = `http://${host === "0.0.0.0" || host === "[::]" ? "127.0.0.1" : host}:${port}`;
  log.info("regmirror listening", { url, upstream: config.upstream.url, cache: config.cache.dir });
  return {
    url,
    async close() {
      server.closeIdleConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeAllConnections();
      await upstream.close();
      log.close();
    },
  };
}

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
  const running = await startMirror(configOrExit());
  const stop = () => {
    void running.close().then(() => process.exit(0));
  };
  process.once("SIGTERM", stop);
  process.once("SIGINT", stop);
}

function main(argv: string[]): void {
  const program = new Command()
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
      const c = configOrExit();
      const shown = { ...c, upstream: { ...c.upstream, password: c.upstream.password ? "(set)" : "" } };
      process.stdout.write(JSON.stringify(shown, null, 2) + "\n");
    });
  program.parse(argv);
}

// Run only as a program (the bin, `tsx src/main.ts`), not when the tests import startMirror.
const entry = process.argv[1];
if (entry && import.meta.url === pathToFileURL(realpathSync(entry)).href) main(process.argv);
