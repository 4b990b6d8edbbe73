import {
  DEFAULT_MANIFEST_ACCEPT,
  DOCKER_MANIFEST_LIST,
  MANIFEST_TYPES,
  OCI_INDEX,
  accepts,
} from "../oci/media-types.ts";
import type { TagEntry, TagRecord } from "../storage/manifest-store.ts";

// Tag freshness, pure: what to do with a tag request given what we know and the clock.
//
// A tag's answer depends on what the client accepts: distribution answers a manifest list's tag
// with the amd64 manifest to a client that takes only single-platform manifests. So an entry
// answers the accept set it was asked with (its `accept` key), and another set only when the
// entry is the tag's native manifest (see isNative): a narrower Accept never shadows a wider
// one, or arm64 nodes pull amd64 images until the TTL ends.

export type TagDecision =
  /** Nothing known about the tag: GET it. */
  | { action: "fetch" }
  /** The tag is cached, but not for this Accept: HEAD with it, and GET only if the digest it names is not cached. Nothing to serve stale. */
  | { action: "probe" }
  /** Fresh: answer from cache. */
  | { action: "serve"; entry: TagEntry }
  /** Ask the upstream (HEAD); when it cannot be asked, serve `entry` until staleUntil. */
  | { action: "revalidate"; entry: TagEntry; staleUntil: number };

/**
 * 1. The entry for this exact accept set. 2. The tag's native manifest, when this client takes
 * its type. Either is served while fresh, else revalidated (stale allowed). 3. An entry written
 * before entries had accept sets (no `accept`), whose type the client takes: ambiguous, so never
 * served without asking, only revalidated (the HEAD carries this client's Accept) or served
 * stale when the upstream cannot be asked, as before the upgrade. 4. Other entries: probe.
 */
export function decideTag(
  rec: TagRecord | undefined,
  accept: readonly string[],
  now: number,
  ttlMs: number,
  maxStaleMs: number,
): TagDecision {
  const entries = rec?.entries ?? [];
  const key = acceptKey(accept);
  const trusted =
    entries.find((e) => e.accept === key) ?? entries.find((e) => accept.includes(e.mediaType) && isNative(e));
  const entry = trusted ?? entries.find((e) => e.accept === undefined && accepts(accept, e.mediaType));
  if (!entry) return entries.length > 0 ? { action: "probe" } : { action: "fetch" };
  if (trusted && now - entry.checkedAt < ttlMs) return { action: "serve", entry };
  return { action: "revalidate", entry, staleUntil: entry.checkedAt + ttlMs + maxStaleMs };
}

/**
 * Whether an entry is the tag's own manifest rather than one the upstream chose or converted for
 * a narrow Accept. An index or list always is (no registry makes one up). A single manifest is
 * when the client that got it also took every richer type: the registry could have answered
 * with a list and did not. The native manifest is what any client that takes its type gets.
 */
function isNative(e: TagEntry): boolean {
  if (e.accept === undefined) return false;
  if (e.mediaType === OCI_INDEX || e.mediaType === DOCKER_MANIFEST_LIST) return true;
  const asked = e.accept.split(",");
  return DEFAULT_MANIFEST_ACCEPT.every((t) => asked.includes(t));
}

/**
 * A stable key for "the same question" about a tag: the set of manifest types (and wildcards)
 * the client sent, order and duplicates aside. Literal, not their meaning: `application/*` and
 * the full list are different questions to a registry that matches types literally, as
 * distribution does. Other types change no registry's answer and are left out, which also keeps
 * a client sending ever new Accept headers from growing tag records (and memory) with them.
 */
export function acceptKey(accept: readonly string[]): string {
  return [...new Set(accept.filter((t) => MANIFEST_TYPES.has(t) || WILDCARDS.has(t)))].sort().join(",");
}

const WILDCARDS: ReadonlySet<string> = new Set(["*/*", "application/*"]);
