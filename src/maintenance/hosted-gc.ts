import type { StorageDriver } from "../storage/driver.ts";
import { BLOBS, MANIFESTS, contentHex } from "../storage/keys.ts";
import type { Sweep } from "./gc.ts";
import {
  ManifestNodes,
  manifestsNamed,
  readRepos,
  type ManifestNode,
  type RepoContents,
} from "./hosted-walk.ts";

// Garbage collection of the hosted repositories (hosted/store.ts), online: the mirror keeps
// serving and taking pushes while it runs. Mark, per repository, from its tags: a tagged manifest
// is kept, and with it an index's child manifests, the referrers of anything kept (manifests
// whose `subject` is kept, OCI 1.1), and the blobs (config, layers) of everything kept. Sweep:
// the manifest links nothing kept reaches (and their referrers index entries), the _layers links
// of blobs nothing kept in that repository names, then the manifest and blob bytes that no
// remaining link in any repository needs.
//
// Why a concurrent push loses nothing:
// - Anything (link or bytes) written within the grace (hosted.gcGrace) or after the gc began is
//   kept, whatever the marks say: an upload in progress has its blobs and links written before
//   its manifest, which may come minutes later. A normal push names only such young blobs.
// - The links are listed again just before the sweep; a manifest linked or a tag moved since the
//   mark adds its references to the marks.
// - The sweep goes in steps, each after a fresh listing of the links: manifest links; then the
//   _layers links no standing manifest names; then the bytes no standing link needs. Before each
//   removal the object is asked for (stat) and kept if it was written again meanwhile.
// - Once a blob's links are gone, a push naming it is refused (MANIFEST_BLOB_UNKNOWN) rather than
//   accepted over bytes about to go. What remains is a push of a manifest naming blobs unused
//   for longer than the grace whose checks fall in the moment between a listing and a removal;
//   run gc when that cannot happen, or with a longer grace.
// Storage calls are list, get, stat and delete only: the filesystem and S3 alike.
// The mark itself (markRepo, planSweep, bytesNeeded) is pure, over an in-memory graph.

export interface MarkOptions {
  /** Links written at or after this (ms since the epoch) are kept: the grace. */
  cutoffMs: number;
  /** Every linked manifest is a root, tagged or not (gc --keep-untagged). */
  keepUntagged: boolean;
}

export type NodeOf = (hex: string) => ManifestNode | undefined;

export interface RepoMarks {
  /** Manifests (hex) the repository keeps, linked or not (a child its index names). */
  manifests: Set<string>;
  /** Blobs (hex) the kept manifests name. */
  blobs: Set<string>;
}

/** What one repository keeps: its roots (tags, young links) and all they reach. */
export function markRepo(r: RepoContents, node: NodeOf, o: MarkOptions): RepoMarks {
  // subject → the manifests of this repository that refer to it, from the manifests themselves
  // and from the referrers index.
  const referrers = new Map<string, string[]>();
  const refer = (subject: string, hex: string) => {
    const list = referrers.get(subject);
    if (list) list.push(hex);
    else referrers.set(subject, [hex]);
  };
  for (const hex of r.manifests.keys()) {
    const s = node(hex)?.subject;
    if (s !== undefined) refer(s, hex);
  }
  for (const e of r.referrers.values()) if (r.manifests.has(e.hex)) refer(e.subject, e.hex);

  const queue = [...r.tags.values()].map((t) => t.hex);
  for (const [hex, link] of r.manifests) if (o.keepUntagged || link.modifiedMs >= o.cutoffMs) queue.push(hex);
  const manifests = new Set<string>();
  const blobs = new Set<string>();
  while (queue.length > 0) {
    const hex = queue.pop()!;
    if (manifests.has(hex)) continue;
    manifests.add(hex);
    const n = node(hex);
    for (const b of n?.blobs ?? []) blobs.add(b.hex);
    for (const c of n?.children ?? []) if (!manifests.has(c)) queue.push(c);
    for (const ref of referrers.get(hex) ?? []) if (!manifests.has(ref)) queue.push(ref);
  }
  return { manifests, blobs };
}

export interface LinkRef {
  repo: string;
  hex: string;
  key: string;
}

export interface SweepPlan {
  /** Manifest links to remove (untagged, unreachable, older than the grace). */
  manifestLinks: LinkRef[];
  /** Referrers index entries of those, and entries whose manifest is linked no more. */
  referrerEntries: LinkRef[];
  /** _layers links of blobs nothing kept in that repository names. */
  layerLinks: LinkRef[];
  /** Bytes the marks keep, whatever the links: manifests and blobs (hex). */
  manifestBytes: Set<string>;
  blobBytes: Set<string>;
}

