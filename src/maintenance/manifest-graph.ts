import { parseDigest } from "../oci/digest.ts";
import type { StorageDriver } from "../storage/driver.ts";
import { manifestKey } from "../storage/keys.ts";
import { manifestRefs, type Descriptor, type ManifestRefs } from "./manifest-refs.ts";

// The cached manifests as a graph: an index points to its child manifests, an image to its
// blobs. Manifests are read on first use and only their references kept, so a walk over a large
// cache holds digests, not manifest bodies. ls sizes a tag with it; gc marks what to keep.

export class ManifestGraph {
  private readonly memo = new Map<string, ManifestRefs | undefined>();

  constructor(private readonly driver: StorageDriver) {}

  /** The references of a cached manifest by digest hex; undefined when it is not cached. */
  async refs(hex: string): Promise<ManifestRefs | undefined> {
    if (this.memo.has(hex)) return this.memo.get(hex);
    const bytes = await this.driver.get(manifestKey({ algorithm: "sha256", hex }));
    const refs = bytes === undefined ? undefined : manifestRefs(bytes);
    this.memo.set(hex, refs);
    return refs;
  }

  /**
   * The cached manifests reachable from `roots` (digest strings or hex) through index children,
   * roots included. A child that is not cached ends its branch: its blobs are unknown.
   */
  async reachable(roots: Iterable<string>): Promise<Set<string>> {
    const seen = new Set<string>();
    const queue = [...roots].map(toHex).filter((h): h is string => h !== undefined);
    while (queue.length > 0) {
      const hex = queue.pop()!;
      if (seen.has(hex)) continue;
      const refs = await this.refs(hex);
      if (refs === undefined) continue;
      seen.add(hex);
      for (const child of refs.children) {
        const c = toHex(child.digest);
        if (c !== undefined && !seen.has(c)) queue.push(c);
      }
    }
    return seen;
  }

  /** The blobs these manifests name, by digest hex (the first descriptor seen for each). */
  async blobsOf(manifests: Iterable<string>): Promise<Map<string, Descriptor>> {
    const out = new Map<string, Descriptor>();
    for (const hex of manifests) {
      for (const b of (await this.refs(hex))?.blobs ?? []) {
        const h = toHex(b.digest);
        if (h !== undefined && !out.has(h)) out.set(h, b);
      }
    }
    return out;
  }
}

function toHex(digestOrHex: string): string | undefined {
  if (/^[a-f0-9]{64}$/.test(digestOrHex)) return digestOrHex;
  return parseDigest(digestOrHex)?.hex;
}
