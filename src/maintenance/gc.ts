import { cacheChanged } from "../storage/generation.ts";
import { rm } from "node:fs/promises";
import { parseDigest } from "../oci/digest.ts";
import type { Cache } from "../storage/cache.ts";
import { contentObjects, tagObjects, tmpEntries } from "../storage/cache-walk.ts";
import { manifestMetaKey } from "../storage/keys.ts";
import { ManifestGraph } from "./manifest-graph.ts";
import { HOSTED_PREFIX } from "../hosted/store.ts";
import { withPrefix } from "../storage/prefixed.ts";
import { collectHostedGarbage, type HostedGcResult } from "./hosted-gc.ts";

// `regmirror gc` and POST /admin/gc: mark and sweep over the cache directory. This returns what
// it removed and kept; the command layer (print.ts) or the admin API shows it.
//
// Kept (the marks): every manifest a tag record points to, and every cached child of a kept index
// (or manifest list); every blob a kept manifest names. Removed: manifests nothing above reaches,
// blobs no kept manifest names, files in tmp/ (fills a crash left behind), and the storage's own
// debris (on S3: multipart uploads a crash interrupted).
//
// Anything touched within --min-age (default 1h) is kept whatever the marks say. That is what
// makes gc safe beside a running mirror: the mirror writes a manifest just before its tag record,
// and a client pulls a blob after its manifest, so a young file may be referenced a moment
// later. It also spares recent pulls by digest (which leave no tag record), and a fill in
// progress in tmp/. With --keep-untagged every cached manifest is kept, for caches that serve
// mostly pulls by digest (Kubernetes pods pinned to image@sha256:...).
//
// The cache's walks list blobs/, manifests/ and repos/ only: the hosted repositories' content,
// below hosted/, is never theirs. With `hostedGraceMs` the hosted repositories are collected too,
// by their own marks (hosted-gc.ts), and reported apart.

export interface GcOptions {
  dryRun: boolean;
  minAgeMs: number;
  keepUntagged: boolean;
  /** Collect the hosted repositories too, sparing what is younger than this (hosted.gcGrace). */
  hostedGraceMs?: number;
}

export interface Sweep {
  removed: string[];
  bytes: number;
  kept: number;
}

export interface GcResult {
  dryRun: boolean;
  manifests: Sweep;
  blobs: Sweep;
  /** Files in tmp/ and the storage's debris: fills and uploads that a crash left behind. */
  tmp: Sweep;
  /** The cache's own: the hosted repositories' are in `hosted`. */
  freedBytes: number;
  /** Present when the hosted repositories were collected (hostedGraceMs). */
  hosted?: HostedGcResult;
}

export async function collectGarbage(cache: Cache, opts: GcOptions): Promise<GcResult> {
  const { driver, paths } = cache;
  const cutoff = Date.now() - opts.minAgeMs;
  // Tags first, content after: a tag written during the walk names a manifest that is young.
  const tags = await tagObjects(driver);
  const manifests = await contentObjects(driver, "manifest");
  const blobs = await contentObjects(driver, "blob");
  const tmp = await tmpEntries(paths);

  const graph = new ManifestGraph(driver);
  const roots = [
    ...tags.flatMap((t) => (t.entries ?? []).map((e) => e.digest)),
    ...manifests.filter((m) => opts.keepUntagged || m.mtimeMs >= cutoff).map((m) => m.hex),
  ];
  const keptManifests = await graph.reachable(roots);
  const keptBlobs = await graph.blobsOf(keptManifests);

  const sweep = async <T extends { size: number }>(
    files: T[],
    keep: (f: T) => boolean,
    name: (f: T) => string,
    remove: (f: T) => Promise<boolean>,
  ): Promise<Sweep> => {
    const s: Sweep = { removed: [], bytes: 0, kept: 0 };
    for (const f of files) {
      if (keep(f)) {
        s.kept++;
        continue;
      }
      if (!opts.dryRun && !(await remove(f))) continue;
      s.removed.push(name(f));
      s.bytes += f.size;
    }
    return s;
  };
  const result: GcResult = {
    dryRun: opts.dryRun,
    manifests: await sweep(
      manifests,
      (m) => keptManifests.has(m.hex),
      (m) => `sha256:${m.hex}`,
      (m) => driver.delete(m.key),
    ),
    blobs: await sweep(
      blobs,
      (b) => keptBlobs.has(b.hex) || b.mtimeMs >= cutoff,
      (b) => `sha256:${b.hex}`,
      (b) => driver.delete(b.key),
    ),
    tmp: await sweep(
      tmp,
      (t) => t.mtimeMs >= cutoff,
      (t) => t.name,
      (t) => rm(t.path, { force: true }).then(() => true),
    ),
    freedBytes: 0,
  };
  const debris = await driver.sweepDebris(opts.minAgeMs, opts.dryRun);
  result.tmp.removed.push(...debris.map((d) => d.name));
  result.tmp.bytes += debris.reduce((a, d) => a + d.size, 0);
  // A manifest's type record (keys.ts) goes with it.
  if (!opts.dryRun)
    for (const m of result.manifests.removed) await driver.delete(manifestMetaKey(parseDigest(m)!));
  result.freedBytes = result.manifests.bytes + result.blobs.bytes + result.tmp.bytes;
  if (!opts.dryRun && result.manifests.removed.length + result.blobs.removed.length > 0)
    await cacheChanged(cache);
  // Hosted content is read from the storage on every request, so nothing in memory is stale.
  if (opts.hostedGraceMs !== undefined)
    result.hosted = await collectHostedGarbage(withPrefix(driver, HOSTED_PREFIX), {
      dryRun: opts.dryRun,
      graceMs: opts.hostedGraceMs,
      keepUntagged: opts.keepUntagged,
    });
  return result;
}
