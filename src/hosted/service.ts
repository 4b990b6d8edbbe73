import { RegistryError } from "../oci/errors.ts";
import { formatDigest, type Digest } from "../oci/digest.ts";
import type { Reference } from "../oci/reference.ts";
import { readerAnswer, type BlobAnswer } from "../mirror/blob-answers.ts";
import type { SendOptions } from "../storage/send-file.ts";
import type { HostedNames } from "./names.ts";
import type { HostedStore, ManifestLink } from "./store.ts";

// The hosted repositories as the HTTP layer sees them, pull side: manifests by tag or digest,
// blobs, tags. Only what is linked in a repository is served from it (store.ts). Nothing here
// ever reaches an upstream.

export interface HostedManifest {
  bytes: Buffer;
  digest: string;
  mediaType: string;
}

export interface HostedOptions {
  /** DELETE allowed (hosted.delete). */
  deleteEnabled: boolean;
  send: SendOptions;
}

export class Hosted {
  constructor(
    readonly store: HostedStore,
    readonly names: HostedNames,
    readonly opts: HostedOptions,
  ) {}

  /** Resolves a reference to the manifest's digest and link; MANIFEST_UNKNOWN when absent. */
  async resolve(repo: string, ref: Reference): Promise<{ digest: Digest; link: ManifestLink }> {
    let digest: Digest | undefined;
    if (ref.kind === "digest") digest = ref.digest;
    else {
      const tag = await this.store.tag(repo, ref.tag);
      if (tag) digest = { algorithm: "sha256", hex: tag.digest.slice("sha256:".length) };
    }
    const link = digest && (await this.store.manifestIn(repo, digest));
    if (!digest || !link) throw manifestUnknown(repo, ref);
    return { digest, link };
  }

  async manifest(repo: string, ref: Reference): Promise<HostedManifest> {
    const { digest, link } = await this.resolve(repo, ref);
    const bytes = await this.store.getManifestBytes(digest);
    if (!bytes) throw manifestUnknown(repo, ref);
    return { bytes, digest: formatDigest(digest), mediaType: link.mediaType };
  }

  async blob(repo: string, d: Digest): Promise<BlobAnswer> {
    if ((await this.store.blobIn(repo, d)) === undefined) throw blobUnknown(repo, d);
    const reader = await this.store.blobs.open(d);
    if (!reader) throw blobUnknown(repo, d);
    return readerAnswer(reader, this.opts.send);
  }

  /** Tags of a hosted repository, in order; NAME_UNKNOWN when it has no manifest at all. */
  async tags(repo: string): Promise<string[]> {
    const tags = await this.store.tagNames(repo);
    if (tags.length === 0 && !(await this.hasManifests(repo)))
      throw new RegistryError("NAME_UNKNOWN", "no such repository", { detail: { name: repo } });
    return tags;
  }

  repositories(): Promise<string[]> {
    return this.store.repositories();
  }

  private async hasManifests(repo: string): Promise<boolean> {
    for await (const _ of this.store.manifestsIn(repo)) return true;
    return false;
  }
}

export function manifestUnknown(repo: string, ref: Reference): RegistryError {
  return new RegistryError("MANIFEST_UNKNOWN", "manifest unknown", {
    detail: { name: repo, reference: ref.kind === "tag" ? ref.tag : ref.text },
  });
}

export function blobUnknown(repo: string, d: Digest): RegistryError {
  return new RegistryError("BLOB_UNKNOWN", "blob unknown to registry", {
    detail: { name: repo, digest: formatDigest(d) },
  });
}
