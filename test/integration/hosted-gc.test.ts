// Garbage collection of hosted repositories on a running mirror: content built by hand (blobs
// written through the hosted store, manifests pushed over HTTP), some of it untagged or deleted,
// then gc through the admin API and the command line. Every removal is counted exactly, and what
// the cache mirrored is left alone.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdtemp, readdir, rm, stat, utimes, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { digestOf, parseDigest } from "../../src/oci/digest.ts";
import { HostedStore } from "../../src/hosted/store.ts";
import { filesystemCache } from "../../src/storage/cache.ts";
import { collectGarbage, type GcResult } from "../../src/maintenance/gc.ts";
import type { HostedGcResult } from "../../src/maintenance/hosted-gc.ts";
import { startFakeUpstream, type FakeUpstream } from "../fixtures/fake-upstream.ts";
import { addImage, buildImage, MEDIA, type BuiltImage } from "../fixtures/images.ts";
import { seedHostedBlob } from "../fixtures/hosted.ts";
import { startTestMirror, type TestMirror } from "../fixtures/mirror.ts";
import { pullThrough } from "../fixtures/pull.ts";
import { cli } from "../fixtures/cli.ts";

const TOKEN = "hosted-gc-admin-token";
const HOUR = 3_600_000;

interface Blob {
  digest: string;
  size: number;
}

