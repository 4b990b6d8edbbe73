// Cache policy and resilience against the fault-injecting fake upstream: Range on hit and miss,
// fills that outlive their client, upstream cuts, stale tags, eviction, a full disk.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { readdir } from "node:fs/promises";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { describe, it } from "node:test";
import { request } from "undici";
import { startFakeUpstream, type FakeUpstream } from "../fixtures/fake-upstream.ts";
import { fakeAndMirror, startTestMirror, type TestMirror } from "../fixtures/mirror.ts";
import { get } from "../fixtures/http.ts";
import { value } from "../fixtures/metrics.ts";
import { BlobStore, BlobWriter } from "../../src/storage/blob-store.ts";
import type { Cache } from "../../src/storage/cache.ts";

const MiB = 1024 * 1024;
const blobFile = (m: TestMirror, digest: string) =>
  join(m.cacheDir, "blobs", "sha256", digest.slice(7, 9), digest.slice(7));
const tmpFiles = (m: TestMirror) => readdir(join(m.cacheDir, "tmp"));

async function until(cond: () => boolean | Promise<boolean>, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error("timed out waiting for a condition");
    await sleep(20);
  }
}

describe("Range", () => {
  let fake: FakeUpstream;
  let mirror: TestMirror;
  fakeAndMirror((f, m) => ((fake = f), (mirror = m)));

  it("answers 206 / 416 on a cached blob, with Accept-Ranges", async () => {
    const bytes = randomBytes(100_000);
    const digest = fake.addBlob(bytes);
    await get(`${mirror.url}/v2/library/r/blobs/${digest}`);
    const url = `${mirror.url}/v2/library/r/blobs/${digest}`;
    const cases: Array<[string, number, number]> = [
      ["bytes=0-9", 0, 9],
      ["bytes=99990-", 99_990, 99_999],
      ["bytes=-100", 99_900, 99_999],
      ["bytes=500-200000", 500, 99_999],
    ];
    for (const [range, start, end] of cases) {
      const r = await get(url, { range }, { keep: true });
      assert.equal(r.status, 206, range);
      assert.equal(r.headers["content-range"], `bytes ${start}-${end}/100000`, range);
      assert.equal(r.headers["content-length"], String(end - start + 1));
      assert.deepEqual(r.body, bytes.subarray(start, end + 1), range);
    }
    const bad = await get(url, { range: "bytes=100000-" });
    assert.equal(bad.status, 416);
    assert.equal(bad.headers["content-range"], "bytes */100000");
    const whole = await get(url);
    assert.equal(whole.headers["accept-ranges"], "bytes");
  });

  it("answers a Range request on a miss from the fill, which caches the whole blob once", async () => {
    const bytes = randomBytes(4 * MiB);
    const digest = fake.addBlob(bytes);
    fake.behave(digest, { slowBytesPerSec: 8 * MiB, times: 1 });
    fake.resetRequests();
    const url = `${mirror.url}/v2/library/r/blobs/${digest}`;
    const [head, tail] = await Promise.all([
      get(url, { range: "bytes=0-1023" }, { keep: true }),
      get(url, { range: `bytes=${3 * MiB}-${3 * MiB + 99}` }, { keep: true }),
    ]);
    assert.equal(head.status, 206);
    assert.deepEqual(head.body, bytes.subarray(0, 1024));
    assert.ok(head.firstByteAt < tail.doneAt, "the first bytes come as they land, not after the whole blob");
    assert.equal(tail.status, 206);
    assert.deepEqual(tail.body, bytes.subarray(3 * MiB, 3 * MiB + 100));
    assert.equal(fake.count("GET", "/v2/library/r/blobs/"), 1, "one upstream transfer");
    await until(() => existsSync(blobFile(mirror, digest)));
  });
});

