import type { Digest } from "../oci/digest.ts";

// The cache's objects, by key, whatever the driver (driver.ts). On disk a key is a path below the
// cache directory; on S3, an object key below the prefix.
//
//   blobs/sha256/<hex[0:2]>/<hex>        blob bytes (layers, configs)
//   manifests/sha256/<hex[0:2]>/<hex>    manifest bytes, exactly as the upstream sent them
//   manifests/sha256/<hex[0:2]>/<hex>.meta   {"mediaType"}: the type the upstream declared
//   repos/<upstream>/<repo>/_tags/<tag>.json   what a tag pointed to, and when we last checked
//   repos/<upstream>/<repo>/_referrers/<subject hex>.json   a manifest's referrers, as last listed upstream
//   state/last-read.json                 when each blob was last read (eviction.ts)
//
// Only digests (64 checked hex characters) and names and tags that passed the spec's grammar
// (no "..", no leading dot or underscore) become key components, so every key stays inside
// the cache. `_tags` cannot be a repository component, so a repository never collides with it.

export const BLOBS = "blobs/sha256/";
export const MANIFESTS = "manifests/sha256/";
export const REPOS = "repos/";
export const LAST_READ = "state/last-read.json";

const HEX = /^[a-f0-9]{64}$/;

export function blobKey(d: Digest): string {
  return `${BLOBS}${d.hex.slice(0, 2)}/${d.hex}`;
}

export function manifestKey(d: Digest): string {
  return `${MANIFESTS}${d.hex.slice(0, 2)}/${d.hex}`;
}

/** Beside the manifest; its name is not 64 hex characters, so content walks pass it by. */
export function manifestMetaKey(d: Digest): string {
  return `${manifestKey(d)}.meta`;
}

export function tagKey(upstream: string, repo: string, tag: string): string {
  return `${tagsPrefix(upstream, repo)}${tag}.json`;
}

/** The referrers of `subject` in a repository, as the upstream last listed them (mirror/referrers.ts). */
export function referrersKey(upstream: string, repo: string, subject: Digest): string {
  return `${REPOS}${upstream}/${repo}/_referrers/${subject.hex}.json`;
}

/** The prefix of one repository's tag records. */
export function tagsPrefix(upstream: string, repo: string): string {
  return `${REPOS}${upstream}/${repo}/_tags/`;
}

/** The hex of a blob or manifest key (below BLOBS or MANIFESTS); undefined for any other key. */
export function contentHex(key: string): string | undefined {
  const slash = key.lastIndexOf("/");
  const hex = key.slice(slash + 1);
  return HEX.test(hex) && key.slice(slash - 2, slash) === hex.slice(0, 2) ? hex : undefined;
}

/** upstream, repository and tag of a tag record's key; undefined for any other key. */
export function parseTagKey(key: string): { upstream: string; repo: string; tag: string } | undefined {
  const m = /^repos\/([^/]+)\/(.+)\/_tags\/([^/]+)\.json$/.exec(key);
  return m ? { upstream: m[1]!, repo: m[2]!, tag: m[3]! } : undefined;
}
