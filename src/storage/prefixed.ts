import type { ObjectInfo, StorageDriver } from "./driver.ts";

// A driver seen through a key prefix: the hosted repositories keep their blobs and manifests in
// the same layout as the cache (keys.ts), below "hosted/", so the cache's walks, eviction and gc
// never see them, and the same BlobStore and key functions serve both. Setting up the storage
// (init, debris) stays with the driver it wraps.

export function withPrefix(driver: StorageDriver, prefix: string): StorageDriver {
  const strip = (o: ObjectInfo): ObjectInfo => ({ ...o, key: o.key.slice(prefix.length) });
  return {
    kind: driver.kind,
    init: () => Promise.resolve(),
    get: (key) => driver.get(prefix + key),
    put: (key, data) => driver.put(prefix + key, data),
    stat: async (key) => {
      const o = await driver.stat(prefix + key);
      return o && strip(o);
    },
    open: (key) => driver.open(prefix + key),
    publish: (file, key) => driver.publish(file, prefix + key),
    delete: (key) => driver.delete(prefix + key),
    async *list(p) {
      for await (const o of driver.list(prefix + p)) yield strip(o);
    },
    ...(driver.redirectURL ? { redirectURL: (key: string) => driver.redirectURL!(prefix + key) } : {}),
    sweepDebris: () => Promise.resolve([]),
    problem: () => driver.problem(),
  };
}
