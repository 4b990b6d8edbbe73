import type { Readable } from "node:stream";

// Where the cache's content lives: a local directory (fs-driver.ts) or an S3 bucket
// (s3-driver.ts). Everything above this interface — the stores, the mirror, the maintenance
// commands — names objects by key (keys.ts) and gets readers and writers, never file paths.
// Modelled on distribution's StorageDriver (Reader, Writer, Stat, List, Move, Delete,
// RedirectURL, Walk), cut down to what a cache needs.
//
// Fills in progress are not the driver's: they are written to a local temp file (clients
// follow it while it lands, workers of one host share it), and handed to publish() only once
// their digest has been verified. So no driver ever holds a partial object under a key.

/** One stored object, as stat() or list() sees it. */
export interface ObjectInfo {
  /** Relative key, "/"-separated: "blobs/sha256/ab/abcd…" (keys.ts). */
  key: string;
  size: number;
  /** When it was written, ms since the epoch. */
  modifiedMs: number;
}

/**
 * An object opened for reading, until close(). On disk it holds the object (a descriptor), so a
 * removal does not cut it; on S3 each read or stream is a ranged GET of its own, and an object
 * removed meanwhile fails the reads that start after that.
 */
export interface ObjectReader {
  readonly size: number;
  /**
   * A positional read for small blobs read whole and for fill readers. Unlike FileHandle.read it
   * fills `length` bytes unless the object ends first.
   */
  read(buffer: Buffer, offset: number, length: number, position: number): Promise<{ bytesRead: number }>;
  /** Bytes [start, end] (inclusive) as a stream; the reader must stay open until it ends. */
  stream(start: number, end: number): Readable;
  /**
   * The filesystem's capability: the open descriptor, for sendfile(2). The caller takes it over
   * (and closes it); close() then does nothing. Absent on drivers that have no descriptor.
   */
  takeDescriptor?(): number;
  close(): Promise<void>;
}

/** What a maintenance sweep removed that was no object: an interrupted upload, say. */
export interface Debris {
  name: string;
  size: number;
}

export interface StorageDriver {
  readonly kind: "filesystem" | "s3";
  /** Creates what the driver needs (the layout, the bucket); cleans debris older than `debrisAgeMs`. */
  init(opts?: { debrisAgeMs?: number }): Promise<void>;
  /** A whole object (manifests, tag records); undefined when there is none. */
  get(key: string): Promise<Buffer | undefined>;
  /** Writes a whole object; readers see the old content or the new, never a torn one. */
  put(key: string, data: Buffer | string): Promise<void>;
  stat(key: string): Promise<ObjectInfo | undefined>;
  open(key: string): Promise<ObjectReader | undefined>;
  /**
   * Moves a complete, verified, local file under `key`; the local file is gone afterwards,
   * whatever the outcome. Until this resolves nothing is under `key` (or what was there).
   */
  publish(localFile: string, key: string): Promise<void>;
  /** False when there was nothing to delete. */
  delete(key: string): Promise<boolean>;
  /**
   * Every object whose key starts with `prefix` (which ends with "/"), at any depth, in key
   * order. Objects removed during the walk may or may not be listed; none is listed twice.
   */
  list(prefix: string): AsyncIterable<ObjectInfo>;
  /** A URL from which a client can GET the object itself for a while; undefined if it cannot. */
  redirectURL?(key: string): Promise<string | undefined>;
  /** Debris older than `olderThanMs` (interrupted uploads), removed unless `dryRun`. */
  sweepDebris(olderThanMs: number, dryRun: boolean): Promise<Debris[]>;
  /** Why the storage cannot be used right now (for /readyz); undefined when it can. */
  problem(): Promise<string | undefined>;
}

/** The storage cannot be reached or refused to work: a 503 to the client, never a miss. */
export class StorageUnavailableError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "StorageUnavailableError";
  }
}
