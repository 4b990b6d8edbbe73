// Blob uploads to hosted repositories over HTTP, as the OCI distribution spec and real clients
// (docker, skopeo, by hand) do them: monolithic, one PATCH, several PATCHes with Content-Range,
// status, cancel, mounts, limits, a client that goes away; then a manifest over uploaded blobs,
// pulled back. Hosted names never reach the fake upstream.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdtemp, readdir, rm } from "node:fs/promises";
import { request as httpRequest } from "node:http";
import { tmpdir } from "node:os";
import { connect } from "node:net";
import { join } from "node:path";
import { Readable } from "node:stream";
import { setTimeout as sleep } from "node:timers/promises";
import { after, before, describe, it } from "node:test";
import { request } from "undici";
import { startFakeUpstream, type FakeUpstream } from "../fixtures/fake-upstream.ts";
import { value } from "../fixtures/metrics.ts";
import { startTestMirror, type TestMirror } from "../fixtures/mirror.ts";
import { buildImage, sha256 } from "../fixtures/images.ts";
import { spawnMirror, type MirrorProcess } from "../fixtures/mirror-process.ts";

const MAX_BLOB = 1024 * 1024;

let fake: FakeUpstream;
let mirror: TestMirror;
let upstreamBefore = 0;

before(async () => {
  fake = await startFakeUpstream();
  mirror = await startTestMirror(fake.url, {
    hosted: { repositories: ["local/**"], anonymousPush: true, delete: true, maxBlobSize: String(MAX_BLOB) },
  });
});
after(async () => {
  await mirror?.stop();
  await fake?.stop();
});

type Body = Buffer | Readable | undefined;

async function call(method: string, path: string, body?: Body, headers: Record<string, string> = {}) {
  const url = path.startsWith("http") ? path : `${mirror.url}${path}`;
  const res = await request(url, { method: method as "GET", body, headers });
  const text = await res.body.text();
  const h = (name: string) => {
    const v = res.headers[name];
    return Array.isArray(v) ? v[0] : v;
  };
  return { status: res.statusCode, h, json: text ? (JSON.parse(text) as unknown) : undefined, text };
}

/** A body sent with Transfer-Encoding: chunked, as docker and skopeo send their one PATCH. */
const chunked = (b: Buffer) => Readable.from([b.subarray(0, b.length >> 1), b.subarray(b.length >> 1)]);

function code(json: unknown): string | undefined {
  return (json as { errors?: Array<{ code: string }> } | undefined)?.errors?.[0]?.code;
}

async function startSession(repo: string): Promise<string> {
  const r = await call("POST", `/v2/${repo}/blobs/uploads/`);
  assert.equal(r.status, 202);
  return r.h("location")!;
}

async function pullBack(repo: string, blob: Buffer): Promise<void> {
  const d = sha256(blob);
  const got = await request(`${mirror.url}/v2/${repo}/blobs/${d}`);
  const bytes = Buffer.from(await got.body.arrayBuffer());
  assert.equal(got.statusCode, 200);
  assert.equal(got.headers["docker-content-digest"], d);
  assert.ok(bytes.equals(blob));
  const head = await call("HEAD", `/v2/${repo}/blobs/${d}`);
  assert.equal(head.status, 200);
  assert.equal(head.h("content-length"), String(blob.length));
  assert.equal(head.h("docker-content-digest"), d);
}

