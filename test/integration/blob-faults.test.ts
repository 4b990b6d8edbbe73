// Faults around a blob's way into and out of the cache: storage errors, hung-up clients,
// stalled upstreams and readers, eviction racing a fill.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { readdir } from "node:fs/promises";
import { connect } from "node:net";
import { createHash } from "node:crypto";
import { request } from "undici";
import { setTimeout as sleep } from "node:timers/promises";
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

const openFds = async (): Promise<number> => (await readdir("/proc/self/fd")).length;

/** Sends a GET and resets the connection at once, before any answer can come. */
function connectAndReset(url: string): Promise<void> {
  const u = new URL(url);
  return new Promise((resolve) => {
    const sock = connect(Number(u.port), u.hostname, () => {
      sock.write(`GET ${u.pathname} HTTP/1.1\r\nHost: ${u.host}\r\n\r\n`, () => {
        sock.resetAndDestroy();
        resolve();
      });
    });
    sock.on("error", () => resolve());
  });
}

/** Waits for the process's open descriptors to come back to `baseline` (or fails with the count). */
async function fdsBackTo(baseline: number): Promise<number> {
  let now = await openFds();
  for (let i = 0; i < 50 && now > baseline; i++) {
    await sleep(100);
    now = await openFds();
  }
  return now;
}

describe("clients that hang up while a cached blob is being opened", () => {
  for (const size of [200 * 1024, 3 * MiB]) {
    for (const sendfile of [true, false]) {
      it(`leave no file open (${size} bytes, sendfile ${sendfile})`, async () => {
        const fake = await startFakeUpstream();
        const mirror = await startTestMirror(fake.url, { cache: { sendfile } });
        try {
          const digest = fake.addBlob(randomBytes(size));
          const url = `${mirror.url}/v2/library/reset/blobs/${digest}`;
          assert.equal((await get(url)).digest, digest); // cached now
          const baseline = await openFds();
          for (let round = 0; round < 6; round++) {
            await Promise.all(Array.from({ length: 25 }, () => connectAndReset(url)));
          }
          const left = await fdsBackTo(baseline);
          assert.ok(left <= baseline, `${left - baseline} descriptors left open`);
          assert.equal((await get(url)).digest, digest, "later requests are still served");
        } finally {
          await mirror.stop();
          await fake.stop();
        }
      });
    }
  }
});

describe("a blob evicted the moment its fill commits", () => {
  it("still reaches every concurrent reader whole (cache.maxSize below the blob size)", async () => {
    const fake = await startFakeUpstream();
    const mirror = await startTestMirror(fake.url, { cache: { maxSize: "2MiB" } });
    try {
      const bytes = randomBytes(6 * MiB);
      const digest = fake.addBlob(bytes);
      fake.behave(digest, { slowBytesPerSec: 6 * MiB, times: 1 }); // ~1 s
      const url = `${mirror.url}/v2/library/evicted/blobs/${digest}`;
      // Some readers keep up; some stop reading until after the commit and eviction, so they
      // still need bytes that only the (renamed, then unlinked) file holds.
      const reader = async (lateMs: number) => {
        await sleep(lateMs % 400);
        const res = await request(url);
        const hash = createHash("sha256");
        let length = 0;
        if (lateMs >= 400) await sleep(1500);
        for await (const c of res.body) {
          hash.update(c as Buffer);
          length += (c as Buffer).length;
        }
        return { length, digest: "sha256:" + hash.digest("hex") };
      };
      const results = await Promise.all([0, 100, 200, 300, 400, 500, 600, 700].map(reader));
      for (const r of results) {
        assert.equal(r.length, bytes.length);
        assert.equal(r.digest, digest);
      }
    } finally {
      await mirror.stop();
      await fake.stop();
    }
  });
});
