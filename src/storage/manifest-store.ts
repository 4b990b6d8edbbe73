import { LRUCache } from "lru-cache";
import { atMost } from "../lru-bound.ts";
import { parseTagRecord, taggedRepositories } from "./cache-walk.ts";
import type { StorageDriver } from "./driver.ts";
import { manifestKey, manifestMetaKey, tagKey } from "./keys.ts";
import type { Digest } from "../oci/digest.ts";
import { MANIFEST_TYPES } from "../oci/media-types.ts";

// Manifests by digest, and tag records. Both are small and hot (every pull starts with them),
// so they are served from memory and written through to storage, where they survive a restart.

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
/** How long the catalog's index trusts itself without a walk (changes by other processes). */
const REFRESH_MS = 5 * 60_000;

/** manifests/sha256/<hex[0:2]>/<hex>.meta: what is known about a manifest besides its bytes. */
interface ManifestMeta {
  mediaType: string;
}

/** A cached manifest and what an answer needs besides its bytes. */
export interface StoredManifest {
  bytes: Buffer;
  /**
   * The media type the upstream declared (a known manifest type); undefined for manifests
   * cached before types were recorded, which the caller sniffs once and records (recordType).
   */
  mediaType: string | undefined;
}

export class ManifestStore {
  private readonly manifests: LRUCache<string, StoredManifest>;
  private readonly tags = new LRUCache<string, TagRecord>(atMost(100_000));
  private readonly repos = new RepoIndex(() => taggedRepositories(this.driver));

  constructor(
    private readonly driver: StorageDriver,
    memoryBytes: number,
  ) {
    this.manifests = new LRUCache<string, StoredManifest>({
      maxSize: Math.max(memoryBytes, 1),
      sizeCalculation: (m) => Math.max(m.bytes.length, 1),
    });
  }

  /**
   * A hit in memory costs a map lookup; from disk, reading the bytes and a tiny type record.
   * The manifest body is never parsed here: a HEAD of a 4 MB index must not cost a JSON parse.
   */
  async get(d: Digest): Promise<StoredManifest | undefined> {
    const hit = this.manifests.get(d.hex);
    if (hit) return hit;
    const [bytes, mediaType] = await Promise.all([this.driver.get(manifestKey(d)), this.readType(d)]);
    if (bytes === undefined) return undefined;
    const m: StoredManifest = { bytes, mediaType };
    this.manifests.set(d.hex, m);
    return m;
  }

  /** The copy in memory alone: no I/O, no promise (the fast path, http/fast-answer.ts). */
  peek(d: Digest): StoredManifest | undefined {
    return this.manifests.get(d.hex);
  }

  /** The tag record in memory alone, as getTag would find it first. */
  peekTag(upstream: string, repo: string, tag: string): TagRecord | undefined {
    return this.tags.get(`${upstream}/${repo}:${tag}`);
  }

  /**
   * The caller has verified that `bytes` hash to `d`, and checked `mediaType` against the known
   * manifest types. The type record goes first: a crash between the two writes leaves a record
   * without a manifest (a miss) rather than a manifest without its type.
   */
  async put(d: Digest, bytes: Buffer, mediaType: string): Promise<void> {
    this.manifests.set(d.hex, { bytes, mediaType });
    await this.writeType(d, mediaType);
    await this.driver.put(manifestKey(d), bytes);
  }

  /** For a manifest cached before types were recorded: its sniffed type, from now on kept. */
  async recordType(d: Digest, mediaType: string): Promise<void> {
    const m = this.manifests.get(d.hex);
    if (m) m.mediaType = mediaType;
    await this.writeType(d, mediaType);
  }

  private async writeType(d: Digest, mediaType: string): Promise<void> {
    const record: ManifestMeta = { mediaType };
    await this.driver.put(manifestMetaKey(d), JSON.stringify(record));
  }