describe("blob uploads to hosted repositories", () => {
  before(() => {
    upstreamBefore = fake.requests.length;
  });

  it("monolithic POST with ?digest= publishes the blob (201)", async () => {
    const blob = randomBytes(5000);
    const d = sha256(blob);
    const r = await call("POST", `/v2/local/mono/blobs/uploads/?digest=${d}`, blob, {
      "content-type": "application/octet-stream",
    });
    assert.equal(r.status, 201);
    assert.equal(r.h("location"), `/v2/local/mono/blobs/${d}`);
    assert.equal(r.h("docker-content-digest"), d);
    await pullBack("local/mono", blob);
  });

  it("POST, one chunked PATCH, PUT ?digest= (docker and skopeo)", async () => {
    const blob = randomBytes(200_000);
    const r = await call("POST", "/v2/local/one/blobs/uploads/");
    assert.equal(r.status, 202);
    const loc = r.h("location")!;
    assert.match(loc, /^\/v2\/local\/one\/blobs\/uploads\/[0-9a-f-]{36}$/);
    assert.equal(r.h("docker-upload-uuid"), loc.split("/").at(-1));
    assert.equal(r.h("range"), "0-0");
    const p = await call("PATCH", loc, chunked(blob), { "content-type": "application/octet-stream" });
    assert.equal(p.status, 202);
    assert.equal(p.h("range"), `0-${blob.length - 1}`);
    assert.equal(p.h("location"), loc);
    const put = await call("PUT", `${loc}?digest=${sha256(blob)}`);
    assert.equal(put.status, 201);
    assert.equal(put.h("docker-content-digest"), sha256(blob));
    await pullBack("local/one", blob);
    // The session is gone.
    assert.equal(code((await call("GET", loc)).json), "BLOB_UPLOAD_UNKNOWN");
  });

  it("a chunked upload by hand, PATCHes with Content-Range; GET status; out of order is 416 and it completes after", async () => {
    const blob = randomBytes(30_000);
    const loc = await startSession("local/chunks");
    const parts = [
      [0, 9_999],
      [10_000, 19_999],
      [20_000, 29_999],
    ] as const;
    for (const [i, [start, end]] of parts.entries()) {
      if (i === 2) {
        // Skips ahead: refused, with where the upload stands.
        const bad = await call("PATCH", loc, blob.subarray(25_000), { "content-range": `25000-29999` });
        assert.equal(bad.status, 416);
        assert.equal(code(bad.json), "RANGE_INVALID");
        assert.equal(bad.h("range"), "0-19999");
        assert.equal(bad.h("location"), loc);
      }
      const r = await call("PATCH", loc, blob.subarray(start, end + 1), {
        "content-range": `${start}-${end}`,
        "content-type": "application/octet-stream",
      });
      assert.equal(r.status, 202);
      assert.equal(r.h("range"), `0-${end}`);
      const status = await call("GET", loc);
      assert.equal(status.status, 204);
      assert.equal(status.h("range"), `0-${end}`);
      assert.equal(status.h("docker-upload-uuid"), loc.split("/").at(-1));
    }
    assert.equal((await call("PUT", `${loc}?digest=${sha256(blob)}`)).status, 201);
    await pullBack("local/chunks", blob);
  });

  it("PUT may carry the last bytes", async () => {
    const blob = randomBytes(4000);
    const loc = await startSession("local/last");
    assert.equal(
      (await call("PATCH", loc, blob.subarray(0, 1000), { "content-range": "0-999" })).status,
      202,
    );
    const put = await call("PUT", `${loc}?digest=${sha256(blob)}`, blob.subarray(1000));
    assert.equal(put.status, 201);
    await pullBack("local/last", blob);
  });

  it("DELETE of a session: 204, then unknown", async () => {
    const loc = await startSession("local/cancel");
    await call("PATCH", loc, randomBytes(100));
    const r = await call("DELETE", loc);
    assert.equal(r.status, 204);
    const again = await call("GET", loc);
    assert.equal(again.status, 404);
    assert.equal(code(again.json), "BLOB_UPLOAD_UNKNOWN");
  });

  it("a wrong digest at PUT is 400 DIGEST_INVALID and nothing is served", async () => {
    const blob = randomBytes(1000);
    const wrong = sha256(randomBytes(1000));
    const loc = await startSession("local/wrong");
    await call("PATCH", loc, blob);
    const r = await call("PUT", `${loc}?digest=${wrong}`);
    assert.equal(r.status, 400);
    assert.equal(code(r.json), "DIGEST_INVALID");
    assert.equal((await call("GET", `/v2/local/wrong/blobs/${wrong}`)).status, 404);
    assert.equal((await call("GET", `/v2/local/wrong/blobs/${sha256(blob)}`)).status, 404);
  });

  it("a monolithic POST with a wrong digest is 400, publishes nothing and leaves no session", async () => {
    const uploads = join(mirror.cacheDir, "uploads");
    const list = () => readdir(uploads).catch(() => [] as string[]);
    const before = new Set(await list());
    const wrong = sha256(randomBytes(10));
    const r = await call("POST", `/v2/local/wrong/blobs/uploads/?digest=${wrong}`, randomBytes(2000));
    assert.equal(r.status, 400);
    assert.equal(code(r.json), "DIGEST_INVALID");
    assert.deepEqual(
      (await list()).filter((n) => !before.has(n)),
      [],
    );
    assert.equal((await call("HEAD", `/v2/local/wrong/blobs/${wrong}`)).status, 404);
  });

  it("a session of one repository is unknown to another, and so is a malformed id", async () => {
    const loc = await startSession("local/owner");
    const other = loc.replace("/local/owner/", "/local/thief/");
    for (const method of ["GET", "PATCH", "PUT", "DELETE"]) {
      const r = await call(method, `${other}?digest=${sha256(Buffer.alloc(0))}`, Buffer.from("x"));
      assert.equal(r.status, 404, method);
      assert.equal(code(r.json), "BLOB_UPLOAD_UNKNOWN", method);
    }
    const bad = await call("GET", "/v2/local/owner/blobs/uploads/not-a-session");
    assert.equal(code(bad.json), "BLOB_UPLOAD_UNKNOWN");
    assert.equal((await call("GET", loc)).status, 204);
  });

  it("more than hosted.maxBlobSize is 413 naming the limit, announced or found while reading", async () => {
    const big = randomBytes(MAX_BLOB + 1);
    const mono = await call("POST", `/v2/local/big/blobs/uploads/?digest=${sha256(big)}`, big);
    assert.equal(mono.status, 413);
    assert.equal(code(mono.json), "SIZE_INVALID");
    assert.match(mono.text, new RegExp(String(MAX_BLOB)));
    const loc = await startSession("local/big");
    await call("PATCH", loc, big.subarray(0, 1000));
    const r = await call("PATCH", loc, chunked(big.subarray(1000)));
    assert.equal(r.status, 413);
    assert.equal((await call("GET", loc)).h("range"), "0-999");
    assert.equal((await call("GET", `/v2/local/big/blobs/${sha256(big)}`)).status, 404);
  });

  it("a client that goes away mid-PATCH leaves a session that goes on from what landed", async () => {
    const blob = randomBytes(50_000);
    const loc = await startSession("local/gone");
    await new Promise<void>((resolve, reject) => {
      const sock = connect(Number(new URL(mirror.url).port), "127.0.0.1", () => {
        sock.write(`PATCH ${loc} HTTP/1.1\r\nHost: ${mirror.host}\r\nContent-Length: ${blob.length}\r\n\r\n`);
        sock.write(blob.subarray(0, 20_000), () => {
          sock.destroy();
          resolve();
        });
      });
      sock.on("error", reject);
    });
    // The server learns of the hang-up in its own time: retry until the session takes the rest.
    for (;;) {
      const status = await call("GET", loc);
      assert.equal(status.status, 204);
      const size = Number(/^0-(\d+)$/.exec(status.h("range")!)![1]) + (status.h("range") === "0-0" ? 0 : 1);
      assert.ok(size <= 20_000);
      const r = await call("PATCH", loc, blob.subarray(size), {
        "content-range": `${size}-${blob.length - 1}`,
      });
      if (r.status === 202) break;
      assert.ok(r.status === 409 || r.status === 416, `status ${r.status}`);
      await sleep(20);
    }
    assert.equal((await call("PUT", `${loc}?digest=${sha256(blob)}`)).status, 201);
    await pullBack("local/gone", blob);
  });

  it("mounts from another hosted repository (201) and links the blob there", async () => {
    const blob = randomBytes(3000);
    const d = sha256(blob);
    assert.equal((await call("POST", `/v2/local/src/blobs/uploads/?digest=${d}`, blob)).status, 201);
    const mounts = () =>
      mirror.metrics().then((m) => value(m, "regmirror_hosted_pushes_total", { via: "mount" }));
    const before = await mounts();
    const r = await call("POST", `/v2/local/dst/blobs/uploads/?mount=${d}&from=local/src`);
    assert.equal(r.status, 201);
    assert.equal(await mounts(), before + 1, "counted as a mount");
    assert.equal(r.h("location"), `/v2/local/dst/blobs/${d}`);
    assert.equal(r.h("docker-content-digest"), d);
    await pullBack("local/dst", blob);
  });

  it("a mount of an unknown blob starts a session instead (202)", async () => {
    const d = sha256(randomBytes(100));
    const r = await call("POST", `/v2/local/dst/blobs/uploads/?mount=${d}&from=local/src`);
    assert.equal(r.status, 202);
    assert.match(r.h("location")!, /^\/v2\/local\/dst\/blobs\/uploads\/[0-9a-f-]{36}$/);
    assert.equal((await call("GET", r.h("location")!)).status, 204);
  });

  it("hosted names never reached the upstream", () => {
    const hosted = fake.requests.slice(upstreamBefore).filter((r) => r.path.includes("/local/"));
    assert.deepEqual(hosted, []);
    assert.equal(fake.requests.length, upstreamBefore);
  });

  it("mounts cached mirrored content without asking the upstream again", async () => {
    const blob = randomBytes(8000);
    const d = fake.addBlob(blob);
    const pulled = await request(`${mirror.url}/v2/library/base/blobs/${d}`);
    assert.ok(Buffer.from(await pulled.body.arrayBuffer()).equals(blob));
    // The fill is published once verified, just after the client has the bytes.
    const cached = join(mirror.cacheDir, "blobs", "sha256", d.slice(7, 9), d.slice(7));
    while (!existsSync(cached)) await sleep(10);
    const upstreamAfterPull = fake.requests.length;
    const r = await call("POST", `/v2/local/app/blobs/uploads/?mount=${d}&from=library/base`);
    assert.equal(r.status, 201);
    assert.equal(r.h("docker-content-digest"), d);
    await pullBack("local/app", blob);
    assert.equal(fake.requests.length, upstreamAfterPull);
  });

  it("a mount from a mirrored name whose blob is not cached is a session, and asks no upstream", async () => {
    const d = fake.addBlob(randomBytes(100));
    const before = fake.requests.length;
    const r = await call("POST", `/v2/local/app/blobs/uploads/?mount=${d}&from=library/base`);
    assert.equal(r.status, 202);
    assert.equal(fake.requests.length, before);
  });

  it("a manifest over uploaded blobs is pushed and pulled back", async () => {
    const image = buildImage({ layers: 2, format: "oci" });
    for (const b of [image.config, ...image.layers]) {
      const loc = await startSession("local/image");
      assert.equal((await call("PATCH", loc, chunked(b.bytes))).status, 202);
      assert.equal((await call("PUT", `${loc}?digest=${b.digest}`)).status, 201);
    }
    const put = await call("PUT", "/v2/local/image/manifests/v1", image.manifest, {
      "content-type": image.mediaType,
    });
    assert.equal(put.status, 201, put.text);
    assert.equal(put.h("docker-content-digest"), image.manifestDigest);
    const got = await request(`${mirror.url}/v2/local/image/manifests/v1`, {
      headers: { accept: image.mediaType },
    });
    const bytes = Buffer.from(await got.body.arrayBuffer());
    assert.equal(got.statusCode, 200);
    assert.equal(sha256(bytes), image.manifestDigest);
    for (const b of [image.config, ...image.layers]) await pullBack("local/image", b.bytes);
  });
});

