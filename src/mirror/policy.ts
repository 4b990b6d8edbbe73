import { accepts } from "../oci/media-types.ts";
import type { TagEntry, TagRecord } from "../storage/manifest-store.ts";

// Tag freshness, pure: what to do with a tag request given what we know and the clock.

export type TagDecision =
  | { action: "fetch" } // nothing usable cached: GET from the upstream
  | { action: "serve"; entry: TagEntry } // fresh: answer from cache
  | { action: "revalidate"; entry: TagEntry; staleUntil: number }; // ask the upstream (HEAD); on outage serve until staleUntil

export function decideTag(
  rec: TagRecord | undefined,
  accept: readonly string[],
  now: number,
  ttlMs: number,
  maxStaleMs: number,
): TagDecision {
  const entry = rec?.entries.find((e) => accepts(accept, e.mediaType));
  if (!entry) return { action: "fetch" };
  if (now - entry.checkedAt < ttlMs) return { action: "serve", entry };
  return { action: "revalidate", entry, staleUntil: entry.checkedAt + ttlMs + maxStaleMs };
}

/** A stable key for "the same question" about a tag: same tag, same acceptable media types. */
export function acceptKey(accept: readonly string[]): string {
  return [...accept].sort().join(",");
}
