// Faults around a blob's way into and out of the cache: storage errors, hung-up clients,
// stalled upstreams and readers, eviction racing a fill.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { describe, it } from "node:test";
import { BlobStore, type BlobWriter } from "../../src/storage/blob-store.ts";
import { startFakeUpstream } from "../fixtures/fake-upstream.ts";
import { startTestMirror } from "../fixtures/mirror.ts";
import { get } from "../fixtures/http.ts";

const MiB = 1024 * 1024;

/** A cache whose first `failures` beginWrite calls fail, as if tmp/ were briefly unwritable. */
class FlakyStartStore extends BlobStore {
  failures = 1;
  override async beginWrite(...args: Parameters<BlobStore["beginWrite"]>): Promise<BlobWriter> {
    if (this.failures > 0) {
      this.failures--;
      throw Object.assign(new Error("EACCES: permission denied"), { code: "EACCES" });
    }
    return super.beginWrite(...args);
  }
}

function blobFile(cacheDir: string, digest: string): string {
  const hex = digest.slice("sha256:".length);
  return join(cacheDir, "blobs", "sha256", hex.slice(0, 2), hex);
}

describe("a storage error at the start of a fill", () => {
  it("serves that request from the upstream and caches the blob on the next one", async () => {
    const fake = await startFakeUpstream();
    const mirror = await startTestMirror(fake.url, {}, { blobStore: (paths) => new FlakyStartStore(paths) });
    try {
      const bytes = randomBytes(2 * MiB);
      const digest = fake.addBlob(bytes);
      const url = `${mirror.url}/v2/library/flaky/blobs/${digest}`;
      const first = await get(url);
      assert.equal(first.status, 200);
      assert.ok(first.complete);
      assert.equal(first.digest, digest);
      const second = await get(url);
      assert.equal(second.digest, digest);
      assert.ok(existsSync(blobFile(mirror.cacheDir, digest)), "the second request cached the blob");
      fake.resetRequests();
      const third = await get(url);
      assert.equal(third.digest, digest);
      assert.equal(fake.count("GET", "/v2/library/flaky/blobs/"), 0, "the third is a hit");
    } finally {
      await mirror.stop();
      await fake.stop();
    }
  });
});
