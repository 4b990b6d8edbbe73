import { createReadStream, type Dirent } from "node:fs";
import { readFile, readdir, rm, rmdir, stat } from "node:fs/promises";
import { join, relative, sep } from "node:path";
import { createHash } from "node:crypto";
import type { CachePaths } from "./paths.ts";
import { parseDigest } from "../oci/digest.ts";
import type { TagEntry, TagRecord } from "./manifest-store.ts";

// Reading the cache directory from outside the server, for the maintenance commands. Everything
// here tolerates a mirror running on the same directory at the same time: a file that vanishes
// between listing and reading (eviction, another purge) is skipped, never an error.
// The layout is drawn in src/storage/paths.ts.

export interface ContentFile {
  kind: "blob" | "manifest";
  hex: string;
  path: string;
  size: number;
  /** For blobs: the last read (the mirror touches it); for manifests: when it was cached. */
  mtimeMs: number;
}

export interface TagFile {
  upstream: string;
  repo: string;
  tag: string;
  path: string;
  size: number;
  /** undefined when the file is not a readable tag record. */
  entries: TagEntry[] | undefined;
}

export interface TmpEntry {
  name: string;
  path: string;
  size: number;
  mtimeMs: number;
}

const HEX = /^[a-f0-9]{64}$/;

/** Every blob or manifest file. Names that are not 64 hex characters are not ours and are left out. */
export async function contentFiles(paths: CachePaths, kind: ContentFile["kind"]): Promise<ContentFile[]> {
  const root = kind === "blob" ? paths.blobsDir : paths.manifestsDir;
  const out: ContentFile[] = [];
  for (const prefix of await listDir(root)) {
    const dir = join(root, prefix);
    const names = (await listDir(dir)).filter((n) => HEX.test(n));
    const stats = await Promise.all(names.map((n) => statOrUndefined(join(dir, n))));
    names.forEach((hex, i) => {
      const s = stats[i];
      if (s?.isFile()) out.push({ kind, hex, path: join(dir, hex), size: s.size, mtimeMs: s.mtimeMs });
    });
  }
  return out;
}

/**
 * Every tag record: repos/<upstream>/<repo...>/_tags/<tag>.json. A repository can have nested
 * repositories below it (library/app and library/app/tools), so the walk goes on past `_tags`.
 */
export async function tagFiles(paths: CachePaths): Promise<TagFile[]> {
  const out: TagFile[] = [];
  for (const upstream of await listDir(paths.reposDir)) {
    const upstreamDir = join(paths.reposDir, upstream);
    const walk = async (dir: string): Promise<void> => {
      for (const name of await listDir(dir)) {
        const path = join(dir, name);
        if (name !== "_tags") {
          if ((await statOrUndefined(path))?.isDirectory()) await walk(path);
          continue;
        }
        const repo = relative(upstreamDir, dir).split(sep).join("/");
        for (const file of await listDir(path)) {
          if (!file.endsWith(".json")) continue;
          const t = await readTagFile(join(path, file));
          if (t) out.push({ upstream, repo, tag: file.slice(0, -".json".length), ...t });
        }
      }
    };
    await walk(upstreamDir);
  }
  return out.sort((a, b) =>
    `${a.upstream}/${a.repo}:${a.tag}`.localeCompare(`${b.upstream}/${b.repo}:${b.tag}`),
  );
}

/**
 * The repositories that have a tag record, per upstream: one directory walk, no file read
 * (the catalog's index; tagFiles reads every record). Nested repositories as in tagFiles.
 */
export async function taggedRepositories(paths: CachePaths): Promise<Map<string, Set<string>>> {
  const out = new Map<string, Set<string>>();
  for (const upstream of await listDir(paths.reposDir)) {
    const upstreamDir = join(paths.reposDir, upstream);
    const repos = new Set<string>();
    const walk = async (dir: string): Promise<void> => {
      for (const entry of await listDirEntries(dir)) {
        if (!entry.isDirectory()) continue;
        const path = join(dir, entry.name);
        if (entry.name !== "_tags") {
          await walk(path);
        } else if ((await listDir(path)).some((f) => f.endsWith(".json"))) {
          repos.add(relative(upstreamDir, dir).split(sep).join("/"));
        }
      }
    };
    await walk(upstreamDir);
    if (repos.size > 0) out.set(upstream, repos);
  }
  return out;
}

export async function tmpEntries(paths: CachePaths): Promise<TmpEntry[]> {
  const names = await listDir(paths.tmpDir);
  const stats = await Promise.all(names.map((n) => statOrUndefined(join(paths.tmpDir, n))));
  return names.flatMap((name, i) => {
    const s = stats[i];
    return s ? [{ name, path: join(paths.tmpDir, name), size: s.size, mtimeMs: s.mtimeMs }] : [];
  });
}

/** Reads a manifest file; undefined when it is gone. */
export async function readIfPresent(path: string): Promise<Buffer | undefined> {
  try {
    return await readFile(path);
  } catch (err) {
    if (isNotFound(err)) return undefined;
    throw err;
  }
}

/** sha256 of a file as 64 hex characters, streamed; undefined when the file vanished meanwhile. */
export async function hashFile(path: string): Promise<string | undefined> {
  const hash = createHash("sha256");
  try {
    for await (const chunk of createReadStream(path, { highWaterMark: 1024 * 1024 })) {
      hash.update(chunk as Buffer);
    }
  } catch (err) {
    if (isNotFound(err)) return undefined;
    throw err;
  }
  return hash.digest("hex");
}

/** The size of a regular file; undefined when there is none. */
export async function fileSize(path: string): Promise<number | undefined> {
  const s = await statOrUndefined(path);
  return s?.isFile() ? s.size : undefined;
}

/** Removes a file or directory tree; false when it was already gone. */
export async function remove(path: string): Promise<boolean> {
  const existed = (await statOrUndefined(path)) !== undefined;
  await rm(path, { recursive: true, force: true });
  return existed;
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

export function isNotFound(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  return code === "ENOENT" || code === "ENOTDIR";
}

async function readTagFile(path: string): Promise<Omit<TagFile, "upstream" | "repo" | "tag"> | undefined> {
  const bytes = await readIfPresent(path);
  if (bytes === undefined) return undefined;
  const entries = parseTagRecord(bytes.toString("utf8"))?.entries;
  return { path, size: bytes.length, entries: entries && oncePerManifest(entries) };
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

async function listDir(dir: string): Promise<string[]> {
  try {
    return (await readdir(dir)).sort();
  } catch (err) {
    if (isNotFound(err)) return [];
    throw err;
  }
}

async function listDirEntries(dir: string): Promise<Dirent[]> {
  try {
    return await readdir(dir, { withFileTypes: true });
  } catch (err) {
    if (isNotFound(err)) return [];
    throw err;
  }
}

async function statOrUndefined(path: string) {
  try {
    return await stat(path);
  } catch (err) {
    if (isNotFound(err)) return undefined;
    throw err;
  }
}

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