describe("fills and faults", () => {
  let fake: FakeUpstream;
  let mirror: TestMirror;
  fakeAndMirror((f, m) => ((fake = f), (mirror = m)));

  it("finishes the fill when the client hangs up at 10%", async () => {
    const bytes = randomBytes(8 * MiB);
    const digest = fake.addBlob(bytes);
    fake.behave(digest, { slowBytesPerSec: 16 * MiB, times: 1 });
    const res = await request(`${mirror.url}/v2/library/h/blobs/${digest}`);
    let seen = 0;
    for await (const chunk of res.body) {
      seen += (chunk as Buffer).length;
      if (seen >= bytes.length / 10) break; // leaving the loop destroys the body: the client hangs up
    }
    assert.ok(seen < bytes.length / 2);
    await until(() => existsSync(blobFile(mirror, digest)), 10_000);
    fake.resetRequests();
    const again = await get(`${mirror.url}/v2/library/h/blobs/${digest}`);
    assert.equal(again.digest, digest, "the cached blob verifies");
    assert.equal(fake.requests.length, 0, "served from the cache");
  });

  it("aborts the client when the upstream is cut at 50%, caches nothing, and the next request succeeds", async () => {
    const bytes = randomBytes(4 * MiB);
    const digest = fake.addBlob(bytes);
    fake.behave(digest, { cutAt: 0.5, times: 1 });
    const cut = await get(`${mirror.url}/v2/library/c/blobs/${digest}`);
    assert.equal(cut.complete, false, "the client sees an aborted transfer");
    assert.ok(cut.length < bytes.length);
    await until(async () => (await tmpFiles(mirror)).length === 0);
    assert.ok(!existsSync(blobFile(mirror, digest)), "nothing cached");
    const next = await get(`${mirror.url}/v2/library/c/blobs/${digest}`);
    assert.equal(next.status, 200);
    assert.equal(next.digest, digest);
  });

  it("32 concurrent requests for a cold blob cause one upstream GET; latecomers stream at once", async () => {
    const bytes = randomBytes(16 * MiB);
    const digest = fake.addBlob(bytes);
    fake.behave(digest, { slowBytesPerSec: 8 * MiB, times: 1 });
    fake.resetRequests();
    const url = `${mirror.url}/v2/library/co/blobs/${digest}`;
    const first = get(url);
    await sleep(150);
    const rest = await Promise.all(Array.from({ length: 31 }, () => get(url)));
    const all = [await first, ...rest];
    for (const r of all) assert.equal(r.digest, digest);
    assert.equal(fake.count("GET", "/v2/library/co/blobs/"), 1);
    const firstDone = all[0]!.doneAt;
    for (const r of rest)
      assert.ok(r.firstByteAt < firstDone, "a latecomer streams before the fill is complete");
  });
});

describe("tags: revalidation and serve-stale", () => {
  const OCI = "application/vnd.oci.image.manifest.v1+json";
  const manifest = (n: number) =>
    Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: OCI, config: {}, layers: [], n }));
  let fake: FakeUpstream;
  let mirror: TestMirror;
  // TTL 0: every tag request revalidates, so each case below exercises the upstream.
  fakeAndMirror((f, m) => ((fake = f), (mirror = m)), { tag: { ttl: "0s", maxStale: "1h" } });

  it("revalidates an expired tag with a HEAD only, while the digest is unchanged", async () => {
    const digest = fake.addManifest("library/t", "1", manifest(1), OCI);
    assert.equal((await fetch(`${mirror.url}/v2/library/t/manifests/1`)).status, 200);
    fake.resetRequests();
    const res = await fetch(`${mirror.url}/v2/library/t/manifests/1`);
    assert.equal(res.headers.get("docker-content-digest"), digest);
    assert.deepEqual(
      fake.requests.map((r) => `${r.method} ${r.path}`),
      ["HEAD /v2/library/t/manifests/1"],
    );
    // The tag moves: one HEAD, then one GET for the new manifest.
    const moved = fake.addManifest("library/t", "1", manifest(2), OCI);
    fake.resetRequests();
    const res2 = await fetch(`${mirror.url}/v2/library/t/manifests/1`);
    assert.equal(res2.headers.get("docker-content-digest"), moved);
    assert.deepEqual(
      fake.requests.map((r) => r.method),
      ["HEAD", "GET"],
    );
  });

  for (const status of [429, 503] as const) {
    it(`serves a cached tag with a Warning when the upstream answers ${status}`, async () => {
      const digest = fake.addManifest("library/s", `v${status}`, manifest(status), OCI);
      assert.equal((await fetch(`${mirror.url}/v2/library/s/manifests/v${status}`)).status, 200);
      fake.behave("*", { status, times: 1 });
      const res = await fetch(`${mirror.url}/v2/library/s/manifests/v${status}`);
      assert.equal(res.status, 200);
      assert.equal(res.headers.get("docker-content-digest"), digest);
      assert.match(res.headers.get("warning") ?? "", /^110 /);
      assert.ok(value(await mirror.metrics(), "regmirror_served_stale_total") >= 1);

      fake.behave("*", { status, times: 1 });
      const uncached = await fetch(`${mirror.url}/v2/library/s/manifests/never-seen-${status}`);
      assert.equal(uncached.status, status);
      const body = (await uncached.json()) as { errors: Array<{ code: string }> };
      assert.equal(body.errors[0]!.code, status === 429 ? "TOOMANYREQUESTS" : "UNAVAILABLE");
      if (status === 429) assert.equal(uncached.headers.get("retry-after"), "1");
    });
  }

  it("serves a cached tag when the upstream is gone altogether", async () => {
    const other = await startFakeUpstream();
    const m = await startTestMirror(other.url, { tag: { ttl: "0s" } });
    try {
      const digest = other.addManifest("library/g", "1", manifest(9), OCI);
      assert.equal((await fetch(`${m.url}/v2/library/g/manifests/1`)).status, 200);
      await other.stop();
      const res = await fetch(`${m.url}/v2/library/g/manifests/1`);
      assert.equal(res.status, 200);
      assert.equal(res.headers.get("docker-content-digest"), digest);
      assert.ok(res.headers.get("warning"));
      const byDigest = await fetch(`${m.url}/v2/library/g/manifests/${digest}`);
      assert.equal(byDigest.status, 200, "a digest never needs the upstream");
    } finally {
      await m.stop();
    }
  });
});

