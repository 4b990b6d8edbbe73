import type { StorageDriver } from "../storage/driver.ts";
import { markRepo } from "./hosted-gc.ts";
import { ManifestNodes, manifestsNamed, readRepos, type ManifestNode } from "./hosted-walk.ts";

// The hosted repositories with their tags and sizes, for the status page and /api/repositories.
// A size is what the manifests declare (config and layers; for an index, those of its children),
// each blob counted once: one listing and one read per manifest, no blob is opened.

export interface HostedTagListing {
  tag: string;
  digest: string;
  mediaType: string;
  /** Declared bytes of the blobs the manifest (or index) names. */
  bytes: number;
  blobs: number;
}

export interface HostedRepoListing {
  name: string;
  tags: HostedTagListing[];
  /** Manifests linked in the repository. */
  manifests: number;
  /** Of those, the ones no tag reaches (not even as an index's child or a referrer): gc removes them once past the grace. */
  unreachable: number;
  /** Declared bytes of every blob its linked manifests name, each once. */
  bytes: number;
}

export interface HostedListing {
  repositories: HostedRepoListing[];
}

/** `driver`: the storage below hosted/ (HostedStore.driver). */
export async function listHosted(driver: StorageDriver): Promise<HostedListing> {
  const repos = await readRepos(driver);
  const nodes = new ManifestNodes(driver);
  await nodes.load(manifestsNamed(repos));
  const node = (hex: string) => nodes.get(hex);
  const repositories: HostedRepoListing[] = [];
  for (const [name, r] of [...repos].sort(([a], [b]) => a.localeCompare(b))) {
    if (r.manifests.size === 0 && r.tags.size === 0) continue;
    const tags = [...r.tags]
      .sort(([a], [b]) => a.localeCompare(b))
      .map(([tag, t]): HostedTagListing => {
        const blobs = blobsOf([t.hex], node);
        return {
          tag,
          digest: `sha256:${t.hex}`,
          mediaType: t.mediaType,
          bytes: sum(blobs),
          blobs: blobs.size,
        };
      });
    // Every link past any grace: only what the tags reach is marked.
    const marked = markRepo(r, node, { cutoffMs: Infinity, keepUntagged: false }).manifests;
    repositories.push({
      name,
      tags,
      manifests: r.manifests.size,
      unreachable: [...r.manifests.keys()].filter((hex) => !marked.has(hex)).length,
      bytes: sum(blobsOf(r.manifests.keys(), node)),
    });
  }
  return { repositories };
}

/** hex → declared size of every blob these manifests reach, through index children. */
function blobsOf(
  roots: Iterable<string>,
  node: (hex: string) => ManifestNode | undefined,
): Map<string, number> {
  const out = new Map<string, number>();
  const seen = new Set<string>();
  const queue = [...roots];
  while (queue.length > 0) {
    const hex = queue.pop()!;
    if (seen.has(hex)) continue;
    seen.add(hex);
    const n = node(hex);
    for (const b of n?.blobs ?? []) if (!out.has(b.hex)) out.set(b.hex, b.size);
    queue.push(...(n?.children ?? []));
  }
  return out;
}

function sum(m: Map<string, number>): number {
  let n = 0;
  for (const v of m.values()) n += v;
  return n;
}
