import { watch, writeFileSync, type FSWatcher } from "node:fs";
import { writeFile } from "node:fs/promises";
import type { CachePaths } from "./paths.ts";
import type { Cache } from "./cache.ts";

// How a `regmirror purge` in a shell (another process) reaches a running mirror: every
// maintenance command that removed something rewrites <cache>/generation, and every mirror
// process (each worker, and the primary's eviction index) watches that file. On a change it
// drops what it holds in memory — tag records, manifests, small blobs — and the index of blobs
// is rebuilt, so the next request reads the disk and fetches what is gone.
//
// The file is rewritten in place, never replaced: a watch follows an inode, and a rename
// would leave it watching the old one.

/** Tells running mirrors that files were removed behind their back. */
export async function bumpGeneration(paths: CachePaths): Promise<void> {
  await writeFile(paths.generationFile, `${Date.now()}\n`);
}

/** After a maintenance command removed something: this host's mirrors, and a cluster's replicas. */
export async function cacheChanged(cache: Cache): Promise<void> {
  await bumpGeneration(cache.paths);
  await cache.announce?.();
}

/** Calls `onChange` (at most once per burst of writes) whenever the generation changes. */
export function watchGeneration(paths: CachePaths, onChange: () => void): () => void {
  // Created if missing, so there is an inode to watch before the first purge.
  writeFileSync(paths.generationFile, "", { flag: "a" });
  let pending: NodeJS.Immediate | undefined;
  const watcher: FSWatcher = watch(paths.generationFile, { persistent: false }, () => {
    pending ??= setImmediate(() => {
      pending = undefined;
      onChange();
    });
  });
  // A watch that fails (the cache directory removed) must not end the process.
  watcher.on("error", () => undefined);
  return () => {
    watcher.close();
    if (pending) clearImmediate(pending);
  };
}
