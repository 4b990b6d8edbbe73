// Everything the benchmark starts or creates is registered here, so that it is all taken down on
// every way out: a normal end, an error, Ctrl-C or SIGTERM. Children run in their own process
// groups (spawned detached), so killing the group also takes nginx's workers; they are also
// started under `setpriv --pdeathsig SIGKILL` where available, so that even a SIGKILL of the
// benchmark (which runs no handler at all) takes the main child process with it.
import type { ChildProcess } from "node:child_process";
import { rmSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";

const groups = new Set<ChildProcess>();
const dirs = new Set<string>();
let installed = false;

/** Kills whatever is still registered; synchronous, because it also runs from the "exit" event. */
function killAllNow(): void {
  for (const child of groups) {
    if (child.pid !== undefined && child.exitCode === null && child.signalCode === null) {
      try {
        process.kill(-child.pid, "SIGKILL");
      } catch {
        // the group is already gone
      }
    }
  }
  groups.clear();
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
  dirs.clear();
}

/** Installs the exit and signal handlers once. A signal exits with 128 + its number. */
export function installCleanup(): void {
  if (installed) return;
  installed = true;
  // "exit" handlers run on process.exit() and on a normal end; the upstream fixture has its own.
  process.on("exit", killAllNow);
  const onSignal = (signal: NodeJS.Signals, code: number) => {
    process.stderr.write(`\nbench: ${signal}, stopping everything it started\n`);
    process.exit(code);
  };
  process.once("SIGINT", () => onSignal("SIGINT", 130));
  process.once("SIGTERM", () => onSignal("SIGTERM", 143));
}

/** Registers a child spawned with `detached: true` (it leads its own process group). */
export function trackGroup(child: ChildProcess): void {
  groups.add(child);
  child.once("exit", () => groups.delete(child));
}

/** Stops a tracked group: SIGTERM, then SIGKILL after `graceMs`. Resolves once the leader is gone. */
export async function stopGroup(child: ChildProcess, graceMs = 5000): Promise<void> {
  const pid = child.pid;
  if (pid === undefined || child.exitCode !== null || child.signalCode !== null) {
    groups.delete(child);
    return;
  }
  const gone = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  const signal = (s: NodeJS.Signals) => {
    try {
      process.kill(-pid, s);
    } catch {
      // already gone
    }
  };
  signal("SIGTERM");
  const timer = setTimeout(() => signal("SIGKILL"), graceMs);
  await gone;
  clearTimeout(timer);
  // nginx's workers may outlive their master by a moment; the group kill makes sure.
  signal("SIGKILL");
  groups.delete(child);
}

/** A fresh temp dir, removed at exit unless removed earlier with removeTempDir. */
export async function makeTempDir(prefix: string): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), `regmirror-bench-${prefix}-`));
  dirs.add(dir);
  return dir;
}

export async function removeTempDir(dir: string): Promise<void> {
  await rm(dir, { recursive: true, force: true });
  dirs.delete(dir);
}
