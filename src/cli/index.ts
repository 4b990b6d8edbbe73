import { existsSync } from "node:fs";
import { Command, Option, type CommanderError } from "commander";
import type { Config } from "../config/schema.ts";
import { routeRepo } from "../mirror/routing.ts";
import { openCache, type Cache } from "../storage/cache.ts";
import { basicAuth, duration, mirrorUrl, platforms } from "./args.ts";
import { describeError, EXIT_FAILED, EXIT_USAGE, UsageError } from "./errors.ts";
import { collectGarbage } from "../maintenance/gc.ts";
import { parseImageRef, type Platform } from "../maintenance/image-ref.ts";
import { listCache } from "../maintenance/ls.ts";
import { note } from "./output.ts";
import { printGc, printListing, printPurge, printVerify, printWarm } from "./print.ts";
import { purgeCache, type RepoResolver } from "../maintenance/purge.ts";
import { verifyCache } from "../maintenance/verify.ts";
import { createProgress } from "./warm-progress.ts";

// The operator's subcommands: warm, ls, purge, gc, verify. main.ts (the program) owns
// the program, `serve` and `config check`, and hands us the config loader; we call it only when
// a command needs the config, so `warm --mirror URL` works without a config file at all.
// Exit codes are those of errors.ts: 0 ok, 1 failed or found, 2 usage or config error. The
// operations return data (the admin API runs them too); print.ts shows it and picks the code.

const EXIT_CODES = `
Exit codes: 0 done, nothing wrong found; 1 failed, or found what it looks for (see docs/cli.md);
2 usage or configuration error. Results go to stdout, messages to stderr.`;

/** A mirror started inside this process on a free loopback port, for `warm --direct`. */
export type StartLocal = (config: Config) => Promise<{ url: string; close(): Promise<void> }>;

export function registerCommands(program: Command, loadConfig: () => Config, startLocal?: StartLocal): void {
  const cache = () => existingCache(loadConfig());

  sub(program, "warm")
    .description("pre-pull images into a running mirror's cache, through its registry API")
    .argument("<image...>", "alpine, library/alpine:3.20, ghcr.io/org/img:tag, name@sha256:...")
    .option(
      "--mirror <url>",
      "the mirror to warm (default: http://127.0.0.1:<listen port from config>)",
      mirrorUrl,
    )
    .option("--platform <os/arch[/variant]>", "only this platform of an index (repeatable)", platforms)
    .option("--all-platforms", "every platform of an index (the default)")
    .option(
      "--direct",
      "no running mirror needed: fill the configured cache.dir from the upstreams (stop the mirror using it first)",
    )
    .option("--user <name[:password]>", "log in to a mirror that has client authentication on")
    .option("--password-stdin", "read the password for --user from stdin")
    .option("--no-progress", "no progress bars, even on a terminal")
    .option("--json", "print the results as JSON")
    .action((images: string[], o: WarmFlags) =>
      run(async () => {
        if (o.platform !== undefined && o.allPlatforms)
          throw new UsageError("--platform and --all-platforms exclude each other");
        if (o.direct && o.mirror !== undefined)
          throw new UsageError("--direct and --mirror exclude each other");
        const refs = images.map(parseImageRef);
        const authorization = await basicAuth(o);
        const json = o.json === true;
        // --direct: the same pull path, through a private mirror on loopback that writes the
        // cache directory itself; no client authentication, no access lists in the way.
        const config = loadConfig();
        const local =
          o.direct && startLocal
            ? await startLocal({
                ...config,
                listen: { host: "127.0.0.1", port: 0 },
                tls: { cert: "", key: "", listen: { host: "127.0.0.1", port: 0 } },
                auth: { ...config.auth, htpasswd: "" },
                access: { allow: [], deny: [] },
                log: { level: "warn", format: "text" },
              })
            : undefined;
        // The private mirror must stop however warm ends, or the process never exits.
        try {
          // Loaded here: undici is a fifth of a process's memory, and only warm needs it (a
          // cluster's primary loads this file too, for the command line).
          const { warmImages } = await import("../maintenance/warm.ts");
          const report = await warmImages(refs, {
            mirror: local?.url ?? o.mirror ?? defaultMirrorUrl(config),
            maxManifestBytes: config.limits.maxManifestSize,
            platforms: o.platform,
            progress: createProgress(
              o.progress && process.stderr.isTTY === true,
              refs.map((r) => r.text),
              !json,
            ),
            ...(authorization !== undefined ? { authorization } : {}),
          });
          return printWarm(report, json);
        } finally {
          await local?.close();
        }
      }),
    );

  sub(program, "ls")
    .description("list cached repositories, their tags and sizes")
    .option("--json", "print the listing as JSON")
    .action((o: { json?: boolean }) =>
      run(async () => printListing(await listCache((await cache()).driver), o.json === true)),
    );

  sub(program, "purge")
    .description("remove a tag (REPO:TAG), a blob or manifest (DIGEST), a repository's tags, or old blobs")
    .argument("[ref]", "REPO:TAG, or a digest (sha256:... or REPO@sha256:...)")
    .option("--repo <name>", "remove every tag record of this repository")
    .option("--older-than <duration>", "remove blobs not read for this long (e.g. 30d, 12h)", duration)
    .option("--dry-run", "show what would be removed, remove nothing")
    .option("--json", "print what was removed as JSON")
    .action((ref: string | undefined, o: PurgeFlags) =>
      run(async () => {
        const config = loadConfig();
        const result = await purgeCache(await existingCache(config), resolverFor(config), {
          ...(ref !== undefined ? { ref } : {}),
          ...(o.repo !== undefined ? { repo: o.repo } : {}),
          ...(o.olderThan !== undefined ? { olderThanMs: o.olderThan } : {}),
          dryRun: o.dryRun === true,
        });
        return printPurge(result, o.json === true);
      }),
    );

  sub(program, "gc")
    .description(
      "remove blobs and manifests nothing cached refers to, and stale temp files; with hosted repositories, their untagged manifests and unreferenced blobs too",
    )
    .option("--dry-run", "show what would be removed, remove nothing")
    .addOption(
      new Option("--min-age <duration>", "spare anything written or read more recently than this")
        .argParser(duration)
        .default(3_600_000, "1h"),
    )
    .option("--keep-untagged", "keep every manifest, cached or hosted, tagged or not (pulls by digest)")
    .option(
      "--hosted-grace <duration>",
      "hosted repositories: spare anything written more recently than this (default: hosted.gcGrace)",
      duration,
    )
    .option("--json", "print what was removed as JSON")
    .action((o: GcFlags) =>
      run(async () => {
        const config = loadConfig();
        // Hosted content is collected only where hosted repositories are configured: content left
        // by a configuration since changed is not removed behind the operator's back.
        const hosted = config.hosted.repositories.length > 0;
        if (o.hostedGrace !== undefined && !hosted)
          throw new UsageError(
            "--hosted-grace: this configuration hosts no repositories (hosted.repositories)",
          );
        const result = await collectGarbage(await existingCache(config), {
          dryRun: o.dryRun === true,
          minAgeMs: o.minAge,
          keepUntagged: o.keepUntagged === true,
          ...(hosted ? { hostedGraceMs: o.hostedGrace ?? config.hosted.gcGrace } : {}),
        });
        return printGc(result, o.json === true);
      }),
    );

  sub(program, "verify")
    .description("re-hash every blob and manifest and remove the corrupt ones (exit 1 if any)")
    .option("--dry-run", "report corrupt files, remove nothing")
    .option("--json", "print the report as JSON")
    .action((o: { dryRun?: boolean; json?: boolean }) =>
      run(async () =>
        printVerify(await verifyCache(await cache(), { dryRun: o.dryRun === true }), o.json === true),
      ),
    );
}

