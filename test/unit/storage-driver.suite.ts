// What every storage driver must do, run against each of them (storage-fs.test.ts on a temp
// directory, storage-s3.test.ts on a real Ceph RADOS Gateway). The blob tests go through
// BlobStore, as the mirror does: a local temp file, verified, then published.
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { readdir } from "node:fs/promises";
import { text } from "node:stream/consumers";
import { describe, it } from "node:test";
import type { Logger } from "winston";
import { Evictor } from "../../src/mirror/eviction.ts";
import { Metrics } from "../../src/metrics/metrics.ts";
import { parseDigest, type Digest } from "../../src/oci/digest.ts";
import { BlobStore, DigestMismatchError, SizeMismatchError } from "../../src/storage/blob-store.ts";
import type { StorageDriver } from "../../src/storage/driver.ts";
import { blobKey } from "../../src/storage/keys.ts";
import type { CachePaths } from "../../src/storage/paths.ts";

export interface DriverUnderTest {
  driver: StorageDriver;
  /** The local directory for fills (temp files). */
  paths: CachePaths;
  /**
   * Leaves what a crash in the middle of a blob's publishing leaves on this driver; resolves to
   * a function that counts what of it is still there.
   */
  crashDebris(key: string, bytes: Buffer): Promise<() => Promise<number>>;
}

const quiet = { info() {}, warn() {}, error() {}, debug() {} } as unknown as Logger;

function digestOf(bytes: Buffer): Digest {
  return parseDigest(`sha256:${createHash("sha256").update(bytes).digest("hex")}`)!;
}

async function readAll(driver: StorageDriver, key: string, start?: number, end?: number): Promise<Buffer> {
  const r = await driver.open(key);
  assert.ok(r, `${key} is there`);
  try {
    const chunks: Buffer[] = [];
    for await (const c of r.stream(start ?? 0, end ?? r.size - 1)) chunks.push(c as Buffer);
    return Buffer.concat(chunks);
  } finally {
    await r.close();
  }
}

async function writeBlob(store: BlobStore, bytes: Buffer, d = digestOf(bytes)): Promise<void> {
  const w = await store.beginWrite(d, bytes.length);
  // In pieces, as a fill writes.
  for (let at = 0; at < bytes.length; at += 300_000) await w.write(bytes.subarray(at, at + 300_000));
  await w.commit();
}

