import type { Digest } from "../oci/digest.ts";
import { BlobStore } from "../storage/blob-store.ts";
import type { StorageDriver } from "../storage/driver.ts";
import type { CachePaths } from "../storage/paths.ts";
import { manifestKey } from "../storage/keys.ts";
import { withPrefix } from "../storage/prefixed.ts";

// What the hosted repositories hold, through the storage driver, below "hosted/":
//
//   hosted/blobs/sha256/<hex[0:2]>/<hex>        blob bytes, the cache's layout (keys.ts)
//   hosted/manifests/sha256/<hex[0:2]>/<hex>    manifest bytes, as pushed
//   hosted/repos/<repo>/_layers/<hex>           {"size"}: the blob was pushed to (or mounted in) repo
//   hosted/repos/<repo>/_manifests/<hex>        ManifestLink: the manifest belongs to repo
//   hosted/repos/<repo>/_tags/<tag>             {"digest","mediaType"}
//   hosted/repos/<repo>/_referrers/<subject hex>/<hex>   the referrer's descriptor (OCI 1.1)
//
// Content is shared by digest; what a repository may serve is what is linked in it, as in
// distribution's layout. Nothing here is kept in memory: every process, worker and replica reads
// the storage, so a push through one is seen by all at once. Repository names passed the spec's
// grammar (no component starts with "_" or "."), so "_tags" and friends never collide with them.

export const HOSTED_PREFIX = "hosted/";
const REPOS = "repos/";

/** A manifest's place in a repository: what an answer and the referrers API need. */
export interface ManifestLink {
  mediaType: string;
  size: number;
  /** OCI 1.1: the artifact type (artifactType, or the config's media type for images). */
  artifactType?: string;
  /** The manifest this one refers to (its `subject`), as a digest string. */
  subject?: string;
  annotations?: Record<string, string>;
}

export interface TagLink {
  digest: string;
  mediaType: string;
}

/** An OCI descriptor, as the referrers API lists them. */
export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  artifactType?: string;
  annotations?: Record<string, string>;
}

export class HostedStore {
  /** The storage below hosted/: the cache's key functions (keys.ts) work on it unchanged. */
  readonly driver: StorageDriver;
  readonly blobs: BlobStore;

  constructor(root: StorageDriver, paths: CachePaths) {
    this.driver = withPrefix(root, HOSTED_PREFIX);
    this.blobs = new BlobStore(this.driver, paths);
  }

  // Blobs in repositories.

  async linkBlob(repo: string, d: Digest, size: number): Promise<void> {
    await this.driver.put(layerKey(repo, d.hex), JSON.stringify({ size }));
  }

  /** The blob's size when it is linked in `repo` and its bytes are present. */
  async blobIn(repo: string, d: Digest): Promise<number | undefined> {
    const link = await readJson<{ size: number }>(this.driver, layerKey(repo, d.hex));
    return link?.size;
  }

  unlinkBlob(repo: string, d: Digest): Promise<boolean> {
    return this.driver.delete(layerKey(repo, d.hex));
  }

  // Manifests.

  getManifestBytes(d: Digest): Promise<Buffer | undefined> {
    return this.driver.get(manifestKey(d));
  }

  /** Content first, then the link: a crash between leaves unreferenced content for gc, never a dangling link. */
  async putManifest(repo: string, d: Digest, bytes: Buffer, link: ManifestLink): Promise<void> {
    await this.driver.put(manifestKey(d), bytes);
    await this.driver.put(manifestLinkKey(repo, d.hex), JSON.stringify(link));
  }

  manifestIn(repo: string, d: Digest): Promise<ManifestLink | undefined> {
    return readJson<ManifestLink>(this.driver, manifestLinkKey(repo, d.hex));
  }

  unlinkManifest(repo: string, d: Digest): Promise<boolean> {
    return this.driver.delete(manifestLinkKey(repo, d.hex));
  }