interface WarmFlags {
  mirror?: string;
  direct?: boolean;
  user?: string;
  passwordStdin?: boolean;
  platform?: Platform[];
  allPlatforms?: boolean;
  progress: boolean;
  json?: boolean;
}
interface PurgeFlags {
  repo?: string;
  olderThan?: number;
  dryRun?: boolean;
  json?: boolean;
}
interface GcFlags {
  dryRun?: boolean;
  minAge: number;
  keepUntagged?: boolean;
  hostedGrace?: number;
  json?: boolean;
}

/** A subcommand whose usage errors exit 2 (commander's own default is 1, which means "failed" here). */
function sub(program: Command, name: string): Command {
  return program
    .command(name)
    .addHelpText("after", EXIT_CODES)
    .exitOverride((err: CommanderError) => process.exit(err.exitCode === 0 ? 0 : EXIT_USAGE));
}

/**
 * Runs an action and turns its outcome into the exit code. process.exitCode, not process.exit():
 * exiting at once could cut off stdout that a pipe has not taken yet.
 */
function run(action: () => Promise<number>): Promise<void> {
  // `regmirror ls | head` closes the pipe early: that is the reader's choice, not a failure.
  process.stdout.on("error", (err: NodeJS.ErrnoException) => {
    if (err.code === "EPIPE") process.exit(process.exitCode ?? 0);
    throw err;
  });
  return Promise.resolve()
    .then(action)
    .then(
      (code) => {
        process.exitCode = code;
      },
      (err: unknown) => {
        note(describeError(err));
        process.exitCode = err instanceof UsageError ? EXIT_USAGE : EXIT_FAILED;
      },
    );
}

/**
 * The cache the config names. On disk its directory must exist: listing or cleaning a directory
 * that is not there means cache.dir points somewhere else than the mirror's, and silence would
 * hide that. (With S3 the bucket answers for itself.)
 */
async function existingCache(config: Config): Promise<Cache> {
  if (config.storage.driver === "filesystem" && !existsSync(config.cache.dir)) {
    throw new UsageError(`the cache directory ${config.cache.dir} (cache.dir) does not exist`);
  }
  const cache = await openCache(config);
  // The replicas of a cluster hear of what this command removed through Redis.
  if (config.cluster.redis)
    cache.announce = async () => (await import("../cluster/replica.ts")).announceToCluster(config);
  return cache;
}

/** The mirror on this machine, at the port the config says it listens on. */
function defaultMirrorUrl(config: Config): string {
  const { host, port } = config.listen;
  const h = host === "0.0.0.0" || host === "" ? "127.0.0.1" : host === "::" ? "::1" : host;
  return `http://${h.includes(":") ? `[${h}]` : h}:${port}`;
}

/** Names are routed exactly as the mirror routes a request, so `purge alpine:3.20` finds docker.io/library/alpine. */
function resolverFor(config: Config): RepoResolver {
  const names = new Set([config.upstream.name, ...config.upstreams.map((u) => u.name)]);
  return (name) => routeRepo(names, config.upstream.name, undefined, name);
}
