import { parseDigest } from "../oci/digest.ts";
import type { StorageDriver } from "../storage/driver.ts";
import { manifestKey } from "../storage/keys.ts";
import { manifestRefs } from "./manifest-refs.ts";

// One walk of the hosted repositories (hosted/store.ts draws the keys), for hosted gc and the
// status page's hosted listing: one listing of hosted/repos/, the tag records read, and the
// manifests read once each for what they reference. Only the driver's list and get are used, so
// it works the same on disk and on S3. Like cache-walk.ts it tolerates a mirror writing and
// deleting meanwhile: an object gone between listing and reading is skipped.

/** An object as listed: its key below hosted/ and when it was written. */
export interface Listed {
  key: string;
  modifiedMs: number;
}

export interface RepoContents {
  /** tag → the manifest it points to (hex), with the tag record. */
  tags: Map<string, Listed & { hex: string; mediaType: string }>;
  /** hex → the _manifests link. */
  manifests: Map<string, Listed>;
  /** hex → the _layers link. */
  layers: Map<string, Listed>;
  /** The referrers index: `<subject hex>/<referrer hex>` → its entry. */
  referrers: Map<string, Listed & { subject: string; hex: string }>;
}

/** What a manifest names: child manifests and blobs (hex), and its subject (OCI 1.1). */
export interface ManifestNode {
  children: string[];
  blobs: Array<{ hex: string; size: number }>;
  subject?: string;
}

const ENTRY = /^repos\/(.+?)\/_(tags|manifests|layers|referrers)\/(.+)$/;
const HEX = /^[a-f0-9]{64}$/;

/**
 * Every hosted repository's links, by name. `driver` is the storage below hosted/ (the store's
 * driver). A repository name never has a component starting with "_" (the spec's grammar), so
 * the first "/_tags/" (etc.) in a key ends the name.
 */
export async function readRepos(driver: StorageDriver): Promise<Map<string, RepoContents>> {
  const repos = new Map<string, RepoContents>();
  const repo = (name: string): RepoContents => {
    let r = repos.get(name);
    if (!r)
      repos.set(
        name,
        (r = { tags: new Map(), manifests: new Map(), layers: new Map(), referrers: new Map() }),
      );
    return r;
  };
  const tagKeys: Array<{ name: string; tag: string; o: Listed }> = [];
  for await (const o of driver.list("repos/")) {
    const m = ENTRY.exec(o.key);
    if (!m) continue;
    const [, name, kind, rest] = m as unknown as [string, string, string, string];
    const listed = { key: o.key, modifiedMs: o.modifiedMs };
    if (kind === "tags") tagKeys.push({ name, tag: rest, o: listed });
    else if (kind === "manifests" && HEX.test(rest)) repo(name).manifests.set(rest, listed);
    else if (kind === "layers" && HEX.test(rest)) repo(name).layers.set(rest, listed);
    else if (kind === "referrers") {
      const [subject, hex] = rest.split("/");
      if (subject && hex && HEX.test(subject) && HEX.test(hex))
        repo(name).referrers.set(rest, { ...listed, subject, hex });
    }
  }
  for (const { name, tag, o } of tagKeys) {
    const link = await readJson(driver, o.key);
    const digest = typeof link?.digest === "string" ? parseDigest(link.digest) : undefined;
    if (!digest) continue;
    const mediaType = typeof link?.mediaType === "string" ? link.mediaType : "";
    repo(name).tags.set(tag, { ...o, hex: digest.hex, mediaType });
  }
  return repos;
}

/** Reads manifests on first use and keeps only what they reference. */
export class ManifestNodes {
  private readonly memo = new Map<string, ManifestNode | undefined>();

  constructor(private readonly driver: StorageDriver) {}

  /** What was loaded; undefined for a manifest whose bytes are not there. */
  get(hex: string): ManifestNode | undefined {
    return this.memo.get(hex);
  }

  /** Loads `hexes` and, through index children, everything they reach. */
  async load(hexes: Iterable<string>): Promise<void> {
    const queue = [...hexes];
    while (queue.length > 0) {
      const hex = queue.pop()!;
      if (this.memo.has(hex)) continue;
      const bytes = await this.driver.get(manifestKey({ algorithm: "sha256", hex }));
      const node = bytes === undefined ? undefined : nodeOf(bytes);
      this.memo.set(hex, node);
      if (node) queue.push(...node.children.filter((c) => !this.memo.has(c)));
    }
  }
}

/** Every hex a walk must load: the tagged and the linked manifests of every repository. */
export function manifestsNamed(repos: Map<string, RepoContents>): Set<string> {
  const out = new Set<string>();
  for (const r of repos.values()) {
    for (const t of r.tags.values()) out.add(t.hex);
    for (const hex of r.manifests.keys()) out.add(hex);
  }
  return out;
}

export function nodeOf(bytes: Buffer): ManifestNode {
  const refs = manifestRefs(bytes);
  const hexOf = (d: string) => parseDigest(d)?.hex;
  const node: ManifestNode = {
    children: refs.children.map((c) => hexOf(c.digest)).filter((h): h is string => h !== undefined),
    blobs: refs.blobs.flatMap((b) => {
      const hex = hexOf(b.digest);
      return hex === undefined ? [] : [{ hex, size: b.size }];
    }),
  };
  const subject = subjectOf(bytes);
  if (subject !== undefined) node.subject = subject;
  return node;
}

function subjectOf(bytes: Buffer): string | undefined {
  try {
    const doc = JSON.parse(bytes.toString("utf8")) as { subject?: { digest?: unknown } } | null;
    const d = doc?.subject?.digest;
    return typeof d === "string" ? parseDigest(d)?.hex : undefined;
  } catch {
    return undefined;
  }
}

async function readJson(driver: StorageDriver, key: string): Promise<Record<string, unknown> | undefined> {
  const bytes = await driver.get(key);
  if (bytes === undefined) return undefined;
  try {
    const v: unknown = JSON.parse(bytes.toString("utf8"));
    return typeof v === "object" && v !== null ? (v as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}