/** The links to remove, from every repository's marks. */
export function planSweep(repos: Map<string, RepoContents>, node: NodeOf, o: MarkOptions): SweepPlan {
  const plan: SweepPlan = {
    manifestLinks: [],
    referrerEntries: [],
    layerLinks: [],
    manifestBytes: new Set(),
    blobBytes: new Set(),
  };
  for (const [repo, r] of repos) {
    const marks = markRepo(r, node, o);
    for (const hex of marks.manifests) plan.manifestBytes.add(hex);
    for (const hex of marks.blobs) plan.blobBytes.add(hex);
    const unlinked = new Set<string>();
    for (const [hex, link] of r.manifests) {
      if (marks.manifests.has(hex)) continue;
      unlinked.add(hex);
      plan.manifestLinks.push({ repo, hex, key: link.key });
    }
    for (const e of r.referrers.values()) {
      const dangling = !r.manifests.has(e.hex) && e.modifiedMs < o.cutoffMs;
      if (unlinked.has(e.hex) || dangling) plan.referrerEntries.push({ repo, hex: e.hex, key: e.key });
    }
    for (const [hex, link] of r.layers) {
      if (marks.blobs.has(hex) || link.modifiedMs >= o.cutoffMs) plan.blobBytes.add(hex);
      else plan.layerLinks.push({ repo, hex, key: link.key });
    }
  }
  return plan;
}

/**
 * The bytes to keep: what the marks keep, and what every link still standing names (listed
 * after the links were swept). `removed`: for a dry run, the keys it would have swept, which are
 * still listed; after a real sweep it must be empty, as a link listed then was written again.
 */
export function bytesNeeded(
  plan: SweepPlan,
  repos: Map<string, RepoContents>,
  node: NodeOf,
  removed: ReadonlySet<string>,
): { manifests: Set<string>; blobs: Set<string> } {
  const manifests = new Set(plan.manifestBytes);
  const blobs = new Set(plan.blobBytes);
  const queue: string[] = [];
  for (const r of repos.values()) {
    for (const [hex, link] of r.manifests) if (!removed.has(link.key)) queue.push(hex);
    for (const [hex, link] of r.layers) if (!removed.has(link.key)) blobs.add(hex);
  }
  const seen = new Set<string>();
  while (queue.length > 0) {
    const hex = queue.pop()!;
    if (seen.has(hex)) continue;
    seen.add(hex);
    manifests.add(hex);
    const n = node(hex);
    for (const b of n?.blobs ?? []) blobs.add(b.hex);
    for (const c of n?.children ?? []) queue.push(c);
  }
  return { manifests, blobs };
}

/** Per repository, the blobs its standing manifest links name (through index children). */
export function blobsNamed(
  repos: Map<string, RepoContents>,
  node: NodeOf,
  removed: ReadonlySet<string>,
): Map<string, Set<string>> {
  const out = new Map<string, Set<string>>();
  for (const [repo, r] of repos) {
    const blobs = new Set<string>();
    const seen = new Set<string>();
    const queue = [...r.manifests].filter(([, l]) => !removed.has(l.key)).map(([hex]) => hex);
    while (queue.length > 0) {
      const hex = queue.pop()!;
      if (seen.has(hex)) continue;
      seen.add(hex);
      const n = node(hex);
      for (const b of n?.blobs ?? []) blobs.add(b.hex);
      queue.push(...(n?.children ?? []));
    }
    out.set(repo, blobs);
  }
  return out;
}

/**
 * Two listings of the links as one: everything in either. A link (or tag) that appeared in the
 * second counts as written at `nowMs`, so the grace keeps it; a tag that moved keeps both targets.
 */
export function mergeListings(
  first: Map<string, RepoContents>,
  second: Map<string, RepoContents>,
  nowMs: number,
): Map<string, RepoContents> {
  const out = new Map<string, RepoContents>();
  for (const name of new Set([...first.keys(), ...second.keys()])) {
    const a = first.get(name);
    const b = second.get(name);
    const fresh = <T extends { modifiedMs: number }>(x: T, seen: boolean): T =>
      seen ? x : { ...x, modifiedMs: Math.max(x.modifiedMs, nowMs) };
    const r: RepoContents = {
      tags: new Map(a?.tags),
      manifests: new Map(a?.manifests),
      layers: new Map(a?.layers),
      referrers: new Map(a?.referrers),
    };
    for (const [tag, t] of b?.tags ?? []) {
      const before = r.tags.get(tag);
      r.tags.set(tag, t);
      if (before && before.hex !== t.hex) r.tags.set(`${tag}\u0000before`, before);
    }
    for (const [hex, l] of b?.manifests ?? []) r.manifests.set(hex, fresh(l, a?.manifests.has(hex) === true));
    for (const [hex, l] of b?.layers ?? []) r.layers.set(hex, fresh(l, a?.layers.has(hex) === true));
    for (const [k, e] of b?.referrers ?? []) r.referrers.set(k, fresh(e, a?.referrers.has(k) === true));
    out.set(name, r);
  }
  return out;
}

