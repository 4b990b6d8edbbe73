import { close, createReadStream, fstat, open, read } from "node:fs";
import { mkdir, readFile, readdir, rename, rm, rmdir, stat } from "node:fs/promises";
import { promisify } from "node:util";
import { dirname, join, sep } from "node:path";
import type { Readable } from "node:stream";
import { writeFileAtomic } from "./atomic.ts";
import { REPOS } from "./keys.ts";
import type { Debris, ObjectInfo, ObjectReader, StorageDriver } from "./driver.ts";

const openAsync = promisify(open);
const fstatAsync = promisify(fstat);
const readAsync = promisify(read);
const closeAsync = promisify(close);

// The filesystem driver: a key is a path below the cache directory (keys.ts draws the layout).
// Writes become visible by rename, so a reader never sees a torn file. An open reader keeps its
// descriptor, so eviction can unlink a blob without cutting a response short; that descriptor
// is also what sendfile(2) sends from (takeDescriptor).

export function isNotFound(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  return code === "ENOENT" || code === "ENOTDIR";
}

export class FilesystemDriver implements StorageDriver {
  readonly kind = "filesystem";

  constructor(
    readonly root: string,
    /** Where atomic writes are staged: on the same filesystem, for rename. */
    private readonly tmpDir: string,
  ) {}

  private path(key: string): string {
    return join(this.root, ...key.split("/"));
  }

  async init(): Promise<void> {
    await mkdir(this.root, { recursive: true });
  }

  async get(key: string): Promise<Buffer | undefined> {
    try {
      return await readFile(this.path(key));
    } catch (err) {
      if (isNotFound(err)) return undefined;
      throw err;
    }
  }

  put(key: string, data: Buffer | string): Promise<void> {
    return writeFileAtomic(this.path(key), data, this.tmpDir);
  }

  async stat(key: string): Promise<ObjectInfo | undefined> {
    try {
      const s = await stat(this.path(key));
      return s.isFile() ? { key, size: s.size, modifiedMs: s.mtimeMs } : undefined;
    } catch (err) {
      if (isNotFound(err)) return undefined;
      throw err;
    }
  }

  async open(key: string): Promise<ObjectReader | undefined> {
    // A plain descriptor, not a FileHandle: sendfile(2) takes it over, and a FileHandle would
    // close it again when collected.
    let fd: number;
    try {
      fd = await openAsync(this.path(key), "r");
    } catch (err) {
      if (isNotFound(err)) return undefined;
      throw err;
    }
    try {
      const s = await fstatAsync(fd);
      return new FileReader(fd, s.size);
    } catch (err) {
      close(fd, () => undefined);
      throw err;
    }
  }

  async publish(localFile: string, key: string): Promise<void> {
    const path = this.path(key);
    try {
      await mkdir(dirname(path), { recursive: true });
      await rename(localFile, path);
    } catch (err) {
      await rm(localFile, { force: true });
      throw err;
    }
  }

  async delete(key: string): Promise<boolean> {
    const path = this.path(key);
    let existed = true;
    try {
      await rm(path);
    } catch (err) {
      if (!isNotFound(err)) throw err;
      existed = false;
    }
    // No empty directories left behind: a repository without tags must not look cached. Only
    // there: a blob's folder may be about to take a new blob (publish makes it, then renames).
    if (existed && key.startsWith(REPOS)) await pruneEmptyDirs(dirname(path), join(this.root, "repos"));
    return existed;
  }

  async *list(prefix: string): AsyncGenerator<ObjectInfo> {
    yield* this.walk(prefix);
  }

  private async *walk(prefix: string): AsyncGenerator<ObjectInfo> {
    const dir = this.path(prefix);
    let names: string[];
    try {
      names = (await readdir(dir)).sort();
    } catch (err) {
      if (isNotFound(err)) return;
      throw err;
    }
    // Stat a directory's entries together: a folder of 400 blobs costs one round of syscalls.
    const stats = await Promise.all(
      names.map((n) =>
        stat(join(dir, n)).catch((err: unknown) => {
          if (isNotFound(err)) return undefined;
          throw err;
        }),
      ),
    );
    for (let i = 0; i < names.length; i++) {
      const s = stats[i];
      const key = `${prefix}${names[i]}`;
      if (s?.isDirectory()) yield* this.walk(`${key}/`);
      else if (s?.isFile()) yield { key, size: s.size, modifiedMs: s.mtimeMs };
    }
  }

  /** Fills and atomic writes stage in the local temp directory, which BlobStore sweeps. */
  sweepDebris(): Promise<Debris[]> {
    return Promise.resolve([]);
  }

  async problem(): Promise<string | undefined> {
    try {
      await stat(this.root);
      return undefined;
    } catch (err) {
      return (err as Error).message;
    }
  }
}

class FileReader implements ObjectReader {
  private owned = true;

  constructor(
    private readonly fd: number,
    readonly size: number,
  ) {}

  async read(
    buffer: Buffer,
    offset: number,
    length: number,
    position: number,
  ): Promise<{ bytesRead: number }> {
    let done = 0;
    while (done < length) {
      const { bytesRead } = await readAsync(this.fd, buffer, offset + done, length - done, position + done);
      if (bytesRead === 0) break; // the end of the file
      done += bytesRead;
    }
    return { bytesRead: done };
  }

  stream(start: number, end: number): Readable {
    return createReadStream("", { fd: this.fd, start, end, autoClose: false, highWaterMark: 256 * 1024 });
  }

  takeDescriptor(): number {
    this.owned = false;
    return this.fd;
  }

  async close(): Promise<void> {
    if (!this.owned) return;
    this.owned = false;
    await closeAsync(this.fd);
  }
}
/** Removes `dir` and then its parents while they are empty, up to (not including) `stop`. */
export async function pruneEmptyDirs(dir: string, stop: string): Promise<void> {
  let d = dir;
  while (d.startsWith(stop + sep) && d !== stop) {
    try {
      await rmdir(d);
    } catch {
      return; // not empty (or a mirror just wrote into it): stop here
    }
    d = join(d, "..");
  }
}
