import { join } from "node:path";
import type { Digest } from "../oci/digest.ts";

// The cache directory, drawn:
//
//   <dir>/
//     blobs/sha256/<hex[0:2]>/<hex>        blob bytes (layers, configs); mtime = last read
//     manifests/sha256/<hex[0:2]>/<hex>    manifest bytes, exactly as the upstream sent them
//     manifests/sha256/<hex[0:2]>/<hex>.meta   {"mediaType"}: the type the upstream declared
//     repos/<upstream>/<repo>/_tags/<tag>.json   what a tag pointed to, and when we last checked
//     tmp/<pid>.<random>                   fills in progress; anything here at start is debris
//     generation                           changed by every purge, gc and verify that removed
//                                          something: running mirrors then drop what they hold
//
// Only digests (64 checked hex characters) and names and tags that passed the spec's grammar
// (no "..", no leading dot or underscore) become path components, so every path stays inside
// <dir>. `_tags` cannot be a repository component, so a repository never collides with it.

export class CachePaths {
  constructor(readonly root: string) {}

  get blobsDir(): string {
    return join(this.root, "blobs", "sha256");
  }
  get manifestsDir(): string {
    return join(this.root, "manifests", "sha256");
  }
  get reposDir(): string {
    return join(this.root, "repos");
  }
  get tmpDir(): string {
    return join(this.root, "tmp");
  }
  get generationFile(): string {
    return join(this.root, "generation");
  }

  blob(d: Digest): string {
    return join(this.blobsDir, d.hex.slice(0, 2), d.hex);
  }
  manifest(d: Digest): string {
    return join(this.manifestsDir, d.hex.slice(0, 2), d.hex);
  }
  /** Beside the manifest; its name is not 64 hex characters, so content walks pass it by. */
  manifestMeta(d: Digest): string {
    return `${this.manifest(d)}.meta`;
  }
  tag(upstream: string, repo: string, tag: string): string {
    return join(this.reposDir, upstream, repo, "_tags", `${tag}.json`);
  }
}