// The I/O: listings, reads and deletes through the driver below hosted/.

export interface HostedGcOptions {
  dryRun: boolean;
  /** Anything written more recently than this is kept (hosted.gcGrace). */
  graceMs: number;
  keepUntagged: boolean;
}

export interface HostedGcResult {
  dryRun: boolean;
  graceMs: number;
  /** Links removed from repositories: manifests and _layers as "repo@sha256:…", referrers entries counted. */
  unlinked: { manifests: string[]; layers: string[]; referrers: number };
  /** Manifest bytes removed below hosted/ ("sha256:…"). */
  manifests: Sweep;
  /** Blob bytes removed below hosted/ ("sha256:…"). */
  blobs: Sweep;
  freedBytes: number;
}

/** Hosted gc over `driver`, the storage below hosted/ (HostedStore.driver). */
export async function collectHostedGarbage(
  driver: StorageDriver,
  opts: HostedGcOptions,
  now: () => number = Date.now,
): Promise<HostedGcResult> {
  const startedMs = now();
  const mark: MarkOptions = {
    cutoffMs: startedMs - Math.max(0, opts.graceMs),
    keepUntagged: opts.keepUntagged,
  };
  const nodes = new ManifestNodes(driver);
  const node: NodeOf = (hex) => nodes.get(hex);

  const first = await readRepos(driver);
  await nodes.load(manifestsNamed(first));
  // Re-checked just before the sweep: what was linked or tagged while the mark read.
  const again = await readRepos(driver);
  await nodes.load(manifestsNamed(again));
  const plan = planSweep(mergeListings(first, again, startedMs), node, mark);

  // Each removal asks first whether the object was written again since it was listed (a push
  // of the same manifest, a blob uploaded again): then it is young, and kept.
  const young = async (key: string): Promise<boolean> => {
    const o = await driver.stat(key);
    return o !== undefined && o.modifiedMs >= mark.cutoffMs;
  };
  const removed = new Set<string>();
  const unlink = async (links: LinkRef[]): Promise<LinkRef[]> => {
    const done: LinkRef[] = [];
    for (const l of links) {
      if (!opts.dryRun && ((await young(l.key)) || !(await driver.delete(l.key)))) continue;
      removed.add(l.key);
      done.push(l);
    }
    return done;
  };
  // In a dry run nothing was removed, so later listings still hold what a run would have removed.
  const standing = (listed: Map<string, RepoContents>, before: Map<string, RepoContents>) =>
    opts.dryRun ? mergeListings(before, listed, startedMs) : listed;
  const discount = () => (opts.dryRun ? removed : new Set<string>());

  const manifestLinks = await unlink(plan.manifestLinks);
  const referrers = await unlink(plan.referrerEntries);
  // _layers links after listing the manifest links again: one linked since (a push of an image
  // whose blobs were unused for longer than the grace) keeps its blobs' links.
  const third = await readRepos(driver);
  await nodes.load(manifestsNamed(third));
  const named = blobsNamed(standing(third, again), node, discount());
  const layerLinks = await unlink(plan.layerLinks.filter((l) => !named.get(l.repo)?.has(l.hex)));

  // Bytes last, after one more listing of the links: a push since keeps what it names.
  const last = await readRepos(driver);
  await nodes.load(manifestsNamed(last));
  const needed = bytesNeeded(plan, standing(last, third), node, discount());

  const sweep = async (prefix: string, keep: Set<string>): Promise<Sweep> => {
    const s: Sweep = { removed: [], bytes: 0, kept: 0 };
    const listed: Array<{ key: string; hex: string; size: number }> = [];
    for await (const o of driver.list(prefix)) {
      const hex = contentHex(o.key);
      if (hex === undefined) continue;
      if (keep.has(hex) || o.modifiedMs >= mark.cutoffMs) s.kept++;
      else listed.push({ key: o.key, hex, size: o.size });
    }
    for (const o of listed) {
      if (!opts.dryRun && ((await young(o.key)) || !(await driver.delete(o.key)))) {
        s.kept++;
        continue;
      }
      s.removed.push(`sha256:${o.hex}`);
      s.bytes += o.size;
    }
    return s;
  };
  const manifests = await sweep(MANIFESTS, needed.manifests);
  const blobs = await sweep(BLOBS, needed.blobs);
  const at = (l: LinkRef) => `${l.repo}@sha256:${l.hex}`;
  return {
    dryRun: opts.dryRun,
    graceMs: opts.graceMs,
    unlinked: {
      manifests: manifestLinks.map(at),
      layers: layerLinks.map(at),
      referrers: referrers.length,
    },
    manifests,
    blobs,
    freedBytes: manifests.bytes + blobs.bytes,
  };
}
