import { readFile } from "node:fs/promises";
import { LRUCache } from "lru-cache";
import { writeFileAtomic } from "./atomic.ts";
import type { CachePaths } from "./paths.ts";
import { parseDigest, type Digest } from "../oci/digest.ts";

// Manifests by digest, and tag records. Both are small and hot (every pull starts with them),
// so they are served from memory and written through to disk, where they survive a restart.

export interface TagEntry {
  /**
   * The accept set this entry answers (acceptKey in mirror/policy.ts). Absent in records written
   * before entries were keyed by it: those are only revalidated, never trusted as they are.
   */
  accept?: string;
  digest: string;
  mediaType: string;
  /** When the upstream last confirmed this tag → digest (ms since the epoch). */
  checkedAt: number;
}

/** A tag can point to a different manifest per set of types a client accepts; one entry each. */
export interface TagRecord {
  entries: TagEntry[];
}

const MAX_TAG_ENTRIES = 16;

/** A tag record from its file's text; undefined when it is not valid JSON or not a record. */
export function parseTagRecord(text: string): TagRecord | undefined {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch {
    return undefined;
  }
  const entries = (doc as Partial<TagRecord> | null)?.entries;
  return Array.isArray(entries) ? { entries: entries.filter(isTagEntry) } : undefined;
}

function isTagEntry(e: unknown): e is TagEntry {
  if (typeof e !== "object" || e === null) return false;
  const r = e as Record<string, unknown>;
  return (
    typeof r.digest === "string" &&
    parseDigest(r.digest) !== undefined &&
    typeof r.mediaType === "string" &&
    typeof r.checkedAt === "number" &&
    (r.accept === undefined || typeof r.accept === "string")
  );
}

function isMissing(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  return code === "ENOENT" || code === "ENOTDIR";
}

export class ManifestStore {
  private readonly manifests: LRUCache<string, Buffer>;
  private readonly tags = new LRUCache<string, TagRecord>({ max: 100_000 });

  constructor(
    private readonly paths: CachePaths,
    memoryBytes: number,
  ) {
    this.manifests = new LRUCache<string, Buffer>({
      maxSize: Math.max(memoryBytes, 1),
      sizeCalculation: (b) => Math.max(b.length, 1),
    });
  }

  async get(d: Digest): Promise<Buffer | undefined> {
    const hit = this.manifests.get(d.hex);
    if (hit) return hit;
    try {
      const bytes = await readFile(this.paths.manifest(d));
      this.manifests.set(d.hex, bytes);
      return bytes;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
      throw err;
    }
  }

  /** The caller has verified that `bytes` hash to `d`. */
  async put(d: Digest, bytes: Buffer): Promise<void> {
    this.manifests.set(d.hex, bytes);
    await writeFileAtomic(this.paths.manifest(d), bytes, this.paths.tmpDir);
  }

  async getTag(upstream: string, repo: string, tag: string): Promise<TagRecord | undefined> {
    const key = `${upstream}/${repo}:${tag}`;
    const hit = this.tags.get(key);
    if (hit) return hit;
    let text: string;
    try {
      text = await readFile(this.paths.tag(upstream, repo, tag), "utf8");
    } catch (err) {
      // Only "there is no record" is a miss. EMFILE, EACCES, EIO are the caller's to report:
      // swallowed, they would turn every request into a silent refetch.
      if (isMissing(err)) return undefined;
      throw err;
    }
    // A record torn or edited by something other than us: ask the upstream again.
    const rec = parseTagRecord(text);
    if (rec) this.tags.set(key, rec);
    return rec;
  }

  /**
   * Records `entry` as the answer for its accept set, replacing that set's previous answer.
   * Entries without a set (older records) go: an answer the upstream just gave supersedes them.
   * At most MAX_TAG_ENTRIES sets are kept, the most recently confirmed, so clients sending
   * ever new Accept headers cannot grow a record without bound.
   */
  async putTag(upstream: string, repo: string, tag: string, entry: TagEntry): Promise<void> {
    const old = (await this.getTag(upstream, repo, tag))?.entries ?? [];
    const others = old.filter((e) => e.accept !== undefined && e.accept !== entry.accept);
    others.sort((a, b) => b.checkedAt - a.checkedAt);
    const rec: TagRecord = { entries: [entry, ...others.slice(0, MAX_TAG_ENTRIES - 1)] };
    this.tags.set(`${upstream}/${repo}:${tag}`, rec);
    await writeFileAtomic(this.paths.tag(upstream, repo, tag), JSON.stringify(rec), this.paths.tmpDir);
  }
}
