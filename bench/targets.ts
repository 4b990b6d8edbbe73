// The servers under test, each a separate process with a fresh, empty cache of its own, so that
// its memory and CPU can be read from /proc and a figure never measures the benchmark itself.
// This file launches any of them and waits until it answers; regmirror's command is here, the
// peers' configs are in peers.ts.
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { closeSync, copyFileSync, existsSync, mkdirSync, openSync, readFileSync } from "node:fs";
import { writeFile } from "node:fs/promises";
import { get } from "node:http";
import { join } from "node:path";
import { AddrInUseError, retryOnAddrInUse } from "../test/fixtures/ports.ts";
import { makeTempDir, removeTempDir, stopGroup, trackGroup } from "./cleanup.ts";
import { distributionCommand, nginxCommand } from "./peers.ts";

export type TargetKind = "regmirror" | "distribution" | "nginx";

export interface TargetSpec {
  /** The column name in the report, e.g. "regmirror" or "regmirror(info)". */
  name: string;
  kind: TargetKind;
  /** regmirror only: its log level (per-request lines are at info). Default warn. */
  logLevel?: "warn" | "info";
  /**
   * regmirror only: environment of this column alone, applied over `--env`, e.g.
   * REGMIRROR_WORKERS=1 for the single-process column next to the default (workers=auto).
   */
  env?: Record<string, string>;
  /**
   * regmirror only: more environment, computed anew at every start of this column, e.g. an S3
   * column's own fresh bucket, so that each cold figure starts really cold (bench/s3.ts).
   */
  freshEnv?: () => Promise<Record<string, string>>;
  /**
   * Processes serving this column's storage (the S3 server's RGW and OSD): their CPU is reported
   * apart from the target's, and is not counted as other tenants' noise.
   */
  storagePids?: number[];
  /**
   * Which client measures the warm blob figures: loadgen (default), or "follow", the Node client
   * that follows a 307 to the bucket (bench/follow-client.ts), for a column that redirects.
   */
  blobClient?: "loadgen" | "follow";
}

export interface Target {
  name: string;
  kind: TargetKind;
  port: number;
  url: string;
  /**
   * The process whose tree is measured: regmirror's node (with workers > 1 the cluster primary,
   * whose children are the workers), distribution, nginx's master.
   */
  pid: number;
  /** The target's cache (or storage) directory. */
  cacheDir: string;
  /** Milliseconds from spawn until /v2/ answered 200. */
  startMs: number;
  /**
   * Undefined while the process runs as it should. Once it has exited on its own (a crash), says
   * how, and where its log was kept (bench/out/logs/): the temp dir goes, the evidence stays.
   */
  died(): string | undefined;
  stop(): Promise<void>;
  /** From the spec: see TargetSpec. */
  storagePids?: number[];
  blobClient?: "loadgen" | "follow";
}

/** How regmirror is run: the compiled build when it compiles, else through tsx. */
export interface RegmirrorCommand {
  args: string[];
  /** "dist" or "tsx", for the report. */
  mode: "dist" | "tsx";
}

export const REPO_ROOT = new URL("..", import.meta.url).pathname;
const SETPRIV = "/usr/bin/setpriv";
const LOG_DIR = join(REPO_ROOT, "bench/out/logs");

/** `npm run build`; on failure (others may be mid-edit in src/) falls back to running src via tsx. */
export function regmirrorCommand(): RegmirrorCommand {
  const build = spawnSync("npm", ["run", "--silent", "build"], { cwd: REPO_ROOT, encoding: "utf8" });
  if (build.status === 0) return { args: [join(REPO_ROOT, "dist/main.js"), "serve"], mode: "dist" };
  process.stderr.write(
    `bench: npm run build failed; running regmirror from src/ through tsx instead:\n${(build.stdout + build.stderr).trim().slice(0, 1500)}\n`,
  );
  return { args: ["--import", "tsx", join(REPO_ROOT, "src/main.ts"), "serve"], mode: "tsx" };
}

export interface LaunchOptions {
  upstreamUrl: string;
  regmirror: RegmirrorCommand;
  /** Use this cache dir instead of a fresh one (start-up figure); it is then not removed. */
  cacheDir?: string;
  /** Extra environment for regmirror (`--env NAME=VALUE`), e.g. to compare a switch on and off. */
  env?: Record<string, string>;
  /** Extra node flags for regmirror, e.g. --cpu-prof. */
  nodeFlags?: string[];
  /** How long to wait for /v2/ (default 30 s). */
  readyTimeoutMs?: number;
}

export async function startTarget(spec: TargetSpec, opts: LaunchOptions): Promise<Target> {
  const dir = await makeTempDir(spec.kind);
  try {
    return await retryOnAddrInUse((port) => launch(spec, opts, dir, port));
  } catch (err) {
    await removeTempDir(dir);
    throw err;
  }
}

