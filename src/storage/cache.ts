import type { Config } from "../config/schema.ts";
import type { StorageDriver } from "./driver.ts";
import { FilesystemDriver } from "./fs-driver.ts";
import { CachePaths } from "./paths.ts";

// A cache as the mirror and the maintenance commands see it: its objects, behind a driver, and
// the local directory for fills in progress and the generation file (paths.ts).

export interface Cache {
  driver: StorageDriver;
  paths: CachePaths;
  /**
   * Tells the other replicas of a cluster that something was removed (cluster.redis); the
   * processes of this host hear it from the generation file (generation.ts).
   */
  announce?: () => Promise<void>;
}

/** The cache in `dir` with the filesystem driver: objects and temp files in one directory. */
export function filesystemCache(dir: string): Cache {
  const paths = new CachePaths(dir);
  return { driver: new FilesystemDriver(dir, paths.tmpDir), paths };
}

/**
 * The cache the config describes. With S3 the objects go to the bucket and cache.dir keeps only
 * the fills in progress. The S3 driver is imported here, on demand, so a filesystem cache never
 * loads the AWS SDK.
 */
export async function openCache(config: Config): Promise<Cache> {
  if (config.storage.driver !== "s3") return filesystemCache(config.cache.dir);
  const { S3Driver } = await import("./s3-driver.ts");
  const s3 = config.storage.s3;
  // Empty strings are "not set" in the config: the SDK's defaults (region, credential chain).
  const driver = new S3Driver({
    bucket: s3.bucket,
    prefix: s3.prefix,
    endpoint: s3.endpoint || undefined,
    region: s3.region || undefined,
    forcePathStyle: s3.forcePathStyle,
    accessKeyId: s3.accessKeyId || undefined,
    secretAccessKey: s3.secretAccessKey || undefined,
  });
  return { driver, paths: new CachePaths(config.cache.dir) };
}
