import { mkdir, open, readdir, rm, type FileHandle } from "node:fs/promises";
import type { Hash } from "node:crypto";
import { formatDigest, sha256Hasher, type Digest } from "../oci/digest.ts";
import type { CachePaths } from "./paths.ts";
import { tempName, tempOwner } from "./atomic.ts";
import type { ObjectReader, StorageDriver } from "./driver.ts";
import { BLOBS, blobKey, contentHex } from "./keys.ts";

// Content-addressed blobs. A blob is written to a local temp file and becomes visible under its
// digest only through BlobWriter.commit(), which checks size and sha256 first and then hands
// the file to the driver to publish: nothing can ever see a partial or wrong blob under a
// digest, whatever happens to the process.

/** Uploads older than this at start are a crash's debris, not a fill of another replica. */
const DEBRIS_AGE_MS = 60 * 60_000;

export class DigestMismatchError extends Error {
  constructor(
    readonly expected: string,
    readonly actual: string,
  ) {
    super(`content does not match its digest: expected ${expected}, got ${actual}`);
    this.name = "DigestMismatchError";
  }
}

/** The blob was right but the storage could not take it: readers go on from the upstream. */
export class PublishError extends Error {
  constructor(cause: unknown) {
    super(`cannot publish the blob: ${(cause as Error).message ?? String(cause)}`, { cause });
    this.name = "PublishError";
  }
}

export class SizeMismatchError extends Error {
  constructor(
    readonly expected: number,
    readonly actual: number,
  ) {
    super(`content length ${actual} does not match the announced ${expected}`);
    this.name = "SizeMismatchError";
  }
}

export interface StoredBlob {
  hex: string;
  size: number;
  /** When it was published (ms since the epoch); the last read is the eviction index's (last-read.ts). */
  modifiedMs: number;
}

/** Blobs by digest over the storage driver, and the local temp files their fills are written to. */
export class BlobStore {
  constructor(
    readonly driver: StorageDriver,
    readonly paths: CachePaths,
  ) {}

  /**
   * Creates the layout. With `clearTemp` (a single process, or the primary before it forks)
   * it also removes debris of fills that a crash interrupted; a worker must not, since the
   * other workers' fills are in there.
   */
  async init({ clearTemp = true } = {}): Promise<void> {
    if (clearTemp) await rm(this.paths.tmpDir, { recursive: true, force: true });
    await mkdir(this.paths.tmpDir, { recursive: true });
    // Uploads a crash interrupted are debris too, once old enough not to be another replica's.
    await this.driver.init(clearTemp ? { debrisAgeMs: DEBRIS_AGE_MS } : {});
  }

  /** Removes the temp files of a process that is gone (a worker that died mid-fill). */
  async removeTempOf(pid: number): Promise<number> {
    const names = await readdir(this.paths.tmpDir).catch(() => [] as string[]);
    const mine = names.filter((n) => tempOwner(n) === pid);
    await Promise.all(mine.map((n) => rm(`${this.paths.tmpDir}/${n}`, { force: true })));
    return mine.length;
  }

  open(d: Digest): Promise<ObjectReader | undefined> {
    return this.driver.open(blobKey(d));
  }

  /** Where a client can GET the blob from the storage itself; undefined when the driver cannot say. */
  redirectURL(d: Digest): Promise<string | undefined> {
    return this.driver.redirectURL?.(blobKey(d)) ?? Promise.resolve(undefined);
  }

  async remove(d: Digest): Promise<void> {
    await this.driver.delete(blobKey(d));
  }

  async beginWrite(d: Digest, expectedSize?: number): Promise<BlobWriter> {
    const tmp = tempName(this.paths.tmpDir);
    const fh = await open(tmp, "wx");
    return new BlobWriter(d, tmp, fh, expectedSize, (file) => this.driver.publish(file, blobKey(d)));
  }

