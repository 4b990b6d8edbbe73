import type { Digest } from "../oci/digest.ts";
import type { Reference } from "../oci/reference.ts";
import type { UpstreamClient } from "../upstream/client.ts";
import type { BlobAnswer, BlobService } from "./blobs.ts";
import type { ManifestAnswer, ManifestService } from "./manifests.ts";
import type { ReferrersAnswer, ReferrersService } from "./referrers.ts";
import { canonicalRegistry, routeRepo, type Routed } from "./routing.ts";
import { cachedRepositories, cachedTags, paginate, type Page } from "./listing.ts";
import type { StorageDriver } from "../storage/driver.ts";
import type { ManifestStore } from "../storage/manifest-store.ts";

// What the HTTP layer talks to: "manifest X of repository Y", "blob Z". It picks the upstream
// (ns, path prefix, default) and hands the question to the services; whether the answer comes
// from the cache is not the caller's business.

export interface UpstreamEntry {
  client: UpstreamClient;
  manifests: ManifestService;
  referrers: ReferrersService;
}

export class Mirror {
  private readonly names: ReadonlySet<string>;

  constructor(
    private readonly upstreams: ReadonlyMap<string, UpstreamEntry>,
    private readonly defaultName: string,
    private readonly blobs: BlobService,
    private readonly storage: StorageDriver,
    private readonly store: ManifestStore,
  ) {
    this.names = new Set(upstreams.keys());
  }

  /** Whether `ns` (containerd's ?ns=) names a registry this mirror mirrors. */
  mirrors(ns: string): boolean {
    return this.names.has(canonicalRegistry(ns));
  }

  route(ns: string | undefined, name: string): Routed {
    return routeRepo(this.names, this.defaultName, ns, name);
  }

  manifest(at: Routed, ref: Reference, accept: string[]): Promise<ManifestAnswer> {
    return this.entry(at).manifests.get(at.repo, ref, accept);
  }

  /** manifest()'s answer when memory alone gives it, synchronously (ManifestService.peek). */
  peekManifest(at: Routed, ref: Reference, accept: string[]): ManifestAnswer | undefined {
    return this.entry(at).manifests.peek(at.repo, ref, accept);
  }

  /** A cached blob's bytes when they are held in memory, synchronously (BlobService.peekMemory). */
  peekBlob(at: Routed, d: Digest): Buffer | undefined {
    return this.blobs.peekMemory(this.entry(at).client.name, d);
  }

  /** peekManifest's answer with the disk as well; undefined when the upstream must be asked. */
  manifestFromCache(at: Routed, ref: Reference, accept: string[]): Promise<ManifestAnswer | undefined> {
    return this.entry(at).manifests.fromCache(at.repo, ref, accept);
  }

  /** peekBlob's answer for a small blob cached on disk, now read into memory (BlobService.loadSmall). */
  loadSmallBlob(at: Routed, d: Digest): Promise<Buffer | undefined> {
    return this.blobs.loadSmall(this.entry(at).client.name, d);
  }

  blob(at: Routed, d: Digest, method: "GET" | "HEAD"): Promise<BlobAnswer> {
    return this.blobs.get(this.entry(at).client, at.repo, d, method);
  }

  /** The OCI 1.1 referrers of `subject`, unfiltered (referrers.ts). */
  referrers(at: Routed, subject: Digest): Promise<ReferrersAnswer> {
    return this.entry(at).referrers.get(at.repo, subject);
  }

  async tags(at: Routed, n: number | undefined, last: string | undefined): Promise<Page> {
    return paginate(await cachedTags(this.storage, at), n, last);
  }

  /** `ns` narrows the catalog to one configured registry; `hosted` adds the hosted repositories. */
  async catalog(
    ns: string | undefined,
    n: number | undefined,
    last: string | undefined,
    hosted?: { repositories(): Promise<string[]> },
  ): Promise<Page> {
    let only: string | undefined;
    if (ns !== undefined) only = this.route(ns, "x").upstream;
    const cached = cachedRepositories(await this.store.repositories(), this.defaultName, only);
    if (!hosted) return paginate(cached, n, last);
    return paginate([...new Set([...cached, ...(await hosted.repositories())])].sort(), n, last);
  }

  /** Tag records were removed behind the mirror's back (the admin API's purge): list afresh. */
  invalidateListing(): void {
    this.store.invalidateRepositories();
  }

  async close(): Promise<void> {
    await this.blobs.close();
    await Promise.all([...this.upstreams.values()].map((u) => u.client.close()));
  }

  private entry(at: Routed): UpstreamEntry {
    // routeRepo only returns configured names.
    return this.upstreams.get(at.upstream)!;
  }
}
