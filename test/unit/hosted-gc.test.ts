// Hosted gc's marks, pure: an in-memory graph of repositories and manifests, no storage; then the
// whole collection over a storage that offers only list, get and delete, with pushes racing it.
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { describe, it } from "node:test";
import type { ObjectInfo, StorageDriver } from "../../src/storage/driver.ts";
import {
  bytesNeeded,
  collectHostedGarbage,
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

/**
 * Storage with only what hosted gc may use (list, get, stat, delete; put for the test's own
 * writes), every other method throwing: what S3 and the filesystem both offer. `onList` runs after each
 * listing of a prefix, for a push that races the gc.
 */
class ListGetDelete {
  readonly objects = new Map<string, { data: Buffer; modifiedMs: number }>();
  lists = 0;
  onList: (prefix: string, n: number) => void = () => undefined;

  put(key: string, data: string | Buffer, modifiedMs: number): void {
    this.objects.set(key, { data: Buffer.from(data), modifiedMs });
  }

  private async *list(prefix: string): AsyncGenerator<ObjectInfo> {
    const keys = [...this.objects.keys()].filter((k) => k.startsWith(prefix)).sort();
    for (const key of keys) {
      const o = this.objects.get(key);
      if (o) yield { key, size: o.data.length, modifiedMs: o.modifiedMs };
    }
    this.onList(prefix, ++this.lists);
  }

  driver(): StorageDriver {
    const no = (): never => {
      throw new Error("hosted gc must use only list, get, stat and delete");
    };
    return {
      kind: "s3",
      init: no,
      put: no,
      stat: (key) => {
        const o = this.objects.get(key);
        return Promise.resolve(o && { key, size: o.data.length, modifiedMs: o.modifiedMs });
      },
      open: no,
      publish: no,
      sweepDebris: no,
      problem: no,
      get: (key) => Promise.resolve(this.objects.get(key)?.data),
      delete: (key) => Promise.resolve(this.objects.delete(key)),
      list: (prefix) => this.list(prefix),
    };
  }
}

describe("hosted gc over the storage", () => {
  const blobKey = (h: string) => `blobs/sha256/${h.slice(0, 2)}/${h}`;
  const manifestKey = (h: string) => `manifests/sha256/${h.slice(0, 2)}/${h}`;
  const manifest = (config: string, layer: string) =>
    JSON.stringify({
      schemaVersion: 2,
      mediaType: "application/vnd.oci.image.manifest.v1+json",
      config: { mediaType: "application/vnd.oci.image.config.v1+json", digest: `sha256:${config}`, size: 2 },
      layers: [
        { mediaType: "application/vnd.oci.image.layer.v1.tar+gzip", digest: `sha256:${layer}`, size: 5 },
      ],
    });
  const sha = (s: string) => createHash("sha256").update(s).digest("hex");

  function seed(): { s: ListGetDelete; tagged: string; untagged: string } {
    const s = new ListGetDelete();
    for (const h of [B.cfgA, B.layA, B.cfgR, B.layR, B.oldB]) {
      s.put(blobKey(h), "xx", OLD);
      s.put(`repos/local/app/_layers/${h}`, "{}", OLD);
    }
    const tagged = manifest(B.cfgA, B.layA);
    const untagged = manifest(B.cfgR, B.layR);
    for (const m of [tagged, untagged]) {
      s.put(manifestKey(sha(m)), m, OLD);
      s.put(`repos/local/app/_manifests/${sha(m)}`, "{}", OLD);
    }
    s.put(
      "repos/local/app/_tags/v1",
      JSON.stringify({ digest: `sha256:${sha(tagged)}`, mediaType: "x" }),
      OLD,
    );
    // The cache's own objects, beside hosted/ in the real layout, are never listed here.
    return { s, tagged: sha(tagged), untagged: sha(untagged) };
  }

  it("uses only list, get, stat and delete, and removes the untagged manifest and unused blobs", async () => {
    const { s, untagged } = seed();
    const r = await collectHostedGarbage(
      s.driver(),
      { dryRun: false, graceMs: 3_600_000, keepUntagged: false },
      () => NOW,
    );
    assert.deepEqual(r.manifests.removed, [`sha256:${untagged}`]);
    assert.deepEqual(r.blobs.removed.sort(), [B.cfgR, B.layR, B.oldB].map((h) => `sha256:${h}`).sort());
    assert.deepEqual(r.unlinked.manifests, [`local/app@sha256:${untagged}`]);
    assert.equal(r.unlinked.layers.length, 3);
    assert.ok(s.objects.has(blobKey(B.cfgA)) && s.objects.has(blobKey(B.layA)));
  });

  it("a dry run deletes nothing", async () => {
    const { s } = seed();
    const before = [...s.objects.keys()];
    const r = await collectHostedGarbage(
      s.driver(),
      { dryRun: true, graceMs: 0, keepUntagged: false },
      () => NOW,
    );
    assert.equal(r.blobs.removed.length, 3);
    assert.deepEqual([...s.objects.keys()], before);
  });

  it("a manifest pushed while the mark runs keeps the old blobs it names", async () => {
    const { s } = seed();
    // After the mark's first listing of the links, a push links and tags a manifest naming the
    // old, unused blob, with its bytes and link already there (and past the grace).
    const racing = manifest(B.cfgA, B.oldB);
    s.onList = (prefix, n) => {
      if (prefix !== "repos/" || n !== 1) return;
      s.put(manifestKey(sha(racing)), racing, NOW);
      s.put(`repos/local/app/_manifests/${sha(racing)}`, "{}", OLD);
      s.put(
        "repos/local/app/_tags/v2",
        JSON.stringify({ digest: `sha256:${sha(racing)}`, mediaType: "x" }),
        OLD,
      );
    };
    const r = await collectHostedGarbage(
      s.driver(),
      { dryRun: false, graceMs: 0, keepUntagged: false },
      () => NOW,
    );
    assert.ok(!r.blobs.removed.includes(`sha256:${B.oldB}`), "the racing push's blob stays");
    assert.ok(s.objects.has(blobKey(B.oldB)) && s.objects.has(`repos/local/app/_layers/${B.oldB}`));
    assert.deepEqual(r.blobs.removed.sort(), [B.cfgR, B.layR].map((h) => `sha256:${h}`).sort());
  });

  it("the same manifest pushed again just before its link is swept keeps its link, bytes and blobs", async () => {
    const { s, untagged } = seed();
    const again = manifest(B.cfgR, B.layR);
    // After the re-check's listing: a push writes the manifest's bytes, then its link, anew.
    s.onList = (prefix, n) => {
      if (prefix !== "repos/" || n !== 2) return;
      s.put(manifestKey(untagged), again, NOW);
      s.put(`repos/local/app/_manifests/${untagged}`, "{}", NOW);
    };
    const r = await collectHostedGarbage(
      s.driver(),
      { dryRun: false, graceMs: 0, keepUntagged: false },
      () => NOW,
    );
    assert.deepEqual(r.unlinked.manifests, []);
    assert.deepEqual(r.manifests.removed, []);
    assert.deepEqual(r.unlinked.layers, [`local/app@sha256:${B.oldB}`]);
    assert.deepEqual(r.blobs.removed, [`sha256:${B.oldB}`]);
    for (const h of [B.cfgR, B.layR])
      assert.ok(s.objects.has(blobKey(h)) && s.objects.has(`repos/local/app/_layers/${h}`));
  });
});
