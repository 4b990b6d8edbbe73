import type { StorageDriver } from "./driver.ts";
import { LAST_READ } from "./keys.ts";

// When each blob was last read, kept in one object beside the content (keys.ts). Eviction
// orders blobs by it, and `purge --older-than`, `gc` and `ls` read it. Only the eviction index
// writes it (one per mirror: the single process, or the primary of the workers), about once a
// minute: recency needs minutes, not milliseconds, and S3 has no cheap way to touch an object.
// A blob with no entry counts as read when it was written.

interface Saved {
  /** digest hex → last read, in seconds since the epoch (smaller than milliseconds). */
  reads: Record<string, number>;
}

/** The saved reads, in ms since the epoch; empty when there are none or the object is torn. */
export async function loadLastRead(driver: StorageDriver): Promise<Map<string, number>> {
  const bytes = await driver.get(LAST_READ);
  const out = new Map<string, number>();
  if (!bytes) return out;
  let doc: Partial<Saved> | null;
  try {
    doc = JSON.parse(bytes.toString("utf8")) as Partial<Saved> | null;
  } catch {
    return out;
  }
  for (const [hex, s] of Object.entries(doc?.reads ?? {})) if (typeof s === "number") out.set(hex, s * 1000);
  return out;
}

export async function saveLastRead(driver: StorageDriver, reads: Iterable<[string, number]>): Promise<void> {
  const doc: Saved = { reads: {} };
  for (const [hex, ms] of reads) doc.reads[hex] = Math.round(ms / 1000);
  await driver.put(LAST_READ, JSON.stringify(doc));
}
