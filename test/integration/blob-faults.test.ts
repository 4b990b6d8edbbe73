// Faults around a blob's way into and out of the cache: storage errors, hung-up clients,
// stalled upstreams and readers, eviction racing a fill.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { readdir } from "node:fs/promises";
import { createServer, type Server } from "node:http";
import { connect, type AddressInfo } from "node:net";
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
    const mirror = await startTestMirror(
      fake.url,
      {},
      { blobStore: (c) => new FlakyStartStore(c.driver, c.paths) },
    );
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

/** Blob file and temp files of a cache, for "nothing was cached" checks. */
async function tmpFiles(cacheDir: string): Promise<string[]> {
  return readdir(join(cacheDir, "tmp")).catch(() => []);
}

async function until(what: string, check: () => Promise<boolean> | boolean, ms = 8000): Promise<void> {
  for (const end = Date.now() + ms; Date.now() < end; await sleep(50)) if (await check()) return;
  assert.fail(`still not ${what} after ${ms} ms`);
}

/** A registry that sends the first half of one blob and then nothing, holding the connection. */
async function startStallingUpstream(
  bytes: Buffer,
): Promise<{ url: string; digest: string; stop(): Promise<void> }> {
  const digest = "sha256:" + createHash("sha256").update(bytes).digest("hex");
  const server: Server = createServer((req, res) => {
    if (!req.url?.includes("/blobs/"))
      return void res.writeHead(200, { "content-type": "application/json" }).end("{}");
    res.writeHead(200, { "content-length": bytes.length, "docker-content-digest": digest });
    if (req.method === "HEAD") return void res.end();
    res.write(bytes.subarray(0, bytes.length >> 1));
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    digest,
    async stop() {
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
    },
  };
}

describe("cache.fillTimeout is a limit on stalls", () => {
  it("lets a fill that takes longer than fillTimeout but never stalls complete and cache", async () => {
    const fake = await startFakeUpstream();
    const mirror = await startTestMirror(fake.url, { cache: { fillTimeout: "1s" } });
    try {
      const digest = fake.addBlob(randomBytes(5 * MiB));
      fake.behave(digest, { slowBytesPerSec: 2 * MiB }); // ~2.5 s
      const got = await get(`${mirror.url}/v2/library/steady/blobs/${digest}`);
      assert.ok(got.complete, "the body was not cut");
      assert.equal(got.digest, digest);
      assert.ok(existsSync(blobFile(mirror.cacheDir, digest)), "cached");
    } finally {
      await mirror.stop();
      await fake.stop();
    }
  });

  it("gives up a fill whose upstream stops sending mid-body, and caches nothing", async () => {
    const up = await startStallingUpstream(randomBytes(2 * MiB));
    const mirror = await startTestMirror(up.url, { cache: { fillTimeout: "1s" } });
    try {
      const got = await get(`${mirror.url}/v2/library/stall/blobs/${up.digest}`);
      assert.equal(got.status, 200);
      assert.ok(!got.complete, "the client sees the transfer aborted");
      assert.ok(got.length < 2 * MiB);
      await until("cleaned up", async () => (await tmpFiles(mirror.cacheDir)).length === 0);
      assert.ok(!existsSync(blobFile(mirror.cacheDir, up.digest)), "nothing cached");
    } finally {
      await mirror.stop();
      await up.stop();
    }
  });

  it("answers UNAVAILABLE when the upstream sends no headers within fillTimeout", async () => {
    const fake = await startFakeUpstream();
    const mirror = await startTestMirror(fake.url, { cache: { fillTimeout: "1s" } });
    try {
      const digest = fake.addBlob(randomBytes(1000));
      fake.behave(digest, { hang: true, method: "GET" });
      const res = await request(`${mirror.url}/v2/library/silent/blobs/${digest}`);
      const body = (await res.body.json()) as { errors: Array<{ code: string }> };
      assert.equal(res.statusCode, 503);
      assert.equal(body.errors[0]?.code, "UNAVAILABLE");
    } finally {
      await mirror.stop();
      await fake.stop();
    }
  });

  it("gives up a fill nobody follows any more after abandonedFillTimeout", async () => {
    const fake = await startFakeUpstream();
    const mirror = await startTestMirror(fake.url, { cache: { abandonedFillTimeout: "1s" } });
    try {
      const digest = fake.addBlob(randomBytes(8 * MiB));
      fake.behave(digest, { slowBytesPerSec: MiB }); // ~8 s if it ran to the end
      const res = await request(`${mirror.url}/v2/library/left/blobs/${digest}`);
      await new Promise((r) => res.body.once("data", r));
      res.body.destroy();
      await until("given up", async () => (await tmpFiles(mirror.cacheDir)).length === 0, 5000);
      assert.ok(!existsSync(blobFile(mirror.cacheDir, digest)), "nothing cached");
    } finally {
      await mirror.stop();
      await fake.stop();
    }
  });
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

/** GETs `url` on a raw socket and reads nothing until resume(); `closed` resolves when it ends. */
function pausedGet(url: string) {
  const u = new URL(url);
  const chunks: Buffer[] = [];
  const sock = connect(Number(u.port), u.hostname, () =>
    sock.write(`GET ${u.pathname} HTTP/1.1\r\nHost: ${u.host}\r\nConnection: close\r\n\r\n`),
  );
  sock.pause();
  sock.on("data", (c: Buffer) => chunks.push(c));
  const closed = new Promise<Buffer>((resolve) =>
    sock.on("close", () => {
      const all = Buffer.concat(chunks);
      resolve(all.subarray(all.indexOf("\r\n\r\n") + 4));
    }),
  );
  sock.on("error", () => undefined);
  return { closed, resume: () => sock.resume() };
}

describe("send limits through the mirror", () => {
  it("with cache.sendfileThreads 1, concurrent slow readers of a cached blob all get it whole", async () => {
    const fake = await startFakeUpstream();
    const mirror = await startTestMirror(fake.url, { cache: { sendfileThreads: 1 } });
    try {
      const bytes = randomBytes(24 * MiB);
      const digest = fake.addBlob(bytes);
      const url = `${mirror.url}/v2/library/threads/blobs/${digest}`;
      assert.equal((await get(url)).digest, digest);
      const clients = [1, 2, 3, 4].map(() => pausedGet(url));
      await sleep(500);
      clients.forEach((c) => c.resume());
      for (const c of clients) assert.deepEqual(await c.closed, bytes);
    } finally {
      await mirror.stop();
      await fake.stop();
    }
  });

  for (const [what, cached] of [
    ["a cached blob", true],
    ["a fill in progress", false],
  ] as const) {
    it(`limits.stallTimeout cuts a reader of ${what} that stops reading (sendfile off)`, async () => {
      const fake = await startFakeUpstream();
      const mirror = await startTestMirror(fake.url, {
        cache: { sendfile: false },
        limits: { stallTimeout: "1s" },
      });
      try {
        const bytes = randomBytes(32 * MiB);
        const digest = fake.addBlob(bytes);
        const url = `${mirror.url}/v2/library/stalled/blobs/${digest}`;
        if (cached) assert.equal((await get(url)).digest, digest);
        const baseline = await openFds();
        const client = pausedGet(url);
        await sleep(3000); // well past the stall timeout
        // The client's own socket stays open (+1) until it reads: it is paused.
        if (cached) assert.ok((await fdsBackTo(baseline + 1)) <= baseline + 1, "the blob's file is closed");
        // A paused socket sees no end of stream: read now what the mirror sent before it hung up.
        client.resume();
        const body = await client.closed;
        assert.ok(body.length < bytes.length, "the mirror hung up on it");
      } finally {
        await mirror.stop();
        await fake.stop();
      }
    });
  }
});
