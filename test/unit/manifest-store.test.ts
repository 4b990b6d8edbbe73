// The manifest store on a real directory: which read failures count as "no record" and which
// must reach the caller.
import assert from "node:assert/strict";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { after, before, describe, it } from "node:test";
import { CachePaths } from "../../src/storage/paths.ts";
import { ManifestStore } from "../../src/storage/manifest-store.ts";

describe("ManifestStore tag records", () => {
  let root: string;
  let paths: CachePaths;
  before(async () => {
    root = await mkdtemp(join(tmpdir(), "regmirror-store-"));
    paths = new CachePaths(root);
    await mkdir(paths.tmpDir, { recursive: true });
  });
  after(() => rm(root, { recursive: true, force: true }));

  it("treats a missing or torn record as absent", async () => {
    const store = new ManifestStore(paths, 1024 * 1024);
    assert.equal(await store.getTag("u", "r", "missing"), undefined);
    const torn = paths.tag("u", "r", "torn");
    await mkdir(dirname(torn), { recursive: true });
    await writeFile(torn, '{"entries":[{"dig');
    assert.equal(await store.getTag("u", "r", "torn"), undefined);
    await writeFile(paths.tag("u", "r", "odd"), "null");
    assert.equal(await store.getTag("u", "r", "odd"), undefined);
  });

  it("lets any other read error reach the caller instead of passing for a miss", async () => {
    const store = new ManifestStore(paths, 1024 * 1024);
    // A directory where the record should be: EISDIR, standing in for EMFILE or EACCES (the
    // tests run as root, which no permission stops).
    await mkdir(paths.tag("u", "r", "unreadable"), { recursive: true });
    await assert.rejects(store.getTag("u", "r", "unreadable"), { code: "EISDIR" });
  });
});
