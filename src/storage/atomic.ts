import { mkdir, open, rename, rm } from "node:fs/promises";
import { randomBytes } from "node:crypto";
import { dirname, join } from "node:path";

/**
 * A fresh temp file name in `tmpDir`; never reused, so concurrent writers cannot collide. It
 * starts with the writer's pid: when a worker dies, the primary removes exactly its debris
 * (tempOwner) and leaves the fills of the other workers alone.
 */
export function tempName(tmpDir: string): string {
  return join(tmpDir, `${process.pid}.${Date.now().toString(36)}-${randomBytes(8).toString("hex")}`);
}

/** The pid that made a temp file, from its name; undefined for a name tempName did not make. */
export function tempOwner(name: string): number | undefined {
  const m = /^(\d+)\./.exec(name);
  return m ? Number(m[1]) : undefined;
}

/**
 * Writes a small file so that readers see the old content or the new, never a torn one:
 * temp file, fsync, rename. Used for manifests and tag records.
 */
export async function writeFileAtomic(path: string, data: Buffer | string, tmpDir: string): Promise<void> {
  const tmp = tempName(tmpDir);
  const fh = await open(tmp, "w");
  try {
    await fh.writeFile(data);
    await fh.sync();
  } finally {
    await fh.close();
  }
  try {
    await mkdir(dirname(path), { recursive: true });
    await rename(tmp, path);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
}
