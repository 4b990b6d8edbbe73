import type { StorageDriver } from "../storage/driver.ts";
import { contentObjects, tagObjects, type TagObject } from "../storage/cache-walk.ts";
import { ManifestGraph } from "./manifest-graph.ts";

// `regmirror ls` and the status page (GET /api/repositories): the cached repositories, their tags
// and sizes, read from the cache's storage.
// A tag's size is the sum of the blobs its manifest names (for an index, those of the children
// that are cached), counted once each; `cachedBytes` is how much of that is on disk now.

export interface Usage {
  /** Declared sizes of every blob the manifests name. */
  bytes: number;
  /** Sizes of those blobs that are in the cache. */
  cachedBytes: number;
  blobs: number;
  cachedBlobs: number;
}

export interface TagListing extends Usage {
  tag: string;
  /** One per media type the tag was served as. Empty when the record could not be read. */
  entries: Array<{ digest: string; mediaType: string; checkedAt: string }>;
}

export interface RepoListing extends Usage {
  upstream: string;
  name: string;
  tags: TagListing[];
}

export interface Listing {
  repositories: RepoListing[];
  cache: { blobs: number; blobBytes: number; manifests: number; manifestBytes: number };
}

export async function listCache(driver: StorageDriver): Promise<Listing> {
  const [blobs, manifests, tags] = await Promise.all([
    contentObjects(driver, "blob"),
    contentObjects(driver, "manifest"),
    tagObjects(driver),
  ]);
  const blobSize = new Map(blobs.map((b) => [b.hex, b.size]));
  const graph = new ManifestGraph(driver);

  const usage = async (digests: string[]): Promise<Usage> => {
    const named = await graph.blobsOf(await graph.reachable(digests));
    const u: Usage = { bytes: 0, cachedBytes: 0, blobs: named.size, cachedBlobs: 0 };
    for (const [hex, d] of named) {
      const onDisk = blobSize.get(hex);
      // Schema 1 manifests declare no sizes: the file's size is the best answer there is.
      u.bytes += d.size || (onDisk ?? 0);
      if (onDisk !== undefined) {
        u.cachedBytes += onDisk;
        u.cachedBlobs++;
      }
    }
    return u;
  };

  const byRepo = new Map<string, TagObject[]>();
  for (const t of tags) {
    const key = `${t.upstream}/${t.repo}`;
    byRepo.set(key, [...(byRepo.get(key) ?? []), t]);
  }
  const repositories: RepoListing[] = [];
  for (const group of byRepo.values()) {
    const first = group[0]!;
    const listed: TagListing[] = [];
    for (const t of group) {
      const entries = t.entries ?? [];
      listed.push({
        tag: t.tag,
        entries: entries.map((e) => ({
          digest: e.digest,
          mediaType: e.mediaType,
          checkedAt: new Date(e.checkedAt).toISOString(),
        })),
        ...(await usage(entries.map((e) => e.digest))),
      });
    }
    const all = group.flatMap((t) => (t.entries ?? []).map((e) => e.digest));
    repositories.push({ upstream: first.upstream, name: first.repo, ...(await usage(all)), tags: listed });
  }
  return {
    repositories,
    cache: {
      blobs: blobs.length,
      blobBytes: sum(blobs.map((b) => b.size)),
      manifests: manifests.length,
      manifestBytes: sum(manifests.map((m) => m.size)),
    },
  };
}

function sum(ns: number[]): number {
  return ns.reduce((a, b) => a + b, 0);
}