export function storageDriverSuite(name: string, open: () => Promise<DriverUnderTest>): void {
  describe(`the ${name} storage driver`, () => {
    it("puts, gets, stats and overwrites small objects, and deletes them once", async () => {
      const { driver } = await open();
      const key = "repos/docker.io/library/alpine/_tags/3.20_rc-1.json";
      assert.equal(await driver.get(key), undefined);
      assert.equal(await driver.stat(key), undefined);
      await driver.put(key, '{"a":1}');
      await driver.put(key, Buffer.from('{"b":22}'));
      assert.equal((await driver.get(key))!.toString(), '{"b":22}');
      const st = await driver.stat(key);
      assert.equal(st?.size, 8);
      assert.ok(Math.abs(st.modifiedMs - Date.now()) < 60_000, "modified is a wall-clock time");
      assert.equal(await driver.delete(key), true);
      assert.equal(await driver.delete(key), false);
      assert.equal(await driver.get(key), undefined);
    });

    it("publishes a blob only after its digest and size were verified", async () => {
      const { driver, paths } = await open();
      const store = new BlobStore(driver, paths);
      await store.init();
      const bytes = randomBytes(700_000);
      const right = digestOf(bytes);
      const wrong = digestOf(Buffer.from("something else"));
      await assert.rejects(writeBlob(store, bytes, wrong), DigestMismatchError);
      assert.equal(await driver.stat(blobKey(wrong)), undefined, "nothing under the wrong digest");
      const short = await store.beginWrite(right, bytes.length + 1);
      await short.write(bytes);
      await assert.rejects(short.commit(), SizeMismatchError);
      assert.equal(await driver.stat(blobKey(right)), undefined);
      await writeBlob(store, bytes);
      assert.deepEqual(await readAll(driver, blobKey(right)), bytes);
      assert.deepEqual(await readdir(paths.tmpDir), [], "no temp file left, whatever the outcome");
    });

    it("takes concurrent publishers of one digest, and keeps one whole blob", async () => {
      const { driver, paths } = await open();
      const store = new BlobStore(driver, paths);
      await store.init();
      const bytes = randomBytes(6 * 1024 * 1024 + 17);
      await Promise.all([1, 2, 3, 4].map(() => writeBlob(store, bytes)));
      const d = digestOf(bytes);
      assert.equal((await driver.stat(blobKey(d)))?.size, bytes.length);
      assert.equal(
        createHash("sha256")
          .update(await readAll(driver, blobKey(d)))
          .digest("hex"),
        d.hex,
      );
      assert.deepEqual(await readdir(paths.tmpDir), []);
    });

    it("reads ranges, by stream and by position", async () => {
      const { driver, paths } = await open();
      const store = new BlobStore(driver, paths);
      await store.init();
      const bytes = randomBytes(1_000_003);
      await writeBlob(store, bytes);
      const key = blobKey(digestOf(bytes));
      assert.deepEqual(await readAll(driver, key, 999_990, 1_000_002), bytes.subarray(999_990));
      assert.deepEqual(await readAll(driver, key, 5, 5), bytes.subarray(5, 6));
      const r = (await driver.open(key))!;
      try {
        assert.equal(r.size, bytes.length);
        const buf = Buffer.alloc(1000);
        const { bytesRead } = await r.read(buf, 0, 1000, 500_000);
        assert.equal(bytesRead, 1000);
        assert.deepEqual(buf, bytes.subarray(500_000, 501_000));
      } finally {
        await r.close();
      }
      assert.equal(await driver.open(blobKey(digestOf(Buffer.from("absent")))), undefined);
    });

    it("lists every object below a prefix, at any depth, in key order, each once", async () => {
      const { driver } = await open();
      const keys: string[] = [];
      for (let i = 0; i < 23; i++) keys.push(`repos/u${i % 3}/lib/r${i}/_tags/t${i}.json`);
      keys.push("repos/u0/lib/r0/tools/_tags/latest.json");
      await Promise.all(keys.map((k) => driver.put(k, k)));
      await driver.put("manifests/sha256/aa/not-listed", "x");
      const listed: string[] = [];
      for await (const o of driver.list("repos/")) {
        listed.push(o.key);
        assert.equal(o.size, Buffer.byteLength(o.key));
      }
      assert.deepEqual(listed, [...keys].sort());
      const one: string[] = [];
      for await (const o of driver.list("repos/u1/")) one.push(o.key);
      assert.deepEqual(one, keys.filter((k) => k.startsWith("repos/u1/")).sort());
      for await (const o of driver.list("nothing/")) assert.fail(`listed ${o.key}`);
    });

    it("keeps the eviction index's byte total exact, from a listing at start and through removals", async () => {
      const { driver, paths } = await open();
      const store = new BlobStore(driver, paths);
      await store.init();
      const sizes = [100_000, 200_000, 300_000];
      const blobs = sizes.map((n) => randomBytes(n));
      for (const b of blobs) await writeBlob(store, b);
      const metrics = new Metrics({ processMetrics: false });
      const evictor = new Evictor({ store, metrics, log: quiet, maxSizeBytes: 550_000, blobTtlMs: 0 });
      await evictor.start(); // 600 000 bytes listed: one of them must go
      await evictor.close();
      const total = (await metrics.cacheBytes.get()).values[0]!.value;
      let listed = 0;
      for await (const b of store.list()) listed += b.size;
      assert.ok(listed < 600_000 && listed <= 550_000, `${listed} bytes left`);
      assert.equal(total, listed, "the index's total is what the storage holds");
    });

    it("cleans what a crash in the middle of publishing left, and nothing is under the key", async () => {
      const under = await open();
      const { driver, paths } = under;
      const bytes = randomBytes(6 * 1024 * 1024);
      const key = blobKey(digestOf(bytes));
      const count = await under.crashDebris(key, bytes);
      assert.ok((await count()) > 0, "the crash left something");
      assert.equal(await driver.stat(key), undefined, "nothing partial under the digest's key");
      const store = new BlobStore(driver, paths);
      await store.init();
      await driver.sweepDebris(0, false);
      assert.equal(await count(), 0);
      assert.equal(await driver.stat(key), undefined);
    });

    it("answers problem() with nothing while it works", async () => {
      const { driver } = await open();
      assert.equal(await driver.problem(), undefined);
      await driver.put("state/probe", "x");
      assert.equal(await text((await driver.open("state/probe"))!.stream(0, 0)), "x");
    });
  });
}
