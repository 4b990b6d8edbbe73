import { createHash } from "node:crypto";
import { readdir, stat } from "node:fs/promises";
import { join } from "node:path";
import { parseDigest } from "../oci/digest.ts";
import type { StorageDriver } from "./driver.ts";
import { isNotFound } from "./fs-driver.ts";
import { BLOBS, MANIFESTS, REPOS, contentHex, parseTagKey } from "./keys.ts";
import { loadLastRead } from "./last-read.ts";
import type { TagEntry, TagRecord } from "./manifest-store.ts";
import type { CachePaths } from "./paths.ts";

// The one walk of the cache, whatever the driver: for the catalog's index, eviction's index at
// start, and the maintenance commands (ls, purge, gc, verify). Everything here tolerates a
// mirror running on the same storage at the same time: an object that vanishes between listing
// and reading (eviction, another purge) is skipped, never an error. Keys are drawn in keys.ts.

export interface ContentObject {
  kind: "blob" | "manifest";
  hex: string;
  key: string;
  size: number;
  /** For blobs: the last read (last-read.ts), else when written; for manifests: when cached. */
  mtimeMs: number;
}

export interface TagObject {
  upstream: string;
  repo: string;
  tag: string;
  key: string;
  size: number;
  /** undefined when the object is not a readable tag record. */
  entries: TagEntry[] | undefined;
}

export interface TmpEntry {
  name: string;
  path: string;
  size: number;
  mtimeMs: number;
}

/** Every blob or manifest. Keys whose name is not 64 hex characters are not ours and are left out. */
export async function contentObjects(
  driver: StorageDriver,
  kind: ContentObject["kind"],
): Promise<ContentObject[]> {
  const reads = kind === "blob" ? await loadLastRead(driver) : undefined;
  const out: ContentObject[] = [];
  for await (const o of driver.list(kind === "blob" ? BLOBS : MANIFESTS)) {
    const hex = contentHex(o.key);
    if (!hex) continue;
    const mtimeMs = Math.max(o.modifiedMs, reads?.get(hex) ?? 0);
    out.push({ kind, hex, key: o.key, size: o.size, mtimeMs });
  }
  return out;
}

/**
 * Every tag record: repos/<upstream>/<repo...>/_tags/<tag>.json. A repository can have nested
 * repositories below it (library/app and library/app/tools); the listing sees them all.
 */
export async function tagObjects(driver: StorageDriver): Promise<TagObject[]> {
  const out: TagObject[] = [];
  for await (const o of driver.list(REPOS)) {
    const at = parseTagKey(o.key);
    if (!at) continue;
    const bytes = await driver.get(o.key);
    if (bytes === undefined) continue;
    const entries = parseTagRecord(bytes.toString("utf8"))?.entries;
    out.push({ ...at, key: o.key, size: bytes.length, entries: entries && oncePerManifest(entries) });
  }
  return out.sort((a, b) =>
    `${a.upstream}/${a.repo}:${a.tag}`.localeCompare(`${b.upstream}/${b.repo}:${b.tag}`),
  );
}

/** The repositories that have a tag record, per upstream: one listing, no record read. */
export async function taggedRepositories(driver: StorageDriver): Promise<Map<string, Set<string>>> {
  const out = new Map<string, Set<string>>();
  for await (const o of driver.list(REPOS)) {
    const at = parseTagKey(o.key);
    if (!at) continue;
    let repos = out.get(at.upstream);
    if (!repos) out.set(at.upstream, (repos = new Set()));
    repos.add(at.repo);
  }
  return out;
}

/** Fills a crash left in the local temp directory. */
export async function tmpEntries(paths: CachePaths): Promise<TmpEntry[]> {
  let names: string[];
  try {
    names = await readdir(paths.tmpDir);
  } catch (err) {
    if (isNotFound(err)) return [];
    throw err;
  }
  const stats = await Promise.all(
    names.map((n) =>
      stat(join(paths.tmpDir, n)).catch((err: unknown) => {
        if (isNotFound(err)) return undefined;
        throw err;
      }),
    ),
  );
  return names.flatMap((name, i) => {
    const s = stats[i];
    return s ? [{ name, path: join(paths.tmpDir, name), size: s.size, mtimeMs: s.mtimeMs }] : [];
  });
}

/** sha256 of an object as 64 hex characters, streamed; undefined when it vanished meanwhile. */
export async function hashObject(driver: StorageDriver, key: string): Promise<string | undefined> {
  const reader = await driver.open(key);
  if (!reader) return undefined;
  const hash = createHash("sha256");
  try {
    if (reader.size > 0)
      for await (const chunk of reader.stream(0, reader.size - 1)) hash.update(chunk as Buffer);
  } finally {
    await reader.close();
  }
  return hash.digest("hex");
}

/**
 * A record holds one entry per accept set, and several sets often got the same manifest: to
 * the maintenance views a tag points to each manifest once, last checked at the latest check.
 */
function oncePerManifest(entries: TagEntry[]): TagEntry[] {
  const byDigest = new Map<string, TagEntry>();
  for (const e of entries) {
    const seen = byDigest.get(e.digest);
    if (!seen) byDigest.set(e.digest, { ...e });
    else seen.checkedAt = Math.max(seen.checkedAt, e.checkedAt);
  }
  return [...byDigest.values()];
}

/** A tag record from its text; undefined when it is not valid JSON or not a record. */
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
