// Hosted gc's marks, pure: an in-memory graph of repositories and manifests, no storage.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  bytesNeeded,
  markRepo,
  mergeListings,
  planSweep,
  type NodeOf,
} from "../../src/maintenance/hosted-gc.ts";
import type { ManifestNode, RepoContents } from "../../src/maintenance/hosted-walk.ts";

const NOW = 1_000_000_000;
const OLD = NOW - 7_200_000;
const hex = (c: string) => c.repeat(64);

function repo(spec: {
  tags?: Record<string, string>;
  manifests?: Record<string, number>;
  layers?: Record<string, number>;
  referrers?: Array<[subject: string, hex: string, at: number]>;
}): RepoContents {
  const at = (key: string, modifiedMs: number) => ({ key, modifiedMs });
  return {
    tags: new Map(
      Object.entries(spec.tags ?? {}).map(([t, h]) => [t, { ...at(`t/${t}`, OLD), hex: h, mediaType: "x" }]),
    ),
    manifests: new Map(Object.entries(spec.manifests ?? {}).map(([h, ms]) => [h, at(`m/${h}`, ms)])),
    layers: new Map(Object.entries(spec.layers ?? {}).map(([h, ms]) => [h, at(`l/${h}`, ms)])),
    referrers: new Map(
      (spec.referrers ?? []).map(([s, h, ms]) => [
        `${s}/${h}`,
        { ...at(`r/${s}/${h}`, ms), subject: s, hex: h },
      ]),
    ),
  };
}

const nodes = (
  graph: Record<string, Partial<ManifestNode> & { blobs?: never } & { b?: string[] }>,
): NodeOf => {
  return (h) => {
    const n = graph[h];
    if (!n) return undefined;
    return {
      children: n.children ?? [],
      blobs: (n.b ?? []).map((x) => ({ hex: x, size: 10 })),
      ...(n.subject !== undefined ? { subject: n.subject } : {}),
    };
  };
};

const M = { idx: hex("1"), amd: hex("2"), arm: hex("3"), sig: hex("4"), old: hex("5"), young: hex("6") };
const B = { cfgA: hex("a"), layA: hex("b"), cfgR: hex("c"), layR: hex("d"), sigB: hex("e"), oldB: hex("f") };
const graph = nodes({
  [M.idx]: { children: [M.amd, M.arm] },
  [M.amd]: { b: [B.cfgA, B.layA] },
  [M.arm]: { b: [B.cfgR, B.layR] },
  [M.sig]: { b: [B.sigB], subject: M.idx },
  [M.old]: { b: [B.oldB] },
  [M.young]: { b: [B.oldB] },
});
const opts = { cutoffMs: NOW - 3_600_000, keepUntagged: false };

