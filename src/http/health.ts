import { randomBytes } from "node:crypto";
import { statfs, unlink, writeFile } from "node:fs/promises";
import { join } from "node:path";

// Readiness, for load balancers and Kubernetes: can this instance do its job right now? It can
// when it can write fills to its cache directory (and has room), reach its storage (the bucket,
// with the s3 driver), and either reach its upstreams or serve stale tags for them. Liveness (/healthz) is only "the process answers".

export interface ReadinessDeps {
  tmpDir: string;
  minFreeBytes: number;
  /** Serve-stale is on (tag.maxStale > 0): an unreachable upstream does not make us unready. */
  staleServing: boolean;
  /** Why the storage cannot be used (StorageDriver.problem); undefined when it can. */
  storageProblem: () => Promise<string | undefined>;
  /** Conditions that degrade the mirror but leave it ready (a cluster without Redis): name → reason. */
  notes?: () => Record<string, string | undefined>;
  /** Upstreams whose last answer was an outage. */
  downUpstreams: () => Promise<string[]>;
}

export interface Readiness {
  ready: boolean;
  checks: Record<string, { ok: boolean; detail?: string }>;
}

export async function readiness(deps: ReadinessDeps): Promise<Readiness> {
  const checks: Readiness["checks"] = {};
  const probe = join(deps.tmpDir, `readyz-${randomBytes(4).toString("hex")}`);
  try {
    await writeFile(probe, "ok");
    await unlink(probe);
    checks.cacheWritable = { ok: true };
  } catch (err) {
    checks.cacheWritable = { ok: false, detail: (err as Error).message };
  }
  try {
    const fs = await statfs(deps.tmpDir);
    const free = fs.bavail * fs.bsize;
    checks.freeSpace =
      free >= deps.minFreeBytes
        ? { ok: true }
        : { ok: false, detail: `${free} bytes free, below ${deps.minFreeBytes}` };
  } catch (err) {
    checks.freeSpace = { ok: false, detail: (err as Error).message };
  }
  const problem = await deps.storageProblem().catch((err: Error) => err.message);
  checks.storage = problem === undefined ? { ok: true } : { ok: false, detail: problem };
  for (const [name, detail] of Object.entries(deps.notes?.() ?? {}))
    checks[name] = detail === undefined ? { ok: true } : { ok: true, detail };
  const down = await deps.downUpstreams();
  checks.upstreams =
    down.length === 0
      ? { ok: true }
      : {
          ok: deps.staleServing,
          detail: `unreachable: ${down.join(", ")}${deps.staleServing ? " (serving stale)" : ""}`,
        };
  return { ready: Object.values(checks).every((c) => c.ok), checks };
}