  /**
   * Every cached blob with its size; for the eviction index at start. A listing that fails
   * part-way goes to `onError` with what was listed so far kept (one unreadable folder must not
   * hide the whole cache); without `onError` it is thrown.
   */
  async *list(
    onError: (err: Error) => void = (err) => {
      throw err;
    },
  ): AsyncGenerator<StoredBlob> {
    try {
      for await (const o of this.driver.list(BLOBS)) {
        const hex = contentHex(o.key);
        if (hex) yield { hex, size: o.size, modifiedMs: o.modifiedMs };
      }
    } catch (err) {
      onError(err as Error);
    }
  }
}

/**
 * One blob being written: bytes are hashed as they are appended, and commit() publishes the file
 * only when size and digest match. Until then it lives under tmp/ (readers of a fill in progress
 * read through openReader()).
 */
export class BlobWriter {
  private readonly hash: Hash = sha256Hasher();
  private offset = 0;
  private closed = false;

  constructor(
    readonly digest: Digest,
    readonly tmpPath: string,
    private readonly fh: FileHandle,
    private readonly expectedSize: number | undefined,
    /** Moves the verified file under the digest's key (StorageDriver.publish). */
    private readonly publishTo: (file: string) => Promise<void>,
  ) {}

  get written(): number {
    return this.offset;
  }

  /**
   * A read descriptor of the file being written, for readers that follow the write. It stays
   * valid across publishing (a rename, or an upload and unlink) and a later eviction, which a
   * path would not.
   */
  openReader(): Promise<FileHandle> {
    return open(this.tmpPath, "r");
  }

  /** Appends several chunks with as few system calls as the kernel allows. */
  async writev(chunks: Buffer[]): Promise<void> {
    if (chunks.length === 1) return this.write(chunks[0]!);
    let total = 0;
    for (const c of chunks) {
      this.hash.update(c);
      total += c.length;
    }
    const { bytesWritten } = await this.fh.writev(chunks, this.offset);
    this.offset += bytesWritten;
    // A short write (rare for files): finish with plain writes, already hashed.
    let skip = bytesWritten;
    if (skip < total) {
      for (const c of chunks) {
        if (skip >= c.length) {
          skip -= c.length;
          continue;
        }
        await this.writeRaw(c.subarray(skip));
        skip = 0;
      }
    }
  }

  async write(chunk: Buffer): Promise<void> {
    this.hash.update(chunk);
    await this.writeRaw(chunk);
  }

  private async writeRaw(chunk: Buffer): Promise<void> {
    let done = 0;
    while (done < chunk.length) {
      const { bytesWritten } = await this.fh.write(chunk, done, chunk.length - done, this.offset);
      done += bytesWritten;
      this.offset += bytesWritten;
    }
  }

  /** Verifies, fsyncs and publishes: verify() then publish(). */
  async commit(): Promise<void> {
    await this.verify();
    await this.publish();
  }

  /**
   * Checks size and digest, fsyncs and closes the file. On a mismatch (or any failure) the temp
   * file is removed and this rejects: nothing will be cached.
   */
  async verify(): Promise<void> {
    try {
      if (this.expectedSize !== undefined && this.offset !== this.expectedSize) {
        throw new SizeMismatchError(this.expectedSize, this.offset);
      }
      const actual = "sha256:" + this.hash.digest("hex");
      if (actual !== formatDigest(this.digest))
        throw new DigestMismatchError(formatDigest(this.digest), actual);
      await this.fh.sync();
      await this.fh.close();
      this.closed = true;
    } catch (err) {
      await this.abort();
      throw err;
    }
  }

  /**
   * Hands the verified file to the storage; the temp name is gone afterwards whatever the
   * outcome. A failure is a PublishError: the bytes were right, the storage failed.
   */
  async publish(): Promise<void> {
    try {
      await this.publishTo(this.tmpPath);
    } catch (err) {
      await rm(this.tmpPath, { force: true });
      throw new PublishError(err);
    }
  }

  async abort(): Promise<void> {
    if (!this.closed) {
      this.closed = true;
      // The file is being thrown away: a failure to close it cannot lose anything, and must not
      // hide the error that made us abort.
      await this.fh.close().catch(() => undefined);
    }
    await rm(this.tmpPath, { force: true });
  }
}
