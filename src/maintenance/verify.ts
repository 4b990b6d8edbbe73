import { cacheChanged } from "../storage/generation.ts";
import pLimit from "p-limit";
import type { Cache } from "../storage/cache.ts";
import { contentObjects, hashObject, type ContentObject } from "../storage/cache-walk.ts";

// `regmirror verify`: re-hashes every blob and manifest and removes each whose sha256 is not its
// file name. The mirror only ever publishes verified files, so a mismatch means the disk (or
// someone) changed a file afterwards; removing it turns it into a miss, fetched again on demand.
// The command exits 1 when anything was corrupt, so a cron job or a probe can alert on it; this
// returns the findings and print.ts shows them.

/** Files hashed at once: enough to keep the disk busy while one chunk is being hashed. */
const CONCURRENCY = 4;

export interface VerifyOptions {
  dryRun: boolean;
}

export interface Corrupt {
  kind: ContentObject["kind"];
  digest: string;
  actual: string;
  bytes: number;
}

export interface VerifyResult {
  dryRun: boolean;
  checked: number;
  checkedBytes: number;
  corrupt: Corrupt[];
}

export async function verifyCache(cache: Cache, opts: VerifyOptions): Promise<VerifyResult> {
  const { driver } = cache;
  const files = [...(await contentObjects(driver, "blob")), ...(await contentObjects(driver, "manifest"))];
  const limit = pLimit(CONCURRENCY);
  const corrupt: Corrupt[] = [];
  let checked = 0;
  let bytes = 0;
  await Promise.all(
    files.map((f) =>
      limit(async () => {
        const actual = await hashObject(driver, f.key);
        // Gone meanwhile (eviction or a purge on a running mirror): nothing left to verify.
        if (actual === undefined) return;
        checked++;
        bytes += f.size;
        if (actual === f.hex) return;
        if (!opts.dryRun) await driver.delete(f.key);
        corrupt.push({ kind: f.kind, digest: `sha256:${f.hex}`, actual: `sha256:${actual}`, bytes: f.size });
      }),
    ),
  );
  corrupt.sort((a, b) => a.digest.localeCompare(b.digest));

  if (!opts.dryRun && corrupt.length > 0) await cacheChanged(cache);
  return { dryRun: opts.dryRun, checked, checkedBytes: bytes, corrupt };
}
