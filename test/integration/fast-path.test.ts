// The fast path (cache.fastPath, http/fast-conn.ts): cache hits answered on the connection
// before Node's HTTP server. Every scenario runs against two mirrors of one upstream, one with
// the fast path and one without, and the clients must not be able to tell them apart: same
// statuses, same headers in the same order (the Date and the request id aside), same bodies —
// with pipelining, requests split across packets, requests the fast path hands over mid-stream,
// logins and TLS. The metric regmirror_fast_answers_total shows which path answered.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { cp, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import bcrypt from "bcryptjs";
import { startUpstream, type Upstream } from "../fixtures/upstream.ts";
import { MEDIA, pushImage, type BuiltImage } from "../fixtures/images.ts";
import { startTestMirror, type TestMirror } from "../fixtures/mirror.ts";
import { makeCert } from "../fixtures/tls.ts";
import { value } from "../fixtures/metrics.ts";
import { rawConnect, rawRequest, type RawResponse } from "../fixtures/raw-http.ts";

const ACCEPT = { Accept: MEDIA.dockerManifest };
const VARYING = new Set(["date", "x-request-id"]);

/** A response as a client may compare it: the Date and the request id differ by nature. */
function comparable(r: RawResponse) {
  return {
    status: r.status,
    headers: r.headers.filter(([n]) => !VARYING.has(n.toLowerCase())),
    body: r.body.toString("base64"),
  };
}

async function exchange(url: string, requests: string[], heads: boolean[] = []): Promise<RawResponse[]> {
  const c = await rawConnect(url);
  try {
    c.send(requests.join(""));
    return await c.read(requests.length, heads);
  } finally {
    c.close();
  }
}

let copies = 0;

const fastAnswers = async (m: TestMirror) => value(await m.metrics(), "regmirror_fast_answers_total");

