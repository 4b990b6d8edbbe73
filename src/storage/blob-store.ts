import { mkdir, open, readdir, rename, rm, stat, utimes, type FileHandle } from "node:fs/promises";
import { dirname } from "node:path";
import type { Hash } from "node:crypto";
import { formatDigest, sha256Hasher, type Digest } from "../oci/digest.ts";
import { CachePaths } from "./paths.ts";
import { tempName, tempOwner } from "./atomic.ts";

// Content-addressed blob files. A blob becomes visible under its digest only through
// BlobWriter.commit(), which checks size and sha256 first and then fsyncs and renames: a reader
// of blobs/ can never see a partial or wrong file, whatever happens to the process.

export class DigestMismatchError extends Error {
  constructor(
    readonly expected: string,
    readonly actual: string,
  ) {
    super(`content does not match its digest: expected ${expected}, got ${actual}`);
    this.name = "DigestMismatchError";
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

function isNotFound(err: unknown): boolean {
  return (err as NodeJS.ErrnoException | undefined)?.code === "ENOENT";
}

export interface BlobStat {
  size: number;
  /** Last read, in ms since the epoch (kept in the file's mtime so it survives a restart). */
  lastRead: number;
}

export class BlobStore {
  constructor(readonly paths: CachePaths) {}

  /**
   * Creates the layout. With `clearTemp` (a single process, or the primary before it forks)
   * it also removes debris of fills that a crash interrupted; a worker must not, since the
   * other workers' fills are in there.
   */
  async init({ clearTemp = true } = {}): Promise<void> {
    if (clearTemp) await rm(this.paths.tmpDir, { recursive: true, force: true });
    await Promise.all(
      [this.paths.blobsDir, this.paths.manifestsDir, this.paths.reposDir, this.paths.tmpDir].map((d) =>
        mkdir(d, { recursive: true }),
      ),
    );
  }

  /** Removes the temp files of a process that is gone (a worker that died mid-fill). */
  async removeTempOf(pid: number): Promise<number> {
    const names = await readdir(this.paths.tmpDir).catch(() => [] as string[]);
    const mine = names.filter((n) => tempOwner(n) === pid);
    await Promise.all(mine.map((n) => rm(`${this.paths.tmpDir}/${n}`, { force: true })));
    return mine.length;
  }

  path(d: Digest): string {
    return this.paths.blob(d);
  }

  async stat(d: Digest): Promise<BlobStat | undefined> {
    try {
      const s = await stat(this.paths.blob(d));
      return { size: s.size, lastRead: s.mtimeMs };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
      throw err;
    }
  }

  /**
   * Records a read; eviction orders blobs by this. False when the file is gone (purged from
   * outside); any other failure (EACCES, EMFILE) rejects: it is not an answer about the blob.
   */
  async touch(d: Digest, when = Date.now()): Promise<boolean> {
    const t = new Date(when);
    try {
      await utimes(this.paths.blob(d), t, t);
      return true;
    } catch (err) {
      if (isNotFound(err)) return false;
      throw err;
    }
  }

  async remove(d: Digest): Promise<void> {
    await rm(this.paths.blob(d), { force: true });
  }

  async beginWrite(d: Digest, expectedSize?: number): Promise<BlobWriter> {
    const tmp = tempName(this.paths.tmpDir);
    const fh = await open(tmp, "wx");
    return new BlobWriter(d, tmp, this.paths.blob(d), fh, expectedSize);
  }

  /**
   * Every cached blob with its size and last read; for the eviction index at start. Files and
   * folders removed meanwhile (ENOENT) are skipped. Any other error goes to `onError` and the
   * listing goes on without that entry, so one unreadable folder does not hide the whole cache;
   * without `onError` it is thrown.
   */
  async *list(
    onError: (err: Error) => void = (err) => {
      throw err;
    },
  ): AsyncGenerator<{ hex: string; size: number; lastRead: number }> {
    const settle = <T>(p: Promise<T>): Promise<T | undefined> =>
      p.catch((err: unknown) => {
        if (!isNotFound(err)) onError(err as Error);
        return undefined;
      });
    const prefixes = (await settle(readdir(this.paths.blobsDir))) ?? [];
    for (const p of prefixes) {
      const dir = `${this.paths.blobsDir}/${p}`;
      const names = (await settle(readdir(dir))) ?? [];
      const stats = await Promise.all(
        names.map((n) =>
          settle(stat(`${dir}/${n}`).then((s) => ({ hex: n, size: s.size, lastRead: s.mtimeMs }))),
        ),
      );
      for (const s of stats) if (s) yield s;
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
    private readonly finalPath: string,
    private readonly fh: FileHandle,
    private readonly expectedSize: number | undefined,
  ) {}

  get written(): number {
    return this.offset;
  }

  /**
   * A read descriptor of the file being written, for readers that follow the write. It stays
   * valid across commit's rename and a later unlink (eviction), which a path would not.
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

  /** Verifies, fsyncs and publishes. On any failure the temp file is removed and nothing is cached. */
  async commit(): Promise<void> {
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
      await mkdir(dirname(this.finalPath), { recursive: true });
      await rename(this.tmpPath, this.finalPath);
    } catch (err) {
      await this.abort();
      throw err;
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
