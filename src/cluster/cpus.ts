import { readFileSync } from "node:fs";
import { availableParallelism } from "node:os";

// How many workers `workers: auto` means: the CPUs this process may run on (its affinity mask,
// which availableParallelism reads), lowered to the cgroup's CPU quota when there is one. A
// container limited to 1.5 CPUs on a 64-core host must not start 64 workers that fight over
// one and a half.

/** The cgroup v2 quota in CPUs (cpu.max "150000 100000" = 1.5), or undefined when unlimited. */
export function cgroupCpus(cpuMax: string | undefined): number | undefined {
  const [quota, period] = (cpuMax ?? "").trim().split(/\s+/);
  const q = Number(quota);
  const p = Number(period);
  if (!Number.isFinite(q) || !Number.isFinite(p) || q <= 0 || p <= 0) return undefined;
  return q / p;
}

function readCpuMax(): string | undefined {
  try {
    return readFileSync("/sys/fs/cgroup/cpu.max", "utf8");
  } catch {
    return undefined; // cgroup v1, or not Linux: the affinity mask is all we know
  }
}

export function resolveWorkers(setting: "auto" | number, cpuMax = readCpuMax()): number {
  if (setting !== "auto") return setting;
  const quota = cgroupCpus(cpuMax);
  const cpus = availableParallelism();
  return Math.max(1, quota === undefined ? cpus : Math.min(cpus, Math.ceil(quota)));
}
