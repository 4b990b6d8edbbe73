// What a target process costs, read from /proc: resident memory and CPU time of the process and
// its descendants (nginx serves from worker processes, so the whole tree counts), and how busy
// the machine was outside the benchmark (the machine is shared: other tenants' load is noise).
import { execFileSync, spawnSync } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";

const CLOCK_TICKS = (() => {
  try {
    return Number(execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).trim()) || 100;
  } catch {
    return 100;
  }
})();

interface Stat {
  ppid: number;
  /** utime + stime, in seconds */
  cpu: number;
  /** stime alone: time in the kernel on the process's behalf (syscalls: reads, socket writes) */
  sys: number;
}

function readStat(pid: number): Stat | undefined {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, "utf8");
  } catch {
    return undefined;
  }
  // The command name (field 2) may contain spaces and parentheses: split after its last ")".
  const fields = text.slice(text.lastIndexOf(")") + 2).split(" ");
  // fields[0] is field 3 (state): ppid is field 4, utime 14, stime 15.
  const ppid = Number(fields[1]);
  const sys = Number(fields[12]) / CLOCK_TICKS;
  const cpu = Number(fields[11]) / CLOCK_TICKS + sys;
  return { ppid, cpu, sys };
}

/** The pid and all its descendants alive now. */
export function processTree(root: number): number[] {
  const children = new Map<number, number[]>();
  for (const name of readdirSync("/proc")) {
    const pid = Number(name);
    if (!Number.isInteger(pid)) continue;
    const st = readStat(pid);
    if (st === undefined) continue;
    const list = children.get(st.ppid) ?? [];
    list.push(pid);
    children.set(st.ppid, list);
  }
  const out: number[] = [];
  const queue = [root];
  while (queue.length > 0) {
    const pid = queue.shift()!;
    out.push(pid);
    queue.push(...(children.get(pid) ?? []));
  }
  return out;
}

/** utime + stime of these processes, in seconds (the processes' own, not reaped children's). */
export function cpuSeconds(pids: number[]): number {
  return pids.reduce((sum, pid) => sum + (readStat(pid)?.cpu ?? 0), 0);
}

/** Sum of VmRSS of these processes, in bytes. */
export function rssBytes(pids: number[]): number {
  let total = 0;
  for (const pid of pids) {
    try {
      const m = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
      if (m) total += Number(m[1]) * 1024;
    } catch {
      // exited
    }
  }
  return total;
}

/** Samples the resident memory of a process tree every `intervalMs` and keeps the peak. */
export class RssSampler {
  private peak = 0;
  private timer: NodeJS.Timeout | undefined;
  private readonly pids: number[];

  constructor(root: number, intervalMs = 50) {
    // The tree is fixed for the length of a figure (nginx forks its workers at start).
    this.pids = processTree(root);
    this.sample();
    this.timer = setInterval(() => this.sample(), intervalMs);
  }

  private sample(): void {
    this.peak = Math.max(this.peak, rssBytes(this.pids));
  }

  /** Stops sampling; returns the peak in bytes. */
  stop(): number {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    this.sample();
    return this.peak;
  }
}

/** CPU time of a process tree over a span: call done() at its end. */
export function cpuMeter(root: number): { done(): { cpu: number; sys: number } } {
  const pids = processTree(root);
  const sysSeconds = () => pids.reduce((sum, pid) => sum + (readStat(pid)?.sys ?? 0), 0);
  const before = cpuSeconds(pids);
  const sysBefore = sysSeconds();
  return { done: () => ({ cpu: cpuSeconds(pids) - before, sys: sysSeconds() - sysBefore }) };
}

function systemTicks(): { busy: number; total: number } {
  const line = readFileSync("/proc/stat", "utf8").split("\n", 1)[0] ?? "";
  const v = line.trim().split(/\s+/).slice(1).map(Number);
  // user nice system idle iowait irq softirq steal ...
  const idle = (v[3] ?? 0) + (v[4] ?? 0);
  const total = v.slice(0, 8).reduce((a, b) => a + b, 0);
  return { busy: total - idle, total };
}

/** CPU seconds the whole machine has been busy since boot (all cores, idle and iowait excluded). */
export function machineBusySeconds(): number {
  return systemTicks().busy / CLOCK_TICKS;
}

/**
 * Cores busy across the machine over `ms` while the benchmark itself is idle: the load that other
 * tenants put on the machine. A repetition measured right after a high figure here is noise.
 */
export async function backgroundCores(ms = 500): Promise<number> {
  // Flush first: the page cache writeback of the fills just done would count as someone else's load.
  spawnSync("sync");
  const a = systemTicks();
  await new Promise((r) => setTimeout(r, ms));
  const b = systemTicks();
  return (b.busy - a.busy) / CLOCK_TICKS / (ms / 1000);
}
