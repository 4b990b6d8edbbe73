import type { Config } from "../config/schema.ts";
import type { StorageDriver } from "./driver.ts";
import { FilesystemDriver } from "./fs-driver.ts";
import { CachePaths } from "./paths.ts";

// A cache as the mirror and the maintenance commands see it: its objects, behind a driver, and
// the local directory for fills in progress and the generation file (paths.ts).

export interface Cache {
  driver: StorageDriver;
  paths: CachePaths;
}

/** The cache in `dir` with the filesystem driver: objects and temp files in one directory. */
export function filesystemCache(dir: string): Cache {
  const paths = new CachePaths(dir);
  return { driver: new FilesystemDriver(dir, paths.tmpDir), paths };
}

/** The cache the config describes. */
export function openCache(config: Config): Promise<Cache> {
  return Promise.resolve(filesystemCache(config.cache.dir));
}