  /** Every manifest linked in `repo`, by hex. */
  async *manifestsIn(repo: string): AsyncGenerator<{ hex: string; link: ManifestLink; modifiedMs: number }> {
    for await (const o of this.driver.list(`${repoPrefix(repo)}_manifests/`)) {
      const hex = o.key.slice(o.key.lastIndexOf("/") + 1);
      const link = await readJson<ManifestLink>(this.driver, o.key);
      if (link) yield { hex, link, modifiedMs: o.modifiedMs };
    }
  }

  // Tags.

  tag(repo: string, tag: string): Promise<TagLink | undefined> {
    return readJson<TagLink>(this.driver, tagKey(repo, tag));
  }

  async setTag(repo: string, tag: string, link: TagLink): Promise<void> {
    await this.driver.put(tagKey(repo, tag), JSON.stringify(link));
  }

  deleteTag(repo: string, tag: string): Promise<boolean> {
    return this.driver.delete(tagKey(repo, tag));
  }

  /** The tags of `repo`, in order, from the listing alone (tags/list reads no record). */
  async tagNames(repo: string): Promise<string[]> {
    const prefix = `${repoPrefix(repo)}_tags/`;
    const out: string[] = [];
    for await (const o of this.driver.list(prefix)) out.push(o.key.slice(prefix.length));
    return out;
  }

  /** Tag → link, in tag order. */
  async tags(repo: string): Promise<Map<string, TagLink>> {
    const out = new Map<string, TagLink>();
    for (const tag of await this.tagNames(repo)) {
      const link = await this.tag(repo, tag);
      if (link) out.set(tag, link);
    }
    return out;
  }

  // Referrers (OCI 1.1): an index by subject, written when a manifest with a subject is pushed.

  async addReferrer(repo: string, subject: Digest, referrer: Descriptor): Promise<void> {
    await this.driver.put(referrerKey(repo, subject.hex, referrer.digest), JSON.stringify(referrer));
  }

  removeReferrer(repo: string, subject: Digest, referrer: string): Promise<boolean> {
    return this.driver.delete(referrerKey(repo, subject.hex, referrer));
  }

  async referrers(repo: string, subject: Digest): Promise<Descriptor[]> {
    const out: Descriptor[] = [];
    for await (const o of this.driver.list(`${repoPrefix(repo)}_referrers/${subject.hex}/`)) {
      const d = await readJson<Descriptor>(this.driver, o.key);
      if (d) out.push(d);
    }
    return out;
  }

  // Repositories.

  /** Every repository with at least one manifest, in name order. */
  async repositories(): Promise<string[]> {
    const names = new Set<string>();
    for await (const o of this.driver.list(REPOS)) {
      const m = /^repos\/(.+?)\/_manifests\/[a-f0-9]{64}$/.exec(o.key);
      if (m) names.add(m[1]!);
    }
    return [...names].sort();
  }
}

function repoPrefix(repo: string): string {
  return `${REPOS}${repo}/`;
}
function layerKey(repo: string, hex: string): string {
  return `${repoPrefix(repo)}_layers/${hex}`;
}
function manifestLinkKey(repo: string, hex: string): string {
  return `${repoPrefix(repo)}_manifests/${hex}`;
}
function tagKey(repo: string, tag: string): string {
  return `${repoPrefix(repo)}_tags/${tag}`;
}
function referrerKey(repo: string, subjectHex: string, referrer: string): string {
  return `${repoPrefix(repo)}_referrers/${subjectHex}/${referrer.replace(/^sha256:/, "")}`;
}

async function readJson<T>(driver: StorageDriver, key: string): Promise<T | undefined> {
  const bytes = await driver.get(key);
  if (bytes === undefined) return undefined;
  try {
    return JSON.parse(bytes.toString("utf8")) as T;
  } catch {
    // A torn or foreign object is treated as absent: put() is atomic, so only a hand edit makes one.
    return undefined;
  }
}
