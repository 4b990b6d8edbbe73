// The manifest store on a real directory: which read failures count as "no record" and which
// must reach the caller.
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { after, before, describe, it } from "node:test";
import { filesystemCache, type Cache } from "../../src/storage/cache.ts";
import { manifestKey, manifestMetaKey, tagKey } from "../../src/storage/keys.ts";
import { ManifestStore } from "../../src/storage/manifest-store.ts";
import { parseDigest } from "../../src/oci/digest.ts";
import { collectGarbage } from "../../src/maintenance/gc.ts";
import { tagObjects } from "../../src/storage/cache-walk.ts";

const OCI = "application/vnd.oci.image.manifest.v1+json";

describe("ManifestStore tag records", () => {
  let root: string;
  const file = (key: string) => join(root, key);
  let cache: Cache;
  before(async () => {
    root = await mkdtemp(join(tmpdir(), "regmirror-store-"));
    cache = filesystemCache(root);
    await mkdir(cache.paths.tmpDir, { recursive: true });
  });
  after(() => rm(root, { recursive: true, force: true }));

  it("treats a missing or torn record as absent", async () => {
    const store = new ManifestStore(cache.driver, 1024 * 1024);
    assert.equal(await store.getTag("u", "r", "missing"), undefined);
    const torn = file(tagKey("u", "r", "torn"));
    await mkdir(dirname(torn), { recursive: true });
    await writeFile(torn, '{"entries":[{"dig');
    assert.equal(await store.getTag("u", "r", "torn"), undefined);
    await writeFile(file(tagKey("u", "r", "odd")), "null");
    assert.equal(await store.getTag("u", "r", "odd"), undefined);
  });

  it("lets any other read error reach the caller instead of passing for a miss", async () => {
    const store = new ManifestStore(cache.driver, 1024 * 1024);
    // A directory where the record should be: EISDIR, standing in for EMFILE or EACCES (the
    // tests run as root, which no permission stops).
    await mkdir(file(tagKey("u", "r", "unreadable")), { recursive: true });
    await assert.rejects(store.getTag("u", "r", "unreadable"), { code: "EISDIR" });
  });
});

describe("ManifestStore manifests", () => {
  let root: string;
  const file = (key: string) => join(root, key);
  let cache: Cache;
  before(async () => {
    root = await mkdtemp(join(tmpdir(), "regmirror-store-"));
    cache = filesystemCache(root);
    await mkdir(cache.paths.tmpDir, { recursive: true });
  });
  after(() => rm(root, { recursive: true, force: true }));

  it("keeps the declared type beside the bytes, and gc removes both", async () => {
    const bytes = Buffer.from('{"schemaVersion":2,"mediaType":"text/html","layers":[]}');
    const d = parseDigest(`sha256:${createHash("sha256").update(bytes).digest("hex")}`)!;
    await new ManifestStore(cache.driver, 1024).put(d, bytes, OCI);
    // A fresh store reads from disk only.
    assert.deepEqual(await new ManifestStore(cache.driver, 1024).get(d), { bytes, mediaType: OCI });
    const r = await collectGarbage(cache, { dryRun: false, minAgeMs: 0, keepUntagged: false });
    assert.deepEqual(r.manifests.removed, [`sha256:${d.hex}`]);
    assert.equal(existsSync(file(manifestKey(d))), false);
    assert.equal(existsSync(file(manifestMetaKey(d))), false);
  });
});

describe("tag records as the maintenance commands see them", () => {
  it("name each manifest once, however many accept sets got it", async () => {
    const root = await mkdtemp(join(tmpdir(), "regmirror-store-"));
    try {
      const cache = filesystemCache(root);
      await mkdir(cache.paths.tmpDir, { recursive: true });
      const store = new ManifestStore(cache.driver, 1024);
      const d = (c: string) => `sha256:${c.repeat(64)}`;
      await store.putTag("u", "r", "1", { accept: "a", digest: d("a"), mediaType: OCI, checkedAt: 1 });
      await store.putTag("u", "r", "1", { accept: "b", digest: d("b"), mediaType: OCI, checkedAt: 2 });
      await store.putTag("u", "r", "1", { accept: "c", digest: d("a"), mediaType: OCI, checkedAt: 3 });
      const [t] = await tagObjects(cache.driver);
      assert.deepEqual(
        t!.entries!.map((e) => [e.digest, e.checkedAt]),
        [
          [d("a"), 3],
          [d("b"), 2],
        ],
      );
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  });
});