describe("request bodies with hosted repositories on", () => {
  // Whole-request limit for bodies: headersTimeout + 10 s = 10.5 s; an upload's idle limit: 1 s.
  let slow: TestMirror;
  before(async () => {
    slow = await startTestMirror(fake.url, {
      hosted: { repositories: ["local/**"], anonymousPush: true },
      limits: { headersTimeout: 0.5, stallTimeout: 1 },
    });
  });
  after(() => slow?.stop());

  /** Sends the head of a request and `first` body bytes; resolves when the server closes the connection. */
  function stallAfter(path: string, method: string, first: Buffer, announced: number) {
    return new Promise<string>((resolve, reject) => {
      let answer = "";
      const sock = connect(Number(new URL(slow.url).port), "127.0.0.1", () => {
        sock.write(
          `${method} ${path} HTTP/1.1\r\nHost: ${slow.host}\r\nContent-Length: ${announced}\r\n\r\n`,
        );
        sock.write(first);
      });
      sock.on("data", (d) => (answer += String(d)));
      sock.on("error", reject);
      sock.on("close", () => resolve(answer));
    });
  }

  it("an upload that keeps sending is not cut at the whole-request limit", async () => {
    const blob = randomBytes(120 * 1024);
    const r = await request(`${slow.url}/v2/local/slow/blobs/uploads/`, { method: "POST" });
    await r.body.dump();
    const loc = r.headers.location as string;
    // 1 KiB every 100 ms: 12 s in all, past 10.5 s, never 1 s quiet.
    async function* dribble() {
      for (let at = 0; at < blob.length; at += 1024) {
        yield blob.subarray(at, at + 1024);
        await sleep(100);
      }
    }
    const p = await request(`${slow.url}${loc}`, { method: "PATCH", body: Readable.from(dribble()) });
    await p.body.dump();
    assert.equal(p.statusCode, 202);
    assert.equal(p.headers.range, `0-${blob.length - 1}`);
    const put = await request(`${slow.url}${loc}?digest=${sha256(blob)}`, { method: "PUT" });
    await put.body.dump();
    assert.equal(put.statusCode, 201);
  });

  it("an upload body that stops is cut, and the session keeps what arrived", async () => {
    const r = await request(`${slow.url}/v2/local/slow/blobs/uploads/`, { method: "POST" });
    await r.body.dump();
    const loc = r.headers.location as string;
    await stallAfter(loc, "PATCH", randomBytes(3000), 10_000);
    for (;;) {
      const s = await request(`${slow.url}${loc}`);
      await s.body.dump();
      assert.equal(s.statusCode, 204);
      if (s.headers.range === "0-2999") break;
      await sleep(20);
    }
  });

  it("any other body that stops is still cut", async () => {
    const answer = await stallAfter("/v2/local/slow/manifests/v1", "PUT", Buffer.from("{"), 1000);
    assert.doesNotMatch(answer, /^HTTP\/1.1 2/);
  });
});

