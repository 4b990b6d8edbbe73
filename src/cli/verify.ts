import pLimit from "p-limit";
import type { CachePaths } from "../storage/paths.ts";
import { contentFiles, hashFile, remove, type ContentFile } from "../storage/cache-walk.ts";
import { EXIT_FAILED, EXIT_OK } from "./errors.ts";
import { formatBytes, note, out, outJson, plural } from "./output.ts";

// `regmirror verify`: re-hashes every blob and manifest and removes each whose sha256 is not its
// file name. The mirror only ever publishes verified files, so a mismatch means the disk (or
// someone) changed a file afterwards; removing it turns it into a miss, fetched again on demand.
// Exits 1 when anything was corrupt, so a cron job or a probe can alert on it.

/** Files hashed at once: enough to keep the disk busy while one chunk is being hashed. */
const CONCURRENCY = 4;

export interface VerifyOptions {
  dryRun: boolean;
  json: boolean;
}

interface Corrupt {
  kind: ContentFile["kind"];
  digest: string;
  actual: string;
  bytes: number;
}

export async function verify(paths: CachePaths, opts: VerifyOptions): Promise<number> {
  const files = [...(await contentFiles(paths, "blob")), ...(await contentFiles(paths, "manifest"))];
  const limit = pLimit(CONCURRENCY);
  const corrupt: Corrupt[] = [];
  let checked = 0;
  let bytes = 0;
  await Promise.all(
    files.map((f) =>
      limit(async () => {
        const actual = await hashFile(f.path);
        // Gone meanwhile (eviction or a purge on a running mirror): nothing left to verify.
        if (actual === undefined) return;
        checked++;
        bytes += f.size;
        if (actual === f.hex) return;
        if (!opts.dryRun) await remove(f.path);
        corrupt.push({ kind: f.kind, digest: `sha256:${f.hex}`, actual: `sha256:${actual}`, bytes: f.size });
      }),
    ),
  );
  corrupt.sort((a, b) => a.digest.localeCompare(b.digest));

  if (opts.json) {
    outJson({ dryRun: opts.dryRun, checked, checkedBytes: bytes, corrupt });
  } else {
    const verb = opts.dryRun ? "found" : "removed";
    for (const c of corrupt) out(`corrupt ${c.kind} ${c.digest} (content hashes to ${c.actual}): ${verb}`);
    out(
      `verified ${plural(checked, "file")} (${formatBytes(bytes)}): ${plural(corrupt.length, "corrupt file")}`,
    );
  }
  if (corrupt.length > 0) {
    note(`${plural(corrupt.length, "corrupt file")} ${opts.dryRun ? "found" : "removed"}`);
    return EXIT_FAILED;
  }
  return EXIT_OK;
}