describe("hosted gc marks", () => {
  it("keeps an index's children and their blobs, reached from a tag", () => {
    const r = repo({ tags: { v1: M.idx }, manifests: { [M.idx]: OLD, [M.amd]: OLD, [M.arm]: OLD } });
    const m = markRepo(r, graph, opts);
    assert.deepEqual([...m.manifests].sort(), [M.idx, M.amd, M.arm].sort());
    assert.deepEqual([...m.blobs].sort(), [B.cfgA, B.layA, B.cfgR, B.layR].sort());
  });

  it("keeps a referrer with its subject, and drops it when the subject goes", () => {
    const tagged = repo({
      tags: { v1: M.idx },
      manifests: { [M.idx]: OLD, [M.amd]: OLD, [M.arm]: OLD, [M.sig]: OLD },
      referrers: [[M.idx, M.sig, OLD]],
    });
    assert.ok(markRepo(tagged, graph, opts).manifests.has(M.sig));
    assert.ok(markRepo(tagged, graph, opts).blobs.has(B.sigB));

    const untagged = repo({
      manifests: { [M.idx]: OLD, [M.amd]: OLD, [M.arm]: OLD, [M.sig]: OLD },
      referrers: [[M.idx, M.sig, OLD]],
    });
    const plan = planSweep(new Map([["local/app", untagged]]), graph, opts);
    assert.deepEqual(plan.manifestLinks.map((l) => l.hex).sort(), [M.idx, M.amd, M.arm, M.sig].sort());
    assert.deepEqual(
      plan.referrerEntries.map((l) => l.key),
      [`r/${M.idx}/${M.sig}`],
    );
  });

  it("removes an untagged manifest and the layer links only it named", () => {
    const r = repo({
      tags: { v1: M.amd },
      manifests: { [M.amd]: OLD, [M.old]: OLD },
      layers: { [B.cfgA]: OLD, [B.layA]: OLD, [B.oldB]: OLD },
    });
    const plan = planSweep(new Map([["local/app", r]]), graph, opts);
    assert.deepEqual(
      plan.manifestLinks.map((l) => l.hex),
      [M.old],
    );
    assert.deepEqual(
      plan.layerLinks.map((l) => l.hex),
      [B.oldB],
    );
    assert.equal(plan.manifestBytes.has(M.old), false);
    assert.equal(plan.blobBytes.has(B.oldB), false);
  });

  it("spares links younger than the grace, and what they reference", () => {
    const r = repo({
      manifests: { [M.young]: NOW - 60_000, [M.old]: OLD },
      layers: { [B.oldB]: OLD, [B.sigB]: NOW - 1000 },
    });
    const plan = planSweep(new Map([["local/app", r]]), graph, opts);
    assert.deepEqual(
      plan.manifestLinks.map((l) => l.hex),
      [M.old],
    );
    // oldB is named by the young manifest; sigB's link is young (an upload whose manifest is to come).
    assert.deepEqual(plan.layerLinks, []);
    assert.ok(plan.blobBytes.has(B.oldB) && plan.blobBytes.has(B.sigB));
  });

  it("keeps every manifest with keepUntagged", () => {
    const r = repo({ manifests: { [M.old]: OLD } });
    assert.deepEqual(
      planSweep(new Map([["a", r]]), graph, { ...opts, keepUntagged: true }).manifestLinks,
      [],
    );
  });

  it("marks per repository: a tag in one repository keeps nothing linked in another", () => {
    const a = repo({ tags: { v1: M.amd }, manifests: { [M.amd]: OLD } });
    const b = repo({ manifests: { [M.amd]: OLD } });
    const plan = planSweep(
      new Map([
        ["a", a],
        ["b", b],
      ]),
      graph,
      opts,
    );
    assert.deepEqual(
      plan.manifestLinks.map((l) => l.repo),
      ["b"],
    );
    // The bytes stay: repository a still needs them.
    assert.ok(plan.manifestBytes.has(M.amd) && plan.blobBytes.has(B.layA));
  });

  it("a re-check keeps what was linked or tagged after the mark began", () => {
    const first = new Map([["a", repo({ tags: { v1: M.amd }, manifests: { [M.amd]: OLD, [M.old]: OLD } })]]);
    // Meanwhile v1 moved to the old manifest, and a manifest was linked with an old timestamp.
    const second = new Map([
      ["a", repo({ tags: { v1: M.old }, manifests: { [M.amd]: OLD, [M.old]: OLD, [M.arm]: OLD } })],
    ]);
    const plan = planSweep(mergeListings(first, second, NOW), graph, opts);
    assert.deepEqual(plan.manifestLinks, []);
    assert.ok(plan.blobBytes.has(B.oldB) && plan.blobBytes.has(B.layR) && plan.blobBytes.has(B.layA));
  });

  it("bytes stay while any remaining link names them", () => {
    const r = repo({ manifests: { [M.old]: OLD }, layers: { [B.cfgA]: OLD } });
    const repos = new Map([["a", r]]);
    const plan = planSweep(repos, graph, opts);
    const swept = new Set([...plan.manifestLinks, ...plan.layerLinks].map((l) => l.key));
    const gone = bytesNeeded(plan, repos, graph, swept);
    assert.equal(gone.manifests.has(M.old), false);
    assert.equal(gone.blobs.has(B.oldB), false);
    assert.equal(gone.blobs.has(B.cfgA), false);
    // The same manifest pushed again after its link was swept: the listing after the sweep
    // (nothing left to discount, the sweep really removed) keeps its bytes and blobs.
    const later = new Map([["a", repo({ manifests: { [M.old]: NOW }, layers: {} })]]);
    const kept = bytesNeeded(plan, later, graph, new Set());
    assert.ok(kept.manifests.has(M.old) && kept.blobs.has(B.oldB));
  });
});