describe("eviction", () => {
  it("keeps the cache under maxSize by dropping the least recently read blobs", async () => {
    const fake = await startFakeUpstream();
    const mirror = await startTestMirror(fake.url, { cache: { maxSize: "5MiB" } });
    try {
      const digests = Array.from({ length: 8 }, () => fake.addBlob(randomBytes(MiB)));
      for (const [i, d] of digests.entries()) {
        assert.equal((await get(`${mirror.url}/v2/library/e/blobs/${d}`)).digest, d);
        await until(() => existsSync(blobFile(mirror, d)));
        if (i >= 2) await get(`${mirror.url}/v2/library/e/blobs/${digests[0]}`); // keep #0 hot
      }
      const onDisk = () => digests.filter((d) => existsSync(blobFile(mirror, d)));
      await until(() => onDisk().length <= 5);
      const kept = onDisk();
      assert.ok(kept.includes(digests[0]!), "the blob read again and again stays");
      assert.ok(kept.includes(digests[7]!), "the newest stays");
      assert.ok(!kept.includes(digests[1]!), "the oldest unread goes");
      assert.ok(kept.length * MiB <= 5 * MiB);
      assert.ok(value(await mirror.metrics(), "regmirror_evictions_total", { reason: "size" }) >= 1);
      // An evicted blob is fetched again on demand.
      assert.equal((await get(`${mirror.url}/v2/library/e/blobs/${digests[1]}`)).digest, digests[1]);
    } finally {
      await mirror.stop();
      await fake.stop();
    }
  });

  it("drops blobs unread for blobTTL", async () => {
    const fake = await startFakeUpstream();
    const mirror = await startTestMirror(fake.url, { cache: { blobTTL: "1s" } });
    try {
      const d = fake.addBlob(randomBytes(1000));
      await get(`${mirror.url}/v2/library/a/blobs/${d}`);
      await until(() => existsSync(blobFile(mirror, d)));
      await until(() => !existsSync(blobFile(mirror, d)), 5000);
      assert.equal(value(await mirror.metrics(), "regmirror_evictions_total", { reason: "age" }), 1);
    } finally {
      await mirror.stop();
      await fake.stop();
    }
  });
});

/** A disk that fills up after `limit` bytes of any one blob (or at once, with limit 0). */
class FullDiskStore extends BlobStore {
  constructor(
    cache: Cache,
    private readonly limit: number,
  ) {
    super(cache.driver, cache.paths);
  }
  override async beginWrite(...args: Parameters<BlobStore["beginWrite"]>): Promise<BlobWriter> {
    if (this.limit === 0)
      throw Object.assign(new Error("ENOSPC: no space left on device"), { code: "ENOSPC" });
    const w = await super.beginWrite(...args);
    const limit = this.limit;
    const full = () => Object.assign(new Error("ENOSPC: no space left on device"), { code: "ENOSPC" });
    const write = w.write.bind(w);
    const writev = w.writev.bind(w);
    w.write = async (chunk: Buffer) => {
      if (w.written + chunk.length > limit) throw full();
      return write(chunk);
    };
    w.writev = async (chunks: Buffer[]) => {
      if (w.written + chunks.reduce((a, c) => a + c.length, 0) > limit) throw full();
      return writev(chunks);
    };
    return w;
  }
}

describe("a full disk", () => {
  for (const limit of [0, MiB]) {
    it(`still gets the client a correct blob when writes fail after ${limit} bytes`, async () => {
      const fake = await startFakeUpstream();
      const mirror = await startTestMirror(fake.url, {}, { blobStore: (c) => new FullDiskStore(c, limit) });
      try {
        const bytes = randomBytes(4 * MiB);
        const digest = fake.addBlob(bytes);
        const results = await Promise.all(
          [1, 2, 3].map(() => get(`${mirror.url}/v2/library/f/blobs/${digest}`)),
        );
        for (const r of results) {
          assert.equal(r.status, 200);
          assert.ok(r.complete);
          assert.equal(r.digest, digest);
        }
        const ranged = await get(
          `${mirror.url}/v2/library/f/blobs/${digest}`,
          { range: "bytes=3000000-3000009" },
          { keep: true },
        );
        assert.deepEqual(ranged.body, bytes.subarray(3_000_000, 3_000_010));
        assert.ok(!existsSync(blobFile(mirror, digest)));
        await until(async () => (await tmpFiles(mirror)).length === 0); // the last fill is dropped after its clients are served
        assert.ok(value(await mirror.metrics(), "regmirror_fill_failures_total", { reason: "storage" }) >= 1);
      } finally {
        await mirror.stop();
        await fake.stop();
      }
    });
  }
});