describe("fast path", { timeout: 120_000 }, () => {
  let up: Upstream;
  let work: string;
  let image: BuiltImage;
  let fast: TestMirror;
  let node: TestMirror;
  const paths = () => ({
    tag: "/v2/library/fast/manifests/1",
    digest: `/v2/library/fast/manifests/${image.manifestDigest}`,
    config: `/v2/library/fast/blobs/${image.config.digest}`,
    layer: `/v2/library/fast/blobs/${image.layers[0]!.digest}`,
  });

  before(async () => {
    work = await mkdtemp(join(tmpdir(), "regmirror-fast-"));
    up = await startUpstream({ auth: "none" });
    image = await pushImage(up, "library/fast", "1", { layers: [randomBytes(300 * 1024)] });
    const tls = makeCert(work, "fast");
    fast = await startTestMirror(up.url, { tls });
    node = await startTestMirror(up.url, { tls, cache: { fastPath: false } });
    // Fill both caches through Node's path (a miss is never the fast path's).
    for (const m of [fast, node]) {
      for (const p of Object.values(paths())) {
        const res = await fetch(m.url + p, { headers: ACCEPT });
        assert.equal(res.status, 200, p);
        await res.arrayBuffer();
      }
    }
  });
  /** A copy of the filled cache, for a mirror of its own (stop() removes its cache dir). */
  const filled = async () => {
    const dir = join(work, `cache-${++copies}`);
    await cp(fast.cacheDir, dir, { recursive: true });
    return { dir };
  };
  after(async () => {
    await fast?.stop();
    await node?.stop();
    await up?.stop();
    await rm(work, { recursive: true, force: true });
  });

  it("answers hits with the bytes Node's server sends, and counts them", async () => {
    const p = paths();
    const cases: Array<[string, string, Record<string, string>]> = [
      ["GET", "/v2/", {}],
      ["HEAD", "/v2/", {}],
      ["GET", p.tag, ACCEPT],
      ["HEAD", p.tag, ACCEPT],
      ["GET", p.digest, {}],
      ["HEAD", p.digest, ACCEPT],
      ["GET", p.config, {}],
      ["GET", p.layer, { "X-Request-Id": "mine-1" }],
      ["HEAD", p.layer, {}],
      ["GET", `${p.tag}?ns=docker.io`, ACCEPT],
      ["GET", p.tag, { ...ACCEPT, Connection: "close" }],
    ];
    const before = await fastAnswers(fast);
    for (const [method, path, headers] of cases) {
      const heads = [method === "HEAD"];
      const [a] = await exchange(fast.url, [rawRequest(method, path, headers)], heads);
      const [b] = await exchange(node.url, [rawRequest(method, path, headers)], heads);
      assert.deepEqual(comparable(a!), comparable(b!), `${method} ${path}`);
      assert.equal(a!.status, 200, `${method} ${path}`);
      if (headers["X-Request-Id"])
        assert.ok(a!.headers.some(([n, v]) => n === "x-request-id" && v === "mine-1"));
    }
    assert.equal((await fastAnswers(fast)) - before, cases.length);
    assert.equal(await fastAnswers(node), 0);
  });

  it("answers pipelined requests in order, across the hand-over to Node's server", async () => {
    const p = paths();
    const pipeline = [
      rawRequest("GET", p.tag, ACCEPT), // fast
      rawRequest("HEAD", p.config), // fast
      rawRequest("GET", p.layer, { Range: "bytes=0-9" }), // Node's from here on: a range
      rawRequest("GET", p.digest),
      "POST /v2/library/fast/blobs/uploads/ HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
      rawRequest("GET", "/v2/_catalog"),
      rawRequest("GET", p.config),
    ];
    const heads = [false, true];
    for (const url of [fast.url, fast.tlsUrl!]) {
      const before = await fastAnswers(fast);
      const a = await exchange(url, pipeline, heads);
      assert.equal((await fastAnswers(fast)) - before, 2, `the first two on the fast path: ${url}`);
      const b = await exchange(url === fast.url ? node.url : node.tlsUrl!, pipeline, heads);
      assert.deepEqual(a.map(comparable), b.map(comparable), url);
      assert.deepEqual(
        a.map((r) => r.status),
        [200, 200, 206, 200, 405, 200, 200],
      );
      assert.deepEqual(a[2]!.body, image.layers[0]!.bytes.subarray(0, 10));
    }
  });

  it("answers a request that arrives in pieces, and one after a miss on another connection", async () => {
    const c = await rawConnect(fast.url);
    try {
      const text = rawRequest("GET", paths().tag, ACCEPT);
      for (const piece of [text.slice(0, 7), text.slice(7, 40), text.slice(40, -1), text.slice(-1)]) {
        c.send(piece);
        await new Promise((r) => setTimeout(r, 30));
      }
      const [r] = await c.read(1);
      assert.equal(r!.status, 200);
      assert.deepEqual(r!.body, image.manifest);
      // Still the fast path's connection: the next request on it is answered too.
      const before = await fastAnswers(fast);
      c.send(rawRequest("GET", paths().config));
      const [again] = await c.read(1);
      assert.deepEqual(again!.body, image.config.bytes);
      assert.equal((await fastAnswers(fast)) - before, 1);
    } finally {
      c.close();
    }
  });

  it("answers every complete request of a client that half-closes after sending them", async () => {
    const p = paths();
    const cases = [
      [rawRequest("GET", p.tag, ACCEPT), rawRequest("GET", p.config), rawRequest("GET", "/v2/")],
      [rawRequest("GET", p.tag, ACCEPT), rawRequest("GET", "/v2/_catalog"), rawRequest("GET", p.config)],
    ];
    for (const pipeline of cases) {
      for (const m of [fast, node]) {
        const c = await rawConnect(m.url);
        c.socket.end(pipeline.join("") + "GET /v2/ HTTP/1.1\r\nHo");
        const got = await c.read(3);
        assert.deepEqual(
          got.map((r) => r.status),
          [200, 200, 200],
        );
        assert.deepEqual(got[0]!.body, image.manifest);
        await c.closed;
      }
    }
  });

  it("lets a shutdown close the connections it holds at once, not at the deadline", async () => {
    const m = await startTestMirror(up.url, { cache: await filled() });
    const c = await rawConnect(m.url);
    c.send(rawRequest("GET", paths().config));
    const [r] = await c.read(1);
    assert.equal(r!.status, 200);
    assert.equal(await fastAnswers(m), 1);
    // An idle kept-alive connection, as dockerd and undici keep them.
    const started = Date.now();
    await m.stop();
    await c.closed;
    assert.ok(Date.now() - started < 5000, `stopped in ${Date.now() - started} ms`);
  });

  it("closes the connection after answering Connection: close", async () => {
    const c = await rawConnect(fast.url);
    c.send(rawRequest("GET", "/v2/", { Connection: "close" }));
    const [r] = await c.read(1);
    assert.equal(r!.status, 200);
    assert.ok(r!.headers.some(([n, v]) => n === "Connection" && v === "close"));
    await c.closed;
  });

  it("serves from the disk after a restart (manifests and small blobs not in memory yet)", async () => {
    const again = await startTestMirror(up.url, { cache: await filled() });
    try {
      const p = paths();
      const a = await exchange(again.url, [rawRequest("GET", p.tag, ACCEPT), rawRequest("GET", p.layer)]);
      assert.deepEqual(a[0]!.body, image.manifest);
      assert.deepEqual(a[1]!.body, image.layers[0]!.bytes);
      assert.equal(await fastAnswers(again), 2);
    } finally {
      await again.stop();
    }
  });

  it("cuts a header section that does not complete in time (408), as Node does", async () => {
    const m = await startTestMirror(up.url, { cache: await filled(), limits: { headersTimeout: "1s" } });
    try {
      const c = await rawConnect(m.url);
      c.send("GET /v2/ HTTP/1.1\r\nHost: x\r\n");
      // Trickling bytes does not extend the limit: it runs from the first byte.
      const trickle = setInterval(() => c.send("X: y\r\n"), 200);
      const started = Date.now();
      const [r] = await c.read(1);
      clearInterval(trickle);
      await c.closed;
      assert.equal(r!.status, 408);
      assert.ok(Date.now() - started < 5000);
    } finally {
      await m.stop();
    }
  });

  it("stops reading a client that pipelines without taking its answers, and cuts it at stallTimeout", async () => {
    const m = await startTestMirror(up.url, { cache: await filled(), limits: { stallTimeout: "1s" } });
    try {
      const c = await rawConnect(m.url);
      c.socket.pause();
      // 2,000 × 300 KiB: far more than the socket buffers hold.
      const one = rawRequest("GET", paths().layer);
      for (let i = 0; i < 20; i++) c.send(one.repeat(100));
      // Meanwhile the mirror serves others.
      await new Promise((r) => setTimeout(r, 2500));
      const [ok] = await exchange(m.url, [rawRequest("GET", "/v2/")]);
      assert.equal(ok!.status, 200);
      c.socket.resume();
      const got: RawResponse[] = [];
      await assert.rejects(async () => {
        for (;;) got.push(...(await c.read(1)));
      }, /connection closed/);
      assert.ok(got.length < 2000, `${got.length} answers`);
      for (const r of got) assert.equal(r.body.length, image.layers[0]!.bytes.length);
    } finally {
      await m.stop();
    }
  });

  it("with logins: a token is answered fast; no login and a password get Node's answers", async () => {
    await writeFile(join(work, "htpasswd"), `alice:${bcrypt.hashSync("wonderland", 4)}\n`);
    const m = await startTestMirror(up.url, {
      cache: await filled(),
      auth: { htpasswd: join(work, "htpasswd") },
    });
    try {
      const basic = `Basic ${Buffer.from("alice:wonderland").toString("base64")}`;
      const res = await fetch(`${m.url}/auth/token?service=regmirror&scope=repository:library/fast:pull`, {
        headers: { authorization: basic },
      });
      const { token } = (await res.json()) as { token: string };
      const p = paths();
      const a = await exchange(m.url, [
        rawRequest("GET", p.tag, { ...ACCEPT, Authorization: `Bearer ${token}` }),
        rawRequest("GET", p.tag, { ...ACCEPT, Authorization: "Bearer not-a-token" }),
        rawRequest("GET", p.tag, ACCEPT),
        rawRequest("GET", p.tag, { ...ACCEPT, Authorization: basic }),
      ]);
      assert.deepEqual(
        a.map((r) => r.status),
        [200, 401, 401, 200],
      );
      assert.deepEqual(a[0]!.body, image.manifest);
      assert.equal(await fastAnswers(m), 1);
    } finally {
      await m.stop();
    }
  });
});
