import { accepts } from "../oci/media-types.ts";
import type { TagEntry, TagRecord } from "../storage/manifest-store.ts";

// Tag freshness, pure: what to do with a tag request given what we know and the clock.

export type TagDecision =
  | { action: "fetch" } // nothing usable cached: GET from the upstream
  | { action: "serve"; entry: TagEntry } // fresh: answer from cache
  | { action: "revalidate"; entry: TagEntry; staleUntil: number }; // ask the upstream (HEAD); on outage serve until staleUntil

/**
 * A tag's answer depends on what the client accepts: distribution answers a manifest list's tag
 * with the amd64 manifest to a client that takes only single-platform manifests. So an entry
 * answers one accept set (its `accept` key) and no other: a narrower Accept must never shadow
 * a wider one, or arm64 nodes pull amd64 images until the TTL ends.
 *
 * Entries written before there were keys (no `accept`) are ambiguous: they are never served
 * without asking, only revalidated (the HEAD carries this client's Accept, so the upstream
 * decides), or served stale when it cannot be asked.
 */
export function decideTag(
  rec: TagRecord | undefined,
  accept: readonly string[],
  now: number,
  ttlMs: number,
  maxStaleMs: number,
): TagDecision {
  const key = acceptKey(accept);
  const keyed = rec?.entries.find((e) => e.accept === key);
  const entry = keyed ?? rec?.entries.find((e) => e.accept === undefined && accepts(accept, e.mediaType));
  if (!entry) return { action: "fetch" };
  if (keyed && now - entry.checkedAt < ttlMs) return { action: "serve", entry };
  return { action: "revalidate", entry, staleUntil: entry.checkedAt + ttlMs + maxStaleMs };
}

/**
 * A stable key for "the same question" about a tag: the exact set of types the client sent
 * (order and duplicates aside). Not their meaning: `application/*` and the full list are
 * different questions to a registry that matches types literally, as distribution does.
 */
export function acceptKey(accept: readonly string[]): string {
  return [...new Set(accept)].sort().join(",");
}