interface Command {
  cmd: string;
  args: string[];
  env?: NodeJS.ProcessEnv;
}

async function commandFor(
  spec: TargetSpec,
  opts: LaunchOptions,
  dir: string,
  port: number,
): Promise<Command> {
  const cacheDir = opts.cacheDir ?? join(dir, "cache");
  switch (spec.kind) {
    case "regmirror": {
      // Its own (empty) config file: the working tree's mirror.yml may change while others edit
      // it mid-run, and a bench run must not depend on it. Defaults plus the variables below.
      const config = join(dir, "regmirror.yml");
      await writeFile(config, "# defaults; bench/targets.ts sets the rest with REGMIRROR_* variables\n");
      const fresh = spec.freshEnv ? await spec.freshEnv() : {};
      return {
        cmd: process.execPath,
        args: [...(opts.nodeFlags ?? []), ...opts.regmirror.args],
        env: {
          // The caller's own REGMIRROR_* settings (or the tests' REGMIRROR_TEST_LOG) stay out.
          ...Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("REGMIRROR_"))),
          REGMIRROR_CONFIG: config,
          REGMIRROR_LISTEN: `127.0.0.1:${port}`,
          REGMIRROR_UPSTREAM: opts.upstreamUrl,
          REGMIRROR_CACHE_DIR: cacheDir,
          REGMIRROR_LOG_LEVEL: spec.logLevel ?? "warn",
          ...opts.env,
          ...spec.env,
          ...fresh,
        },
      };
    }
    case "distribution":
      return distributionCommand(dir, cacheDir, port, opts.upstreamUrl);
    case "nginx":
      return nginxCommand(dir, cacheDir, port, opts.upstreamUrl);
  }
}

async function launch(spec: TargetSpec, opts: LaunchOptions, dir: string, port: number): Promise<Target> {
  const command = await commandFor(spec, opts, dir, port);
  const logPath = join(dir, "server.log");
  const logFd = openSync(logPath, "a");
  const [cmd, args] = existsSync(SETPRIV)
    ? [SETPRIV, ["--pdeathsig", "SIGKILL", command.cmd, ...command.args]]
    : [command.cmd, command.args];
  const t0 = performance.now();
  // setpriv execs the server, so child.pid is the server's own pid.
  const child = spawn(cmd, args, {
    cwd: REPO_ROOT,
    env: command.env ?? process.env,
    stdio: ["ignore", logFd, logFd],
    detached: true,
  });
  closeSync(logFd);
  trackGroup(child);
  try {
    await waitReady(child, port, logPath, opts.readyTimeoutMs ?? 30_000);
  } catch (err) {
    await stopGroup(child, 1000);
    throw err;
  }
  const startMs = performance.now() - t0;
  const cacheDir = opts.cacheDir ?? join(dir, "cache");
  let stopping = false;
  let death: string | undefined;
  child.once("exit", (code, signal) => {
    if (stopping) return;
    mkdirSync(LOG_DIR, { recursive: true });
    const kept = join(LOG_DIR, `${spec.name}-${new Date().toISOString().replace(/[:.]/g, "-")}.log`);
    copyFileSync(logPath, kept);
    const tail = readFileSync(logPath, "utf8").trim().split("\n").slice(-5).join(" | ");
    death = `${spec.name} exited on its own (${signal ?? `code ${code}`}); log kept in ${kept}; last lines: ${tail}`;
  });
  return {
    name: spec.name,
    kind: spec.kind,
    port,
    url: `http://127.0.0.1:${port}`,
    pid: child.pid!,
    cacheDir,
    startMs,
    died: () => death,
    storagePids: spec.storagePids,
    blobClient: spec.blobClient,
    async stop() {
      stopping = true;
      await stopGroup(child, 10_000);
      await removeTempDir(dir);
    },
  };
}

function probe(port: number): Promise<number> {
  return new Promise((resolve) => {
    const req = get({ host: "127.0.0.1", port, path: "/v2/", agent: false, timeout: 1000 }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    req.on("timeout", () => req.destroy());
    req.on("error", () => resolve(0));
  });
}

/** Polls GET /v2/ every 5 ms until it answers 200; the start-up figure depends on this being tight. */
export async function waitReady(
  child: ChildProcess,
  port: number,
  logPath: string,
  timeoutMs: number,
): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (performance.now() < deadline) {
    if (child.exitCode !== null || child.signalCode !== null) {
      const log = readFileSync(logPath, "utf8").slice(-3000);
      if (/address already in use|EADDRINUSE/i.test(log)) throw new AddrInUseError(port);
      throw new Error(`target exited during start (${child.exitCode ?? child.signalCode}); log:\n${log}`);
    }
    if ((await probe(port)) === 200) return;
    await new Promise((r) => setTimeout(r, 5));
  }
  throw new Error(`target on port ${port} did not answer GET /v2/ within ${timeoutMs} ms; log in ${logPath}`);
}
