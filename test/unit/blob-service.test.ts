// BlobService driven in-process, as distribution's TestProxyStoreServeHighConcurrency: an
// in-memory upstream that counts its requests, a BlobStore in a temp directory, no HTTP.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PassThrough, Writable } from "node:stream";
import { finished } from "node:stream/promises";
import { after, before, describe, it } from "node:test";
import type { Logger } from "winston";
import { InProcessCoordinator } from "../../src/coordination/in-process.ts";
import { Metrics } from "../../src/metrics/metrics.ts";
import { BlobService, type BlobAnswer } from "../../src/mirror/blobs.ts";
import { Evictor } from "../../src/mirror/eviction.ts";
import type { FillTicket } from "../../src/mirror/fill-follower.ts";
import { digestOf, parseDigest, type Digest } from "../../src/oci/digest.ts";
import { RegistryError } from "../../src/oci/errors.ts";
import { BlobStore } from "../../src/storage/blob-store.ts";
import { filesystemCache } from "../../src/storage/cache.ts";
import type { UpstreamClient, UpstreamRequest, UpstreamResponse } from "../../src/upstream/client.ts";
import { value } from "../fixtures/metrics.ts";

const quiet = { info() {}, warn() {}, error() {}, debug() {} } as unknown as Logger;

/**
 * The upstream, in memory. Every request waits until `answer()` is called, so the test decides
 * when the upstream has answered; the body is then written by the test through `bodies`.
 */
class FakeUpstream {
  readonly name = "fake";
  readonly requests: UpstreamRequest[] = [];
  readonly bodies: PassThrough[] = [];
  private waiting: Array<() => void> = [];
  status = 200;

  constructor(readonly size: number) {}

  count(method: string): number {
    return this.requests.filter((r) => r.method === method).length;
  }

  answer(): void {
    for (const go of this.waiting.splice(0)) go();
  }

  async fetch(req: UpstreamRequest): Promise<UpstreamResponse> {
    this.requests.push(req);
    await new Promise<void>((resolve) => this.waiting.push(resolve));
    const body = new PassThrough();
    if (req.method === "HEAD" || this.status !== 200) body.end();
    else this.bodies.push(body);
    return { status: this.status, headers: { "content-length": String(this.size) }, body };
  }

  /** Resolves once `n` requests have arrived. */
  async requested(n: number): Promise<void> {
    while (this.requests.length < n) await new Promise((r) => setImmediate(r));
  }
}

/**
 * GETs until the answer is a hit, for a test whose fill has sent its last byte: the blob is
 * published a moment later, and until then a GET still follows the fill.
 */
