// What a target process costs, read from /proc: resident memory and CPU time of the process and
// its descendants (nginx serves from worker processes, regmirror with `workers` > 1 from a cluster
// primary and its forked workers, so the whole tree counts), and how busy the machine was outside
// the benchmark (the machine is shared: other tenants' load is noise).
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
  /**
   * utime + stime, plus cutime + cstime: the time of children it has reaped. A worker that dies
   * and is replaced mid-figure leaves the tree, but its CPU time stays counted in its parent.
   */
  cpu: number;
  /** stime (+ cstime) alone: time in the kernel on the process's behalf (syscalls: reads, socket writes) */
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
  // fields[0] is field 3 (state): ppid is field 4, utime 14, stime 15, cutime 16, cstime 17.
  const ppid = Number(fields[1]);
  const sys = (Number(fields[12]) + Number(fields[14])) / CLOCK_TICKS;
  const cpu = (Number(fields[11]) + Number(fields[13])) / CLOCK_TICKS + sys;
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

/** CPU time of these processes (their own and their reaped children's), in seconds. */
export function cpuSeconds(pids: number[]): number {
  return pids.reduce((sum, pid) => sum + (readStat(pid)?.cpu ?? 0), 0);
}

/** Sum of VmRSS of these processes, in bytes. */
export function rssBytes(pids: number[]): number {
  return memory(pids).rss;
}

export interface TreeMemory {
  /** Sum of VmRSS: what each process's own figure says, shared pages counted once per process. */
  rss: number;
  /**
   * Sum of RssAnon plus the largest RssFile + RssShmem: pages mapped from files (the node or nginx
   * binary, its libraries) and shared memory counted once for the tree, as if every process mapped
   * the same ones, which for a primary and its forked workers they mostly do. An estimate of what
   * the tree takes from the machine; three node processes otherwise count node's ~45 MB thrice.
   */
  sharedOnce: number;
}

/** Resident memory of these processes, in bytes, counted both ways (TreeMemory). */
export function memory(pids: number[]): TreeMemory {
  let rss = 0;
  let anon = 0;
  let shared = 0;
  for (const pid of pids) {
    let text: string;
    try {
      text = readFileSync(`/proc/${pid}/status`, "utf8");
    } catch {
      continue; // exited
    }
    const kb = (field: string) =>
      Number(new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(text)?.[1] ?? 0) * 1024;
    rss += kb("VmRSS");
    anon += kb("RssAnon");
    shared = Math.max(shared, kb("RssFile") + kb("RssShmem"));
  }
  return { rss, sharedOnce: anon + shared };
}

/** Re-read the tree this often while sampling: a worker replaced mid-figure is then followed. */
const TREE_RESCAN_MS = 500;

/**
 * Samples the resident memory of a process tree every `intervalMs` and keeps the peak, and the
 * largest number of processes the tree had (regmirror with 2 workers: 3, nginx: master + workers).
 */
export class RssSampler {
  private peak = 0;
  private peakSharedOnce = 0;
  private maxProcs = 0;
  private timer: NodeJS.Timeout | undefined;
  private pids: number[];
  private scannedAt: number;

  constructor(
    private readonly root: number,
    intervalMs = 50,
  ) {
    // Walking all of /proc every 50 ms would cost more than reading a few status files, so the
    // tree itself is re-read every TREE_RESCAN_MS.
    this.pids = processTree(root);
    this.scannedAt = performance.now();
    this.sample();
    this.timer = setInterval(() => this.sample(), intervalMs);
  }

  private sample(): void {
    if (performance.now() - this.scannedAt >= TREE_RESCAN_MS) {
      this.pids = processTree(this.root);
      this.scannedAt = performance.now();
    }
    this.maxProcs = Math.max(this.maxProcs, this.pids.length);
    const m = memory(this.pids);
    this.peak = Math.max(this.peak, m.rss);
    this.peakSharedOnce = Math.max(this.peakSharedOnce, m.sharedOnce);
  }

  /** Stops sampling; returns the peak in bytes. */
  stop(): number {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    this.scannedAt = -Infinity;
    this.sample();
    return this.peak;
  }

  /** The peak of TreeMemory.sharedOnce in bytes (read after stop()). */
  get peakSharedOnceBytes(): number {
    return this.peakSharedOnce;
  }

  /** The most processes the tree had at one sample (read after stop()). */
  get processes(): number {
    return this.maxProcs;
  }
}

/**
 * CPU time of a process tree over a span: call done() at its end. The tree is read at both ends,
 * so a worker forked meanwhile counts from its start, and one that died meanwhile counts through
 * its parent's reaped-children time (readStat).
 */
export function cpuMeter(root: number): { done(): { cpu: number; sys: number } } {
  const sysSeconds = (pids: number[]) => pids.reduce((sum, pid) => sum + (readStat(pid)?.sys ?? 0), 0);
  const pids = processTree(root);
  const before = cpuSeconds(pids);
  const sysBefore = sysSeconds(pids);
  return {
    done: () => {
      const now = processTree(root);
      return { cpu: cpuSeconds(now) - before, sys: sysSeconds(now) - sysBefore };
    },
  };
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
