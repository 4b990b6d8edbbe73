import { mkdir, open, rename, rm } from "node:fs/promises";
import { randomBytes } from "node:crypto";
import { dirname, join } from "node:path";

/** A fresh temp file name in `tmpDir`; never reused, so concurrent writers cannot collide. */
export function tempName(tmpDir: string): string {
  return join(tmpDir, `${Date.now().toString(36)}-${randomBytes(8).toString("hex")}`);
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