async function untilHit(blobs: BlobService, client: UpstreamClient, d: Digest): Promise<BlobAnswer> {
  for (;;) {
    const answer = await blobs.get(client, "library/x", d, "GET");
    if (answer.source === "cache") return answer;
    answer.release();
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** A writable that keeps what it is sent. */
function sink(): { out: Writable; bytes: () => Buffer } {
  const chunks: Buffer[] = [];
  const out = new Writable({
    write(chunk: Buffer, _enc, cb) {
      chunks.push(chunk);
      cb();
    },
  });
  return { out, bytes: () => Buffer.concat(chunks) };
}

describe("BlobService", () => {
  let dir: string;
  let store: BlobStore;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "regmirror-blobs-"));
    const cache = filesystemCache(dir);
    store = new BlobStore(cache.driver, cache.paths);
    await store.init();
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  function service(
    metrics = new Metrics({ processMetrics: false }),
    fillsIdle?: () => void,
    memoryBytes = 0,
  ) {
    // Counts the clients that reached the fill's flight (run: started or joined it).
    const fills = new InProcessCoordinator().flights<FillTicket>("blob-fills");
    const reached = { n: 0 };
    const run = fills.run.bind(fills);
    fills.run = (key, fn) => {
      reached.n++;
      return run(key, fn);
    };
    const evictor = new Evictor({ store, metrics, log: quiet, maxSizeBytes: 1 << 30, blobTtlMs: 0 });
    const blobs = new BlobService({
      store,
      evictor,
      metrics,
      log: quiet,
      fillTimeoutMs: 60_000,
      abandonedFillTimeoutMs: 60_000,
      memoryBytes,
      sendfile: false,
      sendfileThreads: 1,
      stallTimeoutMs: 60_000,
      fills,
      fillsIdle,
    });
    return { blobs, metrics, evictor, reached };
  }

  function cold(size: number): { bytes: Buffer; d: Digest; upstream: FakeUpstream; client: UpstreamClient } {
    const bytes = randomBytes(size);
    const upstream = new FakeUpstream(size);
    return {
      bytes,
      d: parseDigest(digestOf(bytes))!,
      upstream,
      client: upstream as unknown as UpstreamClient,
    };
  }

  it("serves 50 concurrent GETs of one cold blob with one upstream GET and 50 whole bodies", async () => {
    const { blobs, metrics, evictor } = service();
    const { bytes, d, upstream, client } = cold(3 * 1024 * 1024 + 17);
    const answers = Array.from({ length: 50 }, () => blobs.get(client, "library/x", d, "GET"));
    await upstream.requested(1);
    upstream.answer();
    // Every client has its answer before the first byte: all of them are following the fill.
    const got: BlobAnswer[] = await Promise.all(answers);
    const sinks = got.map((a) => {
      const s = sink();
      a.send(s.out, 0, bytes.length - 1);
      return s;
    });
    const body = upstream.bodies[0]!;
    for (let at = 0; at < bytes.length; at += 256 * 1024) body.write(bytes.subarray(at, at + 256 * 1024));
    body.end();
    await Promise.all(sinks.map((s) => finished(s.out)));
    for (const s of sinks) assert.ok(s.bytes().equals(bytes), "a whole, correct body");
    assert.equal(upstream.count("GET"), 1);
    const text = await metrics.registry.metrics();
    assert.equal(value(text, "regmirror_coalesced_requests_total", { kind: "blob" }), 49);
    // Once published, the next GET is a hit, and asks the upstream nothing (until then it
    // follows the fill's file: see the test of BlobFill that holds the publish back).
    const hit = await untilHit(blobs, client, d);
    assert.equal(hit.source, "cache");
    hit.release();
    assert.equal(upstream.requests.length, 1);
    await blobs.close();
    await evictor.close();
  });

  it("says when the last of its fills has ended, not before (start.ts trims malloc then)", async () => {
    let idle = 0;
    const { blobs, evictor } = service(undefined, () => idle++);
    const one = cold(100_000);
    const two = cold(200_000);
    const answers = [one, two].map((c) => blobs.get(c.client, "library/x", c.d, "GET"));
    for (const c of [one, two]) {
      await c.upstream.requested(1);
      c.upstream.answer();
    }
    const got = await Promise.all(answers);
    const sinks = got.map((a, i) => {
      const s = sink();
      a.send(s.out, 0, [one, two][i]!.bytes.length - 1);
      return s;
    });
    one.upstream.bodies[0]!.end(one.bytes);
    await finished(sinks[0]!.out);
    // The first fill ends when its blob is published: from then on a GET is a hit.
    (await untilHit(blobs, one.client, one.d)).release();
    assert.equal(idle, 0, "a fill still runs");
    two.upstream.bodies[0]!.end(two.bytes);
    await finished(sinks[1]!.out);
    while (idle === 0) await new Promise((r) => setTimeout(r, 5));
    assert.equal(idle, 1);
    await blobs.close();
    await evictor.close();
  });

  it("is not idle while a client still follows a fill that has ended (its reads hold buffers too)", async () => {
    let idle = 0;
    const { blobs, evictor } = service(undefined, () => idle++);
    const c = cold(300_000);
    const both = [blobs.get(c.client, "library/x", c.d, "GET"), blobs.get(c.client, "library/x", c.d, "GET")];
    await c.upstream.requested(1);
    c.upstream.answer();
    const [fast, slow] = await Promise.all(both);
    const first = sink();
    fast!.send(first.out, 0, c.bytes.length - 1);
    c.upstream.bodies[0]!.end(c.bytes);
    await finished(first.out);
    (await untilHit(blobs, c.client, c.d)).release();
    // The fill is over (published); the second client has not read a byte yet.
    await new Promise((r) => setTimeout(r, 20));
    assert.equal(idle, 0, "a client still follows the fill");
    const second = sink();
    slow!.send(second.out, 0, c.bytes.length - 1);
    await finished(second.out);
    assert.ok(second.bytes().equals(c.bytes));
    while (idle === 0) await new Promise((r) => setTimeout(r, 5));
    assert.equal(idle, 1);
    await blobs.close();
    await evictor.close();
  });

  it("loadSmall looks for no file while the blob is being filled here, and reads it in once published", async () => {
    const { blobs, evictor } = service(undefined, undefined, 1024 * 1024);
    const c = cold(100_000);
    const opens = { n: 0 };
    const open = store.open.bind(store);
    store.open = (d) => {
      opens.n++;
      return open(d);
    };
    try {
      const answer = blobs.get(c.client, "library/x", c.d, "GET");
      await c.upstream.requested(1);
      c.upstream.answer();
      const following = await answer;
      const before = opens.n;
      assert.equal(await blobs.loadSmall("fake", c.d), undefined);
      assert.equal(opens.n, before, "no open while the fill runs");
      const s = sink();
      following.send(s.out, 0, c.bytes.length - 1);
      c.upstream.bodies[0]!.end(c.bytes);
      await finished(s.out);
      (await untilHit(blobs, c.client, c.d)).release();
      assert.ok((await blobs.loadSmall("fake", c.d))?.equals(c.bytes));
    } finally {
      store.open = open;
    }
    await blobs.close();
    await evictor.close();
  });

  it("gives a failed upstream answer to every waiting client, and the next GET asks afresh", async () => {
    const { blobs, evictor, reached } = service();
    const { d, upstream, client } = cold(1024);
    upstream.status = 503;
    const answers = Array.from({ length: 10 }, () => blobs.get(client, "library/x", d, "GET"));
    await upstream.requested(1);
    // All ten are waiting on the one fill (a cache lookup may take a moment), then it fails.
    while (reached.n < 10) await new Promise((r) => setImmediate(r));
    upstream.answer();
    for (const a of answers) await assert.rejects(a, RegistryError);
    assert.equal(upstream.count("GET"), 1, "one upstream GET for all ten");
    const again = blobs.get(client, "library/x", d, "GET");
    await upstream.requested(2);
    upstream.answer();
    await assert.rejects(again, RegistryError);
    assert.equal(upstream.count("GET"), 2, "the failed fill was not remembered");
    await blobs.close();
    await evictor.close();
  });

  it("lets a HEAD follow a fill in flight, but never start one", async () => {
    const { blobs, evictor } = service();
    const { bytes, d, upstream, client } = cold(4096);
    const head = blobs.get(client, "library/x", d, "HEAD");
    await upstream.requested(1);
    upstream.answer();
    assert.equal((await head).size, bytes.length);
    assert.deepEqual(
      upstream.requests.map((r) => r.method),
      ["HEAD"],
      "no fill for a HEAD",
    );
    const getting = blobs.get(client, "library/x", d, "GET");
    await upstream.requested(2);
    upstream.answer();
    const answer = await getting;
    const joined = await blobs.get(client, "library/x", d, "HEAD");
    assert.equal(joined.size, bytes.length);
    assert.equal(upstream.requests.length, 2, "the HEAD joined the fill");
    joined.release();
    const s = sink();
    answer.send(s.out, 0, bytes.length - 1);
    upstream.bodies[0]!.end(bytes);
    await finished(s.out);
    assert.ok(s.bytes().equals(bytes));
    await blobs.close();
    await evictor.close();
  });
});
