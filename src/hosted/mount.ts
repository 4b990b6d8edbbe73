import { rm } from "node:fs/promises";
import type { Digest } from "../oci/digest.ts";
import { isValidName } from "../oci/reference.ts";
import { DigestMismatchError, SizeMismatchError } from "../storage/blob-store.ts";
import type { StorageDriver } from "../storage/driver.ts";
import { blobKey } from "../storage/keys.ts";
import type { HostedNames } from "./names.ts";
import type { HostedStore } from "./store.ts";

// Where finished uploads and cross-repository mounts put their blobs: the hosted store, through
// the driver (a rename on disk, an upload to S3), then the link that lets `repo` serve it.

/** Publishes a verified upload file under `d` and links it in `repo`; the file is gone afterwards. */
export async function publishUpload(
  store: HostedStore,
  repo: string,
  d: Digest,
  file: string,
  size: number,
): Promise<void> {
  // Content-addressed: bytes already there under this digest are these bytes.
  const there = await store.driver.stat(blobKey(d));
  if (there?.size === size) await rm(file, { force: true });
  else await store.driver.publish(file, blobKey(d));
  await store.linkBlob(repo, d, size);
}

export interface MountSources {
  store: HostedStore;
  names: HostedNames;
  /** The mirror's cache, its root driver: cached blobs are under blobKey(d). */
  cache: StorageDriver;
  /** May clients pull this mirrored name (access.allow / deny)? False for a name no upstream serves. */
  mirrorPermits(name: string): boolean;
  maxBlobSize: number;
  /** Throws when there is no room for a copy (cache.minFree). */
  requireSpace(): Promise<void>;
}

/**
 * `POST ?mount=<d>&from=<from>`: links `d` in `repo` when `from` is a hosted repository that has
 * it, or copies it (verified) from the mirror's cache when `from` is a mirrored one. Resolves to
 * the blob's size, or undefined when it cannot be mounted (the client then uploads it). An
 * upstream is never asked: a mount is the promise that the bytes are already here.
 */
export async function mountBlob(
  src: MountSources,
  repo: string,
  d: Digest,
  from: string,
): Promise<number | undefined> {
  if (!isValidName(from)) return undefined;
  const { store } = src;
  if (src.names.matches(from)) {
    const size = await store.blobIn(from, d);
    // Linked there but its bytes gone (gc) is not mountable either.
    if (size === undefined || !(await store.driver.stat(blobKey(d)))) return undefined;
    await store.linkBlob(repo, d, size);
    return size;
  }
  if (!src.mirrorPermits(from)) return undefined;
  const reader = await src.cache.open(blobKey(d));
  if (!reader) return undefined;
  try {
    if (reader.size > src.maxBlobSize) return undefined;
    if ((await store.driver.stat(blobKey(d)))?.size !== reader.size) {
      await src.requireSpace();
      const w = await store.blobs.beginWrite(d, reader.size);
      try {
        if (reader.size > 0)
          for await (const chunk of reader.stream(0, reader.size - 1)) await w.write(chunk as Buffer);
        await w.commit();
      } catch (err) {
        await w.abort();
        // A damaged cached copy is not mounted: the client uploads the blob instead.
        if (err instanceof DigestMismatchError || err instanceof SizeMismatchError) return undefined;
        throw err;
      }
    }
    await store.linkBlob(repo, d, reader.size);
    return reader.size;
  } finally {
    await reader.close();
  }
}
