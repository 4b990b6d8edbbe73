import type { CachePaths } from "../storage/paths.ts";
import { contentFiles, tagFiles, type TagFile } from "../storage/cache-walk.ts";
import { ManifestGraph } from "./manifest-graph.ts";
import { EXIT_OK } from "./errors.ts";
import { formatBytes, out, outJson, plural, shortDigest } from "./output.ts";

// `regmirror ls`: the cached repositories, their tags and sizes, read from the cache directory.
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

export async function listCache(paths: CachePaths): Promise<Listing> {
  const [blobs, manifests, tags] = await Promise.all([
    contentFiles(paths, "blob"),
    contentFiles(paths, "manifest"),
    tagFiles(paths),
  ]);
  const blobSize = new Map(blobs.map((b) => [b.hex, b.size]));
  const graph = new ManifestGraph(paths);

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

  const byRepo = new Map<string, TagFile[]>();
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

export async function ls(paths: CachePaths, opts: { json: boolean }): Promise<number> {
  const listing = await listCache(paths);
  if (opts.json) {
    outJson(listing);
    return EXIT_OK;
  }
  for (const r of listing.repositories) {
    out(`${r.upstream}/${r.name}  ${plural(r.tags.length, "tag")}  ${sizeText(r)}`);
    const width = Math.max(...r.tags.map((t) => t.tag.length));
    for (const t of r.tags) {
      const digests = t.entries.map((e) => shortDigest(e.digest)).join(",") || "(unreadable record)";
      const checked = t.entries[0]?.checkedAt.replace(/\.\d+Z$/, "Z") ?? "";
      out(`  ${t.tag.padEnd(width)}  ${digests}  ${sizeText(t).padEnd(10)}  checked ${checked}`);
    }
  }
  const c = listing.cache;
  out(
    `cache: ${plural(listing.repositories.length, "repository", "repositories")}, ` +
      `${plural(c.blobs, "blob")} ${formatBytes(c.blobBytes)}, ${plural(c.manifests, "manifest")}`,
  );
  return EXIT_OK;
}

function sizeText(u: Usage): string {
  return u.cachedBlobs === u.blobs
    ? formatBytes(u.bytes)
    : `${formatBytes(u.bytes)} (${formatBytes(u.cachedBytes)} cached, ${u.cachedBlobs}/${u.blobs} blobs)`;
}

function sum(ns: number[]): number {
  return ns.reduce((a, b) => a + b, 0);
}
