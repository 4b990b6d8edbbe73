import { randomUUID, type Hash } from "node:crypto";
import { createReadStream, createWriteStream } from "node:fs";
import {
  mkdir,
  open,
  readFile,
  readdir,
  rename,
  rm,
  stat,
  statfs,
  truncate,
  writeFile,
} from "node:fs/promises";
import { join } from "node:path";
import { Transform, type Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { RegistryError } from "../oci/errors.ts";
import { formatDigest, sha256Hasher, type Digest } from "../oci/digest.ts";
import { LockBusyError, LockMissingError, Locks } from "./upload-lock.ts";

// Blob upload sessions of hosted repositories (the push side of the distribution spec), as local
// files below the uploads directory (paths.ts):
//
//   uploads/<uuid>/info    {"repo","started"}: the session exists while this does
//   uploads/<uuid>/data    the bytes so far, appended to
//   uploads/<uuid>/lock    <pid>: a request of that process is writing or finishing it
//
// Nothing about a session is only in memory: the offset is the data file's size and the owner is
// in info, so any worker process of this host can take any request of a session. What a process
// keeps is a sha256 of the bytes it appended itself; it is trusted at the end only when it
// covers exactly the file's size (the common single-PATCH upload then reads its bytes once), and
// the file is hashed again otherwise. One request at a time may write or finish a session, in
// whichever process (the lock), so a remembered hash never misses bytes and a published file is
// never appended to.

export interface UploadLimits {
  dir: string;
  /** Largest blob one upload may make (hosted.maxBlobSize). */
  maxBlobSize: number;
  /** New bytes are refused while the uploads' filesystem has less free space (cache.minFree). */
  minFreeBytes: number;
  /** A session with no new bytes for this long is removed by sweep() (hosted.uploadTimeout). */
  idleTimeoutMs: number;
}

export interface AppendOptions {
  /** Content-Range: where the client says the bytes go; start must be the current size. */
  range?: { start: number; end: number };
  /** Content-Length, when the client sent one. */
  length?: number;
}

/** Moves the verified data file under the digest (the hosted store); the file is gone afterwards. */
export type Publish = (file: string, size: number) => Promise<void>;

const ID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
/** Free space is looked at again after this many bytes of one request. */
const FREE_CHECK_EVERY = 64 * 1024 * 1024;
/** A refused body is read to its end (so the client gets the answer) up to this much, then cut. */
const DRAIN_MAX = 64 * 1024 * 1024;

interface Info {
  repo: string;
  started: number;
}

export class UploadSessions {
  /** This process's running hash of a session, valid while `size` is the data file's size. */
  private readonly hashes = new Map<string, { hash: Hash; size: number }>();
  private readonly locks: Locks;

  constructor(
    readonly limits: UploadLimits,
    /** Free bytes on the uploads' filesystem; a test swaps it. */
    private readonly freeBytes: (dir: string) => Promise<number> = diskFree,
  ) {
    this.locks = new Locks(limits.idleTimeoutMs);
  }

  /** Starts a session for `repo`; its id goes into the Location the client is given. */
  async start(repo: string): Promise<string> {
    await this.requireSpace();
    const id = randomUUID();
    const dir = join(this.limits.dir, id);
    await mkdir(dir, { recursive: true });
    await writeFile(join(dir, "data"), "");
    // info last, by rename: a session is never seen half made.
    const info: Info = { repo, started: Date.now() };
    await writeFile(join(dir, "info.tmp"), JSON.stringify(info));
    await rename(join(dir, "info.tmp"), join(dir, "info"));
    return id;
  }

  /** The bytes received so far; BLOB_UPLOAD_UNKNOWN for a session that is not `repo`'s. */
  async size(repo: string, id: string): Promise<number> {
    return fileSize(await this.locate(repo, id));
  }

  /**
   * Appends `body`. A Content-Range must start at the current size (else RANGE_INVALID, 416).
   * A refused body (too large, no room, not the length announced) leaves the session at its
   * previous size; a body cut by the client or the network leaves what landed, and the size
   * says how much. Resolves to the new size.
   */
  async append(repo: string, id: string, body: Readable, opts: AppendOptions = {}): Promise<number> {
    const data = await this.locate(repo, id);
    return this.exclusive(id, async () => {
      const before = await fileSize(data);
      const { range, length } = opts;
      const expect = range ? range.end - range.start + 1 : length;
      if (range && range.start !== before)
        throw rangeInvalid(before, "the range must start where the upload ends");
      if (range && length !== undefined && length !== expect)
        throw rangeInvalid(before, "Content-Range and Content-Length disagree");
      const max = this.limits.maxBlobSize;
      if (expect !== undefined && before + expect > max) throw tooLarge(max);
      await this.requireSpace();
      // A running hash continues only from exactly where it stopped; a new one only from zero.
      const known = this.hashes.get(id);
      this.hashes.delete(id);
      const hash = known?.size === before ? known.hash : before === 0 ? sha256Hasher() : undefined;
      let added = 0;
      let discarded = 0;
      let refusal: RegistryError | undefined;
      let nextCheck = FREE_CHECK_EVERY;
      const guard = new Transform({
        transform: (chunk: Buffer, _enc, done) => {
          if (refusal) {
            discarded += chunk.length;
            return done(discarded > DRAIN_MAX ? refusal : null);
          }
          if (before + added + chunk.length > max) refusal = tooLarge(max);
          else if (expect !== undefined && added + chunk.length > expect)
            refusal = rangeInvalid(before, "the body is longer than announced");
          if (refusal) return done();
          added += chunk.length;
          hash?.update(chunk);
          if (added < nextCheck) return done(null, chunk);
          nextCheck += FREE_CHECK_EVERY;
          this.requireSpace().then(
            () => done(null, chunk),
            (err: RegistryError) => {
              refusal = err;
              done();
            },
          );
        },
      });
      const file = createWriteStream(data, { flags: "a" });
      let diskError: Error | undefined;
      file.once("error", (err) => (diskError ??= err));
      try {
        await pipeline(body, guard, file);
      } catch (err) {
        // Cut by the client or the network, or the disk failed: what landed stays, and the next
        // request (or GET of the status) learns the size from the file.
        if (diskError) throw diskError;
        if (!refusal)
          throw new RegistryError("BLOB_UPLOAD_INVALID", "the body was cut; the upload keeps what arrived", {
            detail: { session: id },
            cause: err,
          });
      }
      if (!refusal && expect !== undefined && added !== expect)
        refusal = rangeInvalid(before, "the body is shorter than announced");
      if (refusal) {
        await truncate(data, before);
        throw refusal;
      }
      const after = await fileSize(data);
      if (hash && after === before + added) this.hashes.set(id, { hash, size: after });
      return after;
    });
  }

  /**
   * Checks the bytes against `digest` and hands the file to `publish`; the session is gone
   * afterwards, whatever the outcome (as distribution: a wrong digest cancels the upload).
   */
  async finish(repo: string, id: string, digest: Digest, publish: Publish): Promise<number> {
    const data = await this.locate(repo, id);
    return this.exclusive(id, async () => {
      try {
        const size = await fileSize(data);
        const known = this.hashes.get(id);
        this.hashes.delete(id);
        const hex = known?.size === size ? known.hash.digest("hex") : await hashFile(data);
        if (`sha256:${hex}` !== formatDigest(digest))
          throw new RegistryError("DIGEST_INVALID", "the uploaded content does not match the digest", {
            detail: { digest: formatDigest(digest), actual: `sha256:${hex}`, size },
          });
        // On disk before it is published: a crash must not leave a short blob under a digest.
        // Dated now, not at its last PATCH: gc's grace period (hosted.gcGrace) counts from here.
        const fh = await open(data, "r+");
        try {
          const now = new Date();
          await fh.utimes(now, now);
          await fh.sync();
        } finally {
          await fh.close();
        }
        await publish(data, size);
        return size;
      } finally {
        await this.remove(id);
      }
    });
  }

  /** DELETE of an upload. */
  async cancel(repo: string, id: string): Promise<void> {
    await this.locate(repo, id);
    await this.exclusive(id, () => this.remove(id));
  }

  /** Removes sessions idle longer than the upload timeout; resolves to how many. */
  async sweep(now = Date.now()): Promise<number> {
    let names: string[];
    try {
      names = await readdir(this.limits.dir);
    } catch {
      return 0; // no upload yet
    }
    // Hashes of sessions another process finished or removed.
    const present = new Set(names);
    for (const id of this.hashes.keys()) if (!present.has(id)) this.hashes.delete(id);
    let removed = 0;
    for (const id of names) {
      if (!ID.test(id) || !(await this.idle(id, now, ["", "data", "info"]))) continue;
      // Under the lock, and idle still: a request may have come in between. (Taking the lock
      // touched the directory: only the files count now.)
      const gone = await this.exclusive(
        id,
        async () => (await this.idle(id, now, ["data", "info"])) && (await this.remove(id), true),
      ).catch(
        () => false, // busy: not idle after all
      );
      if (gone) removed++;
    }
    return removed;
  }

  /**
   * Nothing of `names` in the session's directory changed for the upload timeout. "" is the
   * directory itself, which a session being made has before its files.
   */
  private async idle(id: string, now: number, names: string[]): Promise<boolean> {
    const dir = join(this.limits.dir, id);
    const times = await Promise.all(
      names.map((f) =>
        stat(join(dir, f)).then(
          (s) => s.mtimeMs,
          () => 0,
        ),
      ),
    );
    return now - Math.max(...times) >= this.limits.idleTimeoutMs;
  }

  /** The data file of `repo`'s session `id`; BLOB_UPLOAD_UNKNOWN for anything else. */
  private async locate(repo: string, id: string): Promise<string> {
    if (!ID.test(id)) throw uploadUnknown(id);
    const dir = join(this.limits.dir, id);
    let info: Info;
    try {
      info = JSON.parse(await readFile(join(dir, "info"), "utf8")) as Info;
    } catch {
      throw uploadUnknown(id);
    }
    // Another repository's session is as unknown as none: ids are not shared between names.
    if (info.repo !== repo) throw uploadUnknown(id);
    return join(dir, "data");
  }

  /** Runs `work` holding the session's lock (upload-lock.ts); 409 while another request holds it. */
  private async exclusive<T>(id: string, work: () => Promise<T>): Promise<T> {
    try {
      return await this.locks.run(join(this.limits.dir, id, "lock"), work);
    } catch (err) {
      if (err instanceof LockBusyError)
        throw new RegistryError("BLOB_UPLOAD_INVALID", "another request is writing to this upload", {
          status: 409,
          detail: { session: id },
        });
      if (err instanceof LockMissingError) throw uploadUnknown(id);
      throw err;
    }
  }

  private async remove(id: string): Promise<void> {
    this.hashes.delete(id);
    const dir = join(this.limits.dir, id);
    // info first: from then on the session is unknown to every process.
    await rm(join(dir, "info"), { force: true });
    await rm(dir, { recursive: true, force: true });
  }

  /** Throws a registry error (507) while free space is below cache.minFree. */
  async requireSpace(): Promise<void> {
    await mkdir(this.limits.dir, { recursive: true });
    const free = await this.freeBytes(this.limits.dir);
    if (free < this.limits.minFreeBytes)
      // 507, not 503: the cause is exact (a full disk, not an outage), and it is still a server
      // error, so clients retry or report it as ours; /readyz says the same (freeSpace).
      throw new RegistryError("UNAVAILABLE", "the registry is short of disk space; uploads are refused", {
        status: 507,
        detail: { free, minFree: this.limits.minFreeBytes },
      });
  }
}

export function uploadUnknown(id: string): RegistryError {
  return new RegistryError("BLOB_UPLOAD_UNKNOWN", "blob upload unknown to registry", {
    detail: { session: id },
  });
}

/** The Range header of an upload of `size` bytes, as distribution writes it ("0-0" when empty). */
export function rangeOf(size: number): string {
  return `0-${Math.max(0, size - 1)}`;
}

function rangeInvalid(size: number, why: string): RegistryError {
  return new RegistryError("RANGE_INVALID", why, { headers: { range: rangeOf(size) }, detail: { size } });
}

function tooLarge(max: number): RegistryError {
  return new RegistryError("SIZE_INVALID", `the blob is larger than this registry takes (${max} bytes)`, {
    status: 413,
    detail: { maxBlobSize: max },
  });
}

async function fileSize(path: string): Promise<number> {
  try {
    return (await stat(path)).size;
  } catch (err) {
    // Removed since it was located (a DELETE or the sweep came first).
    if ((err as NodeJS.ErrnoException).code === "ENOENT") throw uploadUnknown(path.split("/").at(-2) ?? "");
    throw err;
  }
}

async function hashFile(path: string): Promise<string> {
  const hash = sha256Hasher();
  for await (const chunk of createReadStream(path, { highWaterMark: 1024 * 1024 }))
    hash.update(chunk as Buffer);
  return hash.digest("hex");
}

async function diskFree(dir: string): Promise<number> {
  const s = await statfs(dir);
  return s.bavail * s.bsize;
}
