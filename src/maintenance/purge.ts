import { cacheChanged } from "../storage/generation.ts";
import { parseDigest } from "../oci/digest.ts";
import { isValidTag } from "../oci/reference.ts";
import type { Cache } from "../storage/cache.ts";
import type { StorageDriver } from "../storage/driver.ts";
import { contentObjects, tagObjects, type TagObject } from "../storage/cache-walk.ts";
import { blobKey, manifestKey, manifestMetaKey } from "../storage/keys.ts";
import { UsageError } from "./errors.ts";

// `regmirror purge` and POST /admin/purge: removes content from the cache, safely while
// a mirror runs on it (to the mirror a removed blob is a miss, fetched again on demand). This
// returns what it removed; the command layer (print.ts) or the admin API shows it.
//
//   purge REPO:TAG       the tag record (the manifests and blobs stay until `gc`)
//   purge DIGEST         the blob or manifest with that digest (REPO@DIGEST works too)
//   purge --repo NAME    every tag record of the repository
//   purge --older-than D blobs not read for D (storage/last-read.ts)
//
// A REF or --repo that matches nothing is a failure, like `rm` without -f: a typo must not pass
// for success. --older-than is a sweep and succeeds whatever it found.

/** Where the mirror keeps a repository name's tags: the same routing the mirror applies to a request. */
export type RepoResolver = (name: string) => { upstream: string; repo: string };

export interface PurgeOptions {
  ref?: string;
  repo?: string;
  olderThanMs?: number;
  dryRun: boolean;
}

export interface Removed {
  kind: "tag" | "blob" | "manifest";
  /** upstream/repo:tag for a tag, the digest for content. */
  name: string;
  bytes: number;
}

export interface PurgeResult {
  dryRun: boolean;
  removed: Removed[];
  freedBytes: number;
  /** What was asked for, in words: the REF, the repository, or the age. */
  target: string;
  /**
   * False when a REF or --repo matched nothing (a likely typo: the CLI exits 1, the admin API
   * answers 404). An --older-than sweep always counts as matched, whatever it found.
   */
  matched: boolean;
}

/** Removes what the options name; a malformed REF or name is a UsageError. Prints nothing. */
export async function purgeCache(
  cache: Cache,
  resolve: RepoResolver,
  opts: PurgeOptions,
): Promise<PurgeResult> {
  const { driver } = cache;
  const modes = [opts.ref, opts.repo, opts.olderThanMs].filter((m) => m !== undefined).length;
  if (modes !== 1)
    throw new UsageError("purge takes exactly one of: REF, --repo NAME, --older-than DURATION");

  let removed: Removed[];
  let target: string;
  if (opts.olderThanMs !== undefined) {
    target = `blobs not read for ${Math.round(opts.olderThanMs / 1000)}s`;
    removed = await purgeOlderThan(driver, Date.now() - opts.olderThanMs, opts.dryRun);
  } else if (opts.repo !== undefined) {
    target = opts.repo;
    removed = await purgeTags(driver, await findTags(driver, resolve, opts.repo, undefined), opts.dryRun);
  } else {
    target = opts.ref!;
    removed = await purgeRef(driver, resolve, opts.ref!, opts.dryRun);
  }
  if (!opts.dryRun && removed.length > 0) await cacheChanged(cache);
  return {
    dryRun: opts.dryRun,
    removed,
    freedBytes: removed.reduce((a, r) => a + r.bytes, 0),
    target,
    matched: removed.length > 0 || opts.olderThanMs !== undefined,
  };
}

async function purgeRef(
  driver: StorageDriver,
  resolve: RepoResolver,
  ref: string,
  dryRun: boolean,
): Promise<Removed[]> {
  const at = ref.indexOf("@");
  if (at >= 0 || ref.startsWith("sha256:")) {
    const text = ref.slice(at + 1);
    const d = parseDigest(text);
    if (!d) throw new UsageError(`"${text}" is not a sha256 digest`);
    const removed: Removed[] = [];
    for (const [kind, key] of [
      ["blob", blobKey(d)],
      ["manifest", manifestKey(d)],
    ] as const) {
      const found = await driver.stat(key);
      if (found === undefined) continue;
      if (!dryRun && !(await driver.delete(key))) continue;
      // A manifest's type record (keys.ts) goes with it.
      if (!dryRun && kind === "manifest") await driver.delete(manifestMetaKey(d));
      removed.push({ kind, name: text, bytes: found.size });
    }
    return removed;
  }
  const colon = ref.lastIndexOf(":");
  if (colon <= ref.lastIndexOf("/")) {
    throw new UsageError(`"${ref}" names no tag: give REPO:TAG or a digest, or --repo ${ref} for every tag`);
  }
  const tag = ref.slice(colon + 1);
  if (!isValidTag(tag)) throw new UsageError(`"${tag}" is not a valid tag`);
  return purgeTags(driver, await findTags(driver, resolve, ref.slice(0, colon), tag), dryRun);
}

/**
 * Tag records of a repository name (one tag, or all). The name is routed as the mirror routes it
 * (`alpine` → docker.io/library/alpine); failing that, a leading component is taken literally
 * as the upstream, for tags cached under an upstream no longer configured.
 */
async function findTags(
  driver: StorageDriver,
  resolve: RepoResolver,
  name: string,
  tag: string | undefined,
): Promise<TagObject[]> {
  let routed: { upstream: string; repo: string };
  try {
    routed = resolve(name);
  } catch (err) {
    throw new UsageError(`"${name}" is not a repository name: ${(err as Error).message}`);
  }
  const slash = name.indexOf("/");
  const literal = slash > 0 ? { upstream: name.slice(0, slash), repo: name.slice(slash + 1) } : undefined;
  const all = await tagObjects(driver);
  const matching = (at: { upstream: string; repo: string }) =>
    all.filter(
      (t) => t.upstream === at.upstream && t.repo === at.repo && (tag === undefined || t.tag === tag),
    );
  const found = matching(routed);
  return found.length > 0 || literal === undefined ? found : matching(literal);
}

async function purgeTags(driver: StorageDriver, tags: TagObject[], dryRun: boolean): Promise<Removed[]> {
  const removed: Removed[] = [];
  for (const t of tags) {
    if (!dryRun && !(await driver.delete(t.key))) continue;
    removed.push({ kind: "tag", name: `${t.upstream}/${t.repo}:${t.tag}`, bytes: t.size });
  }
  return removed;
}

async function purgeOlderThan(driver: StorageDriver, cutoffMs: number, dryRun: boolean): Promise<Removed[]> {
  const removed: Removed[] = [];
  for (const b of await contentObjects(driver, "blob")) {
    if (b.mtimeMs >= cutoffMs) continue;
    if (!dryRun && !(await driver.delete(b.key))) continue;
    removed.push({ kind: "blob", name: `sha256:${b.hex}`, bytes: b.size });
  }
  return removed;
}