describe("hosted gc", () => {
  let fake: FakeUpstream;
  let mirror: TestMirror;
  let store: HostedStore;
  let cached: BuiltImage;
  let work: string;

  const hostedFile = (kind: "blobs" | "manifests", digest: string) =>
    join(mirror.cacheDir, "hosted", kind, "sha256", digest.slice(7, 9), digest.slice(7));
  const cacheBlobFile = (digest: string) =>
    join(mirror.cacheDir, "blobs", "sha256", digest.slice(7, 9), digest.slice(7));

  /** A blob as an upload leaves it: the bytes published, and linked in the repository. */
  const seedBlob = (repo: string, bytes: Buffer = randomBytes(64 + Math.floor(Math.random() * 512))) =>
    seedHostedBlob(store, repo, bytes);

  async function linkBlob(repo: string, b: Blob): Promise<void> {
    await store.linkBlob(repo, parseDigest(b.digest)!, b.size);
  }

  async function put(repo: string, ref: string, doc: Record<string, unknown>): Promise<Response> {
    return fetch(`${mirror.url}/v2/${repo}/manifests/${ref}`, {
      method: "PUT",
      headers: { "content-type": String(doc.mediaType) },
      body: JSON.stringify(doc),
    });
  }

  async function push(repo: string, ref: string | undefined, doc: Record<string, unknown>): Promise<string> {
    const bytes = Buffer.from(JSON.stringify(doc));
    const digest = digestOf(bytes);
    const res = await put(repo, ref ?? digest, doc);
    assert.equal(res.status, 201, `${repo}:${ref}: ${await res.text()}`);
    assert.equal(res.headers.get("docker-content-digest"), digest);
    return digest;
  }

  const desc = (b: Blob, mediaType: string) => ({ mediaType, digest: b.digest, size: b.size });
  function image(config: Blob, layers: Blob[], subject?: { digest: string; size: number }) {
    return {
      schemaVersion: 2,
      mediaType: MEDIA.ociManifest,
      config: desc(config, MEDIA.ociConfig),
      layers: layers.map((l) => desc(l, MEDIA.ociLayer)),
      ...(subject ? { subject: { mediaType: MEDIA.ociManifest, ...subject } } : {}),
    };
  }

  async function admin<T>(path: string, body: unknown): Promise<{ status: number; body: T }> {
    const res = await fetch(`${mirror.url}${path}`, {
      method: "POST",
      headers: { authorization: `Bearer ${TOKEN}`, "content-type": "application/json" },
      body: JSON.stringify(body),
    });
    return { status: res.status, body: (await res.json()) as T };
  }

  /** Everything below hosted/ written two hours ago: past the grace of 1h. */
  async function ageHosted(): Promise<void> {
    const root = join(mirror.cacheDir, "hosted");
    const old = new Date(Date.now() - 2 * HOUR);
    for (const rel of await readdir(root, { recursive: true })) {
      const p = join(root, rel);
      if ((await stat(p)).isFile()) await utimes(p, old, old);
    }
  }

  const sorted = (xs: string[]) => [...xs].sort();

  // The content, by role.
  let a: { config: Blob; layer: Blob; digest: string };
  let b: { config: Blob; layer: Blob; digest: string };
  let sigA: { blob: Blob; digest: string };
  let sigB: { blob: Blob; digest: string };
  let children: Array<{ config: Blob; layer: Blob; digest: string }>;
  let index: string;
  let other: { layer: Blob; digest: string };
  let orphan: Blob;
  let fresh: Blob;

  before(async () => {
    fake = await startFakeUpstream();
    cached = buildImage({ layers: 1, format: "oci" });
    addImage(fake, "library/alpine", "3.20", cached);
    work = await mkdtemp(join(tmpdir(), "regmirror-hosted-gc-"));
    mirror = await startTestMirror(fake.url, {
      admin: { token: TOKEN },
      hosted: { repositories: ["local/**"], anonymousPush: true, delete: true, gcGrace: "1h" },
    });
    const cache = filesystemCache(mirror.cacheDir);
    store = new HostedStore(cache.driver, cache.paths);
    await pullThrough(mirror.url, "library/alpine", "3.20");

    // local/app:v1 — an image, with a signature referring to it.
    const aConfig = await seedBlob("local/app");
    const aLayer = await seedBlob("local/app");
    a = { config: aConfig, layer: aLayer, digest: await push("local/app", "v1", image(aConfig, [aLayer])) };
    const sigABlob = await seedBlob("local/app");
    const aSize = Buffer.byteLength(JSON.stringify(image(aConfig, [aLayer])));
    sigA = {
      blob: sigABlob,
      digest: await push("local/app", undefined, image(sigABlob, [], { digest: a.digest, size: aSize })),
    };
    // local/app:v2 — an image and its signature; v2 gets deleted below.
    const bConfig = await seedBlob("local/app");
    const bLayer = await seedBlob("local/app");
    b = { config: bConfig, layer: bLayer, digest: await push("local/app", "v2", image(bConfig, [bLayer])) };
    const sigBBlob = await seedBlob("local/app");
    const bSize = Buffer.byteLength(JSON.stringify(image(bConfig, [bLayer])));
    sigB = {
      blob: sigBBlob,
      digest: await push("local/app", undefined, image(sigBBlob, [], { digest: b.digest, size: bSize })),
    };
    // local/app:multi — an index of two images pushed by digest.
    children = [];
    for (let i = 0; i < 2; i++) {
      const config = await seedBlob("local/app");
      const layer = await seedBlob("local/app");
      children.push({ config, layer, digest: await push("local/app", undefined, image(config, [layer])) });
    }
    index = await push("local/app", "multi", {
      schemaVersion: 2,
      mediaType: MEDIA.ociIndex,
      manifests: children.map((c) => ({
        mediaType: MEDIA.ociManifest,
        digest: c.digest,
        size: Buffer.byteLength(JSON.stringify(image(c.config, [c.layer]))),
        platform: { os: "linux", architecture: "amd64" },
      })),
    });
    // local/other — an untagged image sharing a's config: the bytes stay for local/app.
    await linkBlob("local/other", a.config);
    const otherLayer = await seedBlob("local/other");
    other = {
      layer: otherLayer,
      digest: await push("local/other", undefined, image(a.config, [otherLayer])),
    };
    // An upload nothing ever referenced.
    orphan = await seedBlob("local/app");

    // v2 deleted by digest: the manifest and its tag go; its signature stays linked until gc.
    const del = await fetch(`${mirror.url}/v2/local/app/manifests/${b.digest}`, { method: "DELETE" });
    assert.equal(del.status, 202);
    await ageHosted();
    // Uploaded just now, its manifest not pushed yet: the grace keeps it.
    fresh = await seedBlob("local/app");
  });
  after(async () => {
    await mirror?.stop();
    await fake?.stop();
    if (work) await rm(work, { recursive: true, force: true });
  });

  it("the cache's own gc leaves everything below hosted/ alone", async () => {
    const before = (await readdir(join(mirror.cacheDir, "hosted"), { recursive: true })).sort();
    const r = await collectGarbage(filesystemCache(mirror.cacheDir), {
      dryRun: false,
      minAgeMs: 0,
      keepUntagged: false,
    });
    assert.equal(r.hosted, undefined, "no hosted gc unless asked");
    assert.deepEqual((await readdir(join(mirror.cacheDir, "hosted"), { recursive: true })).sort(), before);
    for (const d of [orphan.digest, b.config.digest]) assert.ok(existsSync(hostedFile("blobs", d)));
  });

  it("POST /admin/gc names a bad hostedGrace", async () => {
    const r = await admin<{ errors: Array<{ message: string }> }>("/admin/gc", { hostedGrace: "soon" });
    assert.equal(r.status, 400);
    assert.match(r.body.errors[0]!.message, /hostedGrace: not a duration/);
  });

  it("a dry run removes nothing and says what a run would", async () => {
    const r = await admin<GcResult>("/admin/gc", { dryRun: true });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    const h = r.body.hosted!;
    assert.equal(h.dryRun, true);
    assert.deepEqual(sorted(h.manifests.removed), sorted([sigB.digest, other.digest, b.digest]));
    for (const d of h.blobs.removed) assert.ok(existsSync(hostedFile("blobs", d)), `${d} still there`);
    for (const d of h.manifests.removed) assert.ok(existsSync(hostedFile("manifests", d)));
    assert.equal((await fetch(`${mirror.url}/v2/local/other/manifests/${other.digest}`)).status, 200);
  });

  it("POST /admin/gc removes exactly the unreachable hosted manifests and blobs", async () => {
    const r = await admin<GcResult>("/admin/gc", {});
    assert.equal(r.status, 200, JSON.stringify(r.body));
    const h: HostedGcResult = r.body.hosted!;
    assert.equal(h.dryRun, false);
    assert.equal(h.graceMs, HOUR);
    // b was unlinked by the DELETE already; its signature and local/other's image are untagged.
    assert.deepEqual(
      sorted(h.unlinked.manifests),
      sorted([`local/app@${sigB.digest}`, `local/other@${other.digest}`]),
    );
    assert.equal(h.unlinked.referrers, 1);
    assert.deepEqual(
      sorted(h.unlinked.layers),
      sorted([
        ...[b.config, b.layer, sigB.blob, orphan].map((x) => `local/app@${x.digest}`),
        ...[a.config, other.layer].map((x) => `local/other@${x.digest}`),
      ]),
    );
    assert.deepEqual(sorted(h.manifests.removed), sorted([b.digest, sigB.digest, other.digest]));
    const goneBlobs = [b.config, b.layer, sigB.blob, other.layer, orphan];
    assert.deepEqual(sorted(h.blobs.removed), sorted(goneBlobs.map((x) => x.digest)));
    assert.equal(
      h.blobs.bytes,
      goneBlobs.reduce((n, x) => n + x.size, 0),
    );
    assert.equal(h.freedBytes, h.blobs.bytes + h.manifests.bytes);
    for (const x of goneBlobs) assert.equal(existsSync(hostedFile("blobs", x.digest)), false);

    // What stays: a (tagged), its signature (a referrer of a), the index and its children,
    // a's config (local/other named it too), and the fresh upload.
    const kept = [a.config, a.layer, sigA.blob, fresh, ...children.flatMap((c) => [c.config, c.layer])];
    for (const x of kept) assert.ok(existsSync(hostedFile("blobs", x.digest)), `${x.digest} kept`);
    for (const d of [a.digest, sigA.digest, index, ...children.map((c) => c.digest)])
      assert.ok(existsSync(hostedFile("manifests", d)), `manifest ${d} kept`);
    assert.equal(h.blobs.kept, kept.length);
    const referrers = (await (await fetch(`${mirror.url}/v2/local/app/referrers/${a.digest}`)).json()) as {
      manifests: Array<{ digest: string }>;
    };
    assert.deepEqual(
      referrers.manifests.map((m) => m.digest),
      [sigA.digest],
    );
    assert.equal((await fetch(`${mirror.url}/v2/local/app/manifests/${sigB.digest}`)).status, 404);
    assert.equal((await fetch(`${mirror.url}/v2/local/app/manifests/v1`)).status, 200);
    assert.equal((await fetch(`${mirror.url}/v2/local/app/blobs/${a.layer.digest}`)).status, 200);

    // The cache's mirrored content is not hosted gc's: every cached blob is still there.
    for (const x of [cached.config, ...cached.layers]) assert.ok(existsSync(cacheBlobFile(x.digest)));
  });

  it("a blob uploaded just before the gc survives it, and a manifest pushed afterwards names it", async () => {
    const layer = await seedBlob("local/app");
    const digest = await push("local/app", "fresh", image(fresh, [layer]));
    const res = await fetch(`${mirror.url}/v2/local/app/blobs/${fresh.digest}`);
    assert.equal(res.status, 200);
    assert.equal(digestOf(Buffer.from(await res.arrayBuffer())), fresh.digest);
    assert.equal((await fetch(`${mirror.url}/v2/local/app/manifests/${digest}`)).status, 200);
  });

  it("regmirror gc --hosted-grace 0s removes an untagged index with its children", async () => {
    const del = await fetch(`${mirror.url}/v2/local/app/manifests/multi`, { method: "DELETE" });
    assert.equal(del.status, 202);
    const config = join(work, "mirror.yml");
    await writeFile(
      config,
      JSON.stringify({
        upstream: { url: fake.url },
        cache: { dir: mirror.cacheDir },
        hosted: { repositories: ["local/**"], anonymousPush: true, delete: true, gcGrace: "1h" },
      }),
    );
    const env = { REGMIRROR_CONFIG: config };
    const dry = await cli(["gc", "--hosted-grace", "0s", "--dry-run", "--json"], env);
    assert.equal(dry.code, 0, dry.stderr);
    assert.deepEqual(
      sorted((JSON.parse(dry.stdout) as GcResult).hosted!.manifests.removed),
      sorted([index, ...children.map((c) => c.digest)]),
    );
    assert.ok(existsSync(hostedFile("manifests", index)), "a dry run removes nothing");

    const r = await cli(["gc", "--hosted-grace", "0s", "--json"], env);
    assert.equal(r.code, 0, r.stderr);
    const h = (JSON.parse(r.stdout) as GcResult).hosted!;
    assert.equal(h.graceMs, 0);
    assert.deepEqual(sorted(h.manifests.removed), sorted([index, ...children.map((c) => c.digest)]));
    assert.deepEqual(
      sorted(h.blobs.removed),
      sorted(children.flatMap((c) => [c.config.digest, c.layer.digest])),
    );
    for (const c of children) assert.equal(existsSync(hostedFile("manifests", c.digest)), false);
    // Tagged content, fresh or old, stays.
    assert.equal((await fetch(`${mirror.url}/v2/local/app/manifests/fresh`)).status, 200);
    assert.equal((await fetch(`${mirror.url}/v2/local/app/manifests/v1`)).status, 200);
    for (const x of [cached.config, ...cached.layers]) assert.ok(existsSync(cacheBlobFile(x.digest)));

    const text = await cli(["gc", "--hosted-grace", "0s"], env);
    assert.equal(text.code, 0, text.stderr);
    assert.match(text.stdout, /^hosted: removed 0 blobs \(0 B\), 0 manifests/m);
  });
});