  /** The recorded type; undefined when there is none, or it is torn or not a manifest type. */
  private async readType(d: Digest): Promise<string | undefined> {
    const text = await this.driver.get(manifestMetaKey(d));
    if (text === undefined) return undefined;
    try {
      const t = (JSON.parse(text.toString("utf8")) as Partial<ManifestMeta> | null)?.mediaType;
      return typeof t === "string" && MANIFEST_TYPES.has(t) ? t : undefined;
    } catch {
      return undefined;
    }
  }

  /**
   * `fresh` skips the copy in memory: another worker may have written the record since (see
   * ManifestService's confirmedElsewhere).
   */
  async getTag(
    upstream: string,
    repo: string,
    tag: string,
    { fresh = false } = {},
  ): Promise<TagRecord | undefined> {
    const key = `${upstream}/${repo}:${tag}`;
    const hit = fresh ? undefined : this.tags.get(key);
    if (hit) return hit;
    // Only "there is no record" is a miss. EMFILE, EACCES, EIO, an unreachable bucket reject:
    // swallowed, they would turn every request into a silent refetch.
    const bytes = await this.driver.get(tagKey(upstream, repo, tag));
    if (bytes === undefined) return undefined;
    // A record torn or edited by something other than us: ask the upstream again.
    const rec = parseTagRecord(bytes.toString("utf8"));
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
    await this.driver.put(tagKey(upstream, repo, tag), JSON.stringify(rec));
    this.repos.add(upstream, repo);
  }

  /** The repositories with a tag record, per upstream (for /v2/_catalog); see RepoIndex. */
  repositories(): Promise<ReadonlyMap<string, ReadonlySet<string>>> {
    return this.repos.get();
  }

  /**
   * Tag records were removed behind the store's back (purge, gc): the next catalog walks the
   * storage again. Records cached in memory stay; a purged tag is a record the upstream
   * confirms again anyway.
   */
  invalidateRepositories(): void {
    this.repos.invalidate();
  }

  /** Objects were removed behind the store's back (storage/generation.ts): forget every copy in memory. */
  forgetMemory(): void {
    this.manifests.clear();
    this.tags.clear();
    this.repos.invalidate();
  }
}

/**
 * Which repositories have tag records, without a walk per /v2/_catalog: walked once
 * (lazily), kept up to date as tags are written, walked again after invalidate() and, to pick
 * up what another process did to the storage (`regmirror purge` from a shell), after
 * REFRESH_MS. Concurrent requests share one walk.
 */
class RepoIndex {
  private repos: Map<string, Set<string>> | undefined;
  private builtAt = 0;
  private building: Promise<Map<string, Set<string>>> | undefined;
  /** Tags written while a walk runs: the walk may have passed their directory already. */
  private addedDuringWalk: Array<[string, string]> = [];
  /** Bumped by invalidate(), so that a walk begun before a purge is not kept. */
  private generation = 0;

  constructor(private readonly walk: () => Promise<Map<string, Set<string>>>) {}

  get(): Promise<Map<string, Set<string>>> {
    if (this.repos && Date.now() - this.builtAt < REFRESH_MS) return Promise.resolve(this.repos);
    return (this.building ??= this.build());
  }

  add(upstream: string, repo: string): void {
    if (this.building) this.addedDuringWalk.push([upstream, repo]);
    if (this.repos) addTo(this.repos, upstream, repo);
  }

  invalidate(): void {
    this.generation++;
    this.repos = undefined;
    this.building = undefined;
  }

  private async build(): Promise<Map<string, Set<string>>> {
    const generation = this.generation;
    this.addedDuringWalk = [];
    try {
      const repos = await this.walk();
      for (const [upstream, repo] of this.addedDuringWalk) addTo(repos, upstream, repo);
      if (generation === this.generation) {
        this.repos = repos;
        this.builtAt = Date.now();
      }
      return repos;
    } finally {
      if (generation === this.generation) this.building = undefined;
    }
  }
}

function addTo(repos: Map<string, Set<string>>, upstream: string, repo: string): void {
  let set = repos.get(upstream);
  if (!set) repos.set(upstream, (set = new Set()));
  set.add(repo);
}
