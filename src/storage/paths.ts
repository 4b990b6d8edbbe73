import { join } from "node:path";

// What stays on the local disk whatever the storage driver (driver.ts): fills in progress, and
// the file through which processes on this host tell each other of removals.
//
//   <dir>/
//     tmp/<pid>.<random>    fills in progress; anything here at start is debris
//     uploads/<uuid>/       blob uploads to hosted repositories (hosted/uploads.ts): kept across
//                           restarts (a client resumes them), removed when idle too long
//     generation            changed by every purge, gc and verify that removed something:
//                           running mirrors then drop what they hold
//
// With the filesystem driver the cache's objects live beside them (keys.ts).

export class CachePaths {
  constructor(readonly root: string) {}

  get tmpDir(): string {
    return join(this.root, "tmp");
  }
  /** On the cache's filesystem, so that publishing a finished upload is a rename. */
  get uploadsDir(): string {
    return join(this.root, "uploads");
  }
  get generationFile(): string {
    return join(this.root, "generation");
  }
}