describe("uploads with workers", () => {
  let m: MirrorProcess | undefined;
  let dir = "";
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "regmirror-uploads-workers-"));
    m = await spawnMirror({
      REGMIRROR_UPSTREAM: fake.url,
      REGMIRROR_CACHE_DIR: dir,
      REGMIRROR_WORKERS: "2",
      REGMIRROR_LOG_LEVEL: "info",
      REGMIRROR_HOSTED_REPOSITORIES: '["local/**"]',
      REGMIRROR_HOSTED_ANONYMOUS_PUSH: "true",
    });
    while (!m.stdout().includes('"regmirror workers started"')) await sleep(50);
  });
  after(async () => {
    m?.kill("SIGTERM");
    await m?.exited;
    await rm(dir, { recursive: true, force: true });
  });

  /** One request on a connection of its own: the primary deals connections to the workers in turn. */
  function fresh(method: string, path: string, body?: Buffer, headers: Record<string, string> = {}) {
    return new Promise<{ status: number; headers: Record<string, unknown> }>((resolve, reject) => {
      const req = httpRequest(`${m!.url}${path}`, { method, agent: false, headers }, (res) => {
        res.resume();
        res.on("end", () => resolve({ status: res.statusCode!, headers: res.headers }));
      });
      req.on("error", reject);
      req.end(body);
    });
  }

  it("a chunked upload whose requests land on different workers completes", async () => {
    const blob = randomBytes(40_000);
    const post = await fresh("POST", "/v2/local/w/blobs/uploads/");
    assert.equal(post.status, 202);
    const loc = post.headers.location as string;
    for (let at = 0; at < blob.length; at += 10_000) {
      const r = await fresh("PATCH", loc, blob.subarray(at, at + 10_000), {
        "content-range": `${at}-${at + 9_999}`,
      });
      assert.equal(r.status, 202);
      assert.equal((await fresh("GET", loc)).headers.range, `0-${at + 9_999}`);
    }
    assert.equal((await fresh("PUT", `${loc}?digest=${sha256(blob)}`)).status, 201);
    const got = await request(`${m!.url}/v2/local/w/blobs/${sha256(blob)}`);
    assert.ok(Buffer.from(await got.body.arrayBuffer()).equals(blob));
    // More than one process took the session's requests.
    const pids = new Set<number>();
    for (const line of m!.stdout().split("\n")) {
      if (!line.includes('"message":"request"') || !line.includes(loc.split("/").at(-1)!)) continue;
      pids.add((JSON.parse(line) as { pid: number }).pid);
    }
    assert.ok(pids.size >= 2, `requests of the session were served by ${pids.size} process(es)`);
  });
});

describe("uploads when the disk is short of space", () => {
  let full: TestMirror;
  before(async () => {
    // More free space asked for than any test machine has.
    full = await startTestMirror(fake.url, {
      hosted: { repositories: ["local/**"], anonymousPush: true },
      cache: { minFree: "1000000TiB" },
    });
  });
  after(() => full?.stop());

  it("refuses new uploads with 507 and a registry error", async () => {
    for (const path of [
      "/v2/local/full/blobs/uploads/",
      `/v2/local/full/blobs/uploads/?digest=${sha256(Buffer.from("x"))}`,
    ]) {
      const r = await request(`${full.url}${path}`, { method: "POST", body: "x" });
      const body = (await r.body.json()) as { errors: Array<{ code: string; detail: { minFree: number } }> };
      assert.equal(r.statusCode, 507);
      assert.equal(body.errors[0]!.code, "UNAVAILABLE");
      assert.ok(body.errors[0]!.detail.minFree > 0);
    }
  });
});
