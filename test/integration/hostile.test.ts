// Hostile and broken input: thousands of generated bad requests, oversized headers, slow
// clients, and a hostile upstream. Only registry errors come back, nothing is written outside
// the cache directory, nothing crashes, and a good pull works afterwards.
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { createServer } from "node:http";
import { randomBytes } from "node:crypto";
import { connect } from "node:net";
import { mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import bcrypt from "bcryptjs";
import { Agent, request } from "undici";
import { startFakeUpstream, type FakeUpstream } from "../fixtures/fake-upstream.ts";
import { startTestMirror, type TestMirror } from "../fixtures/mirror.ts";
import { spawnMirror } from "../fixtures/mirror-process.ts";
import { sha256 } from "../fixtures/http.ts";
import { makeCert } from "../fixtures/tls.ts";
import { freePort } from "../fixtures/ports.ts";
import { startS3, type S3Server } from "../fixtures/s3.ts";
import { startRedis } from "../fixtures/redis.ts";

const HEX = "0123456789abcdef".repeat(4);

/** Paths that must never be taken for valid: traversal, encodings, bad digests and tags. */
function badPaths(n: number): string[] {
  const names = [
    "..",
    "../etc",
    "..%2f..%2fetc",
    "%2e%2e/%2e%2e/etc",
    "a/../../b",
    "a%00b",
    "A",
    "a//b",
    "/abs",
    "a\\..\\b",
    "a%2fb",
    "%zz",
    "x".repeat(300),
    "_tags",
    "a/_tags",
    ".hidden",
    "a..b/c",
    "a-/b",
    "€uro",
    "a b",
  ];
  const refs = [
    "..",
    "../../passwd",
    "%2e%2e",
    "sha256:" + "g".repeat(64),
    "sha256:" + HEX.slice(1),
    "sha256:" + HEX + "0",
    "sha512:" + HEX + HEX,
    "md5:abc",
    "sha256:../" + HEX.slice(3),
    "-tag",
    ".tag",
    "t".repeat(129),
    "a%2fb",
    "sha256:",
    ":",
  ];
  const kinds = ["manifests", "blobs", "tags/list", "blobs/uploads", "referrers"];
  const out: string[] = [];
  for (let i = 0; i < n; i++) {
    const name = names[i % names.length]!;
    const ref = refs[(i * 7) % refs.length]!;
    const kind = kinds[(i * 3) % kinds.length]!;
    const r = randomBytes(6).toString("hex");
    switch (i % 6) {
      case 0:
        out.push(`/v2/${name}/${kind}/${ref}`);
        break;
      case 1:
        out.push(`/v2/library/${name}/manifests/${ref}`);
        break;
      case 2:
        out.push(`/v2/ok/blobs/${ref}`);
        break;
      case 3:
        out.push(`/v2/${name}/manifests/latest?ns=${encodeURIComponent(name)}`);
        break;
      case 4:
        out.push(`/v2/%${r}/${encodeURIComponent(ref)}`);
        break;
      default:
        out.push(`/v2/ok/manifests/${encodeURIComponent(name)}%2f${r}`);
    }
  }
  // Bytes a client library refuses to send (spaces, non-ASCII) go percent-encoded.
  return out.map((p) => p.replace(/[^\x21-\x7e]/gu, (c) => encodeURIComponent(c)));
}

/**
 * Every switch that changes the request path: logins (the challenge is built from the request),
 * TLS, the JavaScript send path, two workers (a process tree: coordination over IPC, fills
 * followed through files), and the S3 storage driver (a real Ceph RADOS Gateway). The
 * generated bad requests go through each.
 */
interface Mode {
  name: string;
  logins?: boolean;
  tls?: boolean;
  sendfile?: boolean;
  workers?: number;
  /** cache.fastPath; on by default. Off, every request goes through Node's HTTP server. */
  fastPath?: boolean;
  s3?: boolean;
  /** A replica of a cluster: Redis coordination (implies s3). */
  cluster?: boolean;
}
const MODES: Mode[] = [
  { name: "open, plain HTTP, sendfile" },
  { name: "logins on", logins: true },
  { name: "logins on, over TLS", logins: true, tls: true },
  { name: "sendfile off", sendfile: false },
  { name: "fast path off, logins on, over TLS", fastPath: false, logins: true, tls: true },
  { name: "two workers, logins on", workers: 2, logins: true },
  { name: "two workers, over TLS, sendfile off", workers: 2, tls: true, sendfile: false },
  { name: "S3 storage, logins on", s3: true, logins: true },
  { name: "S3 storage, two workers", s3: true, workers: 2 },
  {
    name: "a cluster replica (Redis, S3), logins on, over TLS",
    s3: true,
    cluster: true,
    logins: true,
    tls: true,
  },
];

/**
 * Hosted repositories are on in every mode, so the bad requests' PUTs, POSTs, PATCHes and
 * DELETEs of "ok" reach the push side too. Pushes are anonymous without logins.
 */
const HOSTED = { repositories: ["ok", "local/**"], delete: true, maxBlobSize: "4MiB" };

/** One Redis for the cluster modes, started by the first. */
let redis: ReturnType<typeof startRedis> | undefined;
after(async () => (await redis)?.stop());

/** One S3 server for the modes that need it, started by the first. */
let s3: Promise<S3Server> | undefined;
after(async () => (await s3)?.stop());

/** The storage settings of an s3 mode (a fresh bucket), as config and as environment. */
async function s3Storage(): Promise<{ settings: Record<string, unknown>; env: Record<string, string> }> {
  const server = await (s3 ??= startS3());
  const bucket = await server.newBucket();
  const s3Settings = {
    endpoint: server.endpoint,
    bucket,
    region: server.region,
    forcePathStyle: true,
    accessKeyId: server.accessKeyId,
    secretAccessKey: server.secretAccessKey,
  };
  return {
    settings: { driver: "s3", s3: s3Settings },
    env: {
      REGMIRROR_STORAGE_DRIVER: "s3",
      REGMIRROR_STORAGE_S3_ENDPOINT: server.endpoint,
      REGMIRROR_STORAGE_S3_BUCKET: bucket,
      REGMIRROR_STORAGE_S3_REGION: server.region,
      REGMIRROR_STORAGE_S3_FORCE_PATH_STYLE: "true",
      REGMIRROR_STORAGE_S3_ACCESS_KEY_ID: server.accessKeyId,
      REGMIRROR_STORAGE_S3_SECRET_ACCESS_KEY: server.secretAccessKey,
    },
  };
}

/** regmirror as a process tree of `workers` workers, with the same settings as startTestMirror's. */
async function spawnTestMirror(
  fakeUrl: string,
  parent: string,
  mode: Mode,
  htpasswd: string,
  storageEnv: Record<string, string>,
): Promise<Pick<TestMirror, "url" | "tlsUrl" | "cacheDir" | "stop">> {
  const cacheDir = join(parent, "cache");
  const tlsPort = mode.tls ? await freePort() : undefined;
  const cert = mode.tls ? makeCert(parent, "hostile") : undefined;
  const m = await spawnMirror({
    REGMIRROR_UPSTREAM: fakeUrl,
    REGMIRROR_CACHE_DIR: cacheDir,
    REGMIRROR_WORKERS: String(mode.workers ?? 1),
    REGMIRROR_LIMITS_HEADERS_TIMEOUT: "1s",
    REGMIRROR_CACHE_SENDFILE: String(mode.sendfile ?? true),
    REGMIRROR_CACHE_FAST_PATH: String(mode.fastPath ?? true),
    ...(mode.logins ? { REGMIRROR_AUTH_HTPASSWD: htpasswd } : {}),
    REGMIRROR_HOSTED_REPOSITORIES: JSON.stringify(HOSTED.repositories),
    REGMIRROR_HOSTED_DELETE: "true",
    REGMIRROR_HOSTED_MAX_BLOB_SIZE: HOSTED.maxBlobSize,
    REGMIRROR_HOSTED_ANONYMOUS_PUSH: String(!mode.logins),
    ...storageEnv,
    ...(cert
      ? {
          REGMIRROR_TLS_CERT: cert.cert,
          REGMIRROR_TLS_KEY: cert.key,
          REGMIRROR_TLS_LISTEN: `127.0.0.1:${tlsPort}`,
        }
      : {}),
  });
  return {
    url: m.url,
    tlsUrl: tlsPort ? `https://127.0.0.1:${tlsPort}` : undefined,
    cacheDir,
    stop: async () => {
      m.kill("SIGTERM");
      assert.equal(await m.exited, 0, `a clean stop: ${m.stderr()}`);
    },
  };
}

for (const mode of MODES) {
  describe(`hostile input: ${mode.name}`, { timeout: mode.s3 ? 120_000 : 60_000 }, () => {
    let fake: FakeUpstream;
    let mirror: Pick<TestMirror, "url" | "tlsUrl" | "cacheDir" | "stop">;
    let parent: string;
    let base: string;
    let dispatcher: Agent;
    before(async () => {
      fake = await startFakeUpstream();
      // A directory of our own around the cache, so "nothing written beside it" is not disturbed
      // by other test files creating temp dirs at the same time.
      parent = await mkdtemp(join(tmpdir(), "regmirror-hostile-"));
      const htpasswd = join(parent, "htpasswd");
      await writeFile(htpasswd, `user:${bcrypt.hashSync("pw", 4)}\n`);
      const storage = mode.s3 ? await s3Storage() : { settings: {}, env: {} };
      const cluster = mode.cluster ? { redis: (await (redis ??= startRedis())).url } : {};
      mirror = mode.workers
        ? await spawnTestMirror(fake.url, parent, mode, htpasswd, storage.env)
        : await startTestMirror(fake.url, {
            storage: storage.settings,
            cluster,
            cache: {
              dir: join(parent, "cache"),
              sendfile: mode.sendfile ?? true,
              fastPath: mode.fastPath ?? true,
            },
            limits: { headersTimeout: "1s" },
            hosted: { ...HOSTED, anonymousPush: !mode.logins },
            ...(mode.logins ? { auth: { htpasswd } } : {}),
            ...(mode.tls ? { tls: makeCert(parent, "hostile") } : {}),
          });
      base = mode.tls ? mirror.tlsUrl! : mirror.url;
      dispatcher = new Agent({ connections: 16, connect: { rejectUnauthorized: false } });
    });
    after(async () => {
      await dispatcher.close();
      await mirror.stop();
      await fake.stop();
      await rm(parent, { recursive: true, force: true });
    });

    it("answers 3,000 generated bad requests with registry errors only", async () => {
      await badRequests(base, dispatcher, parent, mirror.cacheDir, mode.logins ? LOGIN : {});
    });

    it("answers malformed and abusive bytes on raw connections with HTTP errors or a close", async () => {
      await rawHostile(base);
    });

    it("refuses hostile pushes with registry errors, and a good push still works", async () => {
      await hostilePushes(base, dispatcher, mode.logins ? LOGIN : {});
    });

    if (mode.cluster)
      it("refuses every stranger at the replicas' fill route, and keeps serving", async () => {
        const fill = `/_regmirror/fills/${"a".repeat(64)}`;
        const tries: Array<[string, Record<string, string>]> = [
          [fill, {}],
          [fill, { authorization: "Bearer x" }],
          [fill, { authorization: `Bearer ${"0".repeat(48)}`, range: "bytes=5-1" }],
          [`/_regmirror/fills/${"a".repeat(63)}`, { authorization: "Bearer " }],
          ["/_regmirror/fills/../../etc/passwd", {}],
          [`${fill}?x=%00`, { range: "bytes=-1" }],
        ];
        for (const [path, headers] of tries) {
          const res = await request(`${base}${path}`, { headers, dispatcher });
          await res.body.dump();
          assert.equal(res.statusCode, 404, path);
        }
      });

    it("still serves a good pull afterwards", async () => {
      const bytes = randomBytes(2_000_000);
      const d = fake.addBlob(bytes);
      const headers: Record<string, string> = {};
      if (mode.logins) headers.authorization = `Basic ${Buffer.from("user:pw").toString("base64")}`;
      for (let i = 0; i < 2; i++) {
        const res = await request(`${base}/v2/library/good/blobs/${d}`, { headers, dispatcher });
        const got = sha256(Buffer.from(await res.body.arrayBuffer()));
        assert.equal(res.statusCode, 200);
        assert.equal(got, d, i === 0 ? "cold" : "warm");
      }
    });
  });
}

const LOGIN = { authorization: `Basic ${Buffer.from("user:pw").toString("base64")}` };

async function badRequests(
  base: string,
  dispatcher: Agent,
  parent: string,
  cacheDir: string,
  login: Record<string, string>,
): Promise<void> {
  const before = new Set(await readdir(parent));
  const methods = ["GET", "HEAD", "PUT", "DELETE", "POST", "PATCH", "OPTIONS"] as const;
  const paths = badPaths(3000);
  let i = 0;
  const seen = new Map<number, number>();
  const worker = async () => {
    while (i < paths.length) {
      const n = i++;
      const method = methods[n % methods.length]!;
      // The raw path, not a URL: a URL would resolve the dot segments before they reach us.
      // Half of them logged in, so that they get past the gate to the push side.
      const headers = n % 2 === 0 ? login : {};
      // Every eighth on a connection of its own: the fast path reads each connection's first
      // request, and hands it to Node's server from the first one it does not answer.
      const res = await dispatcher.request({
        origin: base,
        path: paths[n]!,
        method,
        headers,
        reset: n % 8 === 1,
      });
      const text = await res.body.text();
      seen.set(res.statusCode, (seen.get(res.statusCode) ?? 0) + 1);
      assert.ok(res.statusCode >= 400 && res.statusCode < 500, `${method} ${paths[n]} → ${res.statusCode}`);
      if (method !== "HEAD") {
        const body = JSON.parse(text) as { errors: Array<{ code: string; message: string }> };
        assert.ok(body.errors[0]!.code, `${method} ${paths[n]}: a registry error body`);
      }
    }
  };
  await Promise.all(Array.from({ length: 16 }, worker));
  assert.ok(![...seen.keys()].some((s) => s >= 500), `no server errors: ${JSON.stringify([...seen])}`);
  assert.deepEqual(new Set(await readdir(parent)), before, "nothing written beside the cache directory");
  // Only the cache's own layout (storage/keys.ts, paths.ts), made as content arrives.
  const ours = new Set(["blobs", "generation", "hosted", "manifests", "repos", "state", "tmp", "uploads"]);
  const top = await readdir(cacheDir);
  assert.deepEqual(
    top.filter((n) => !ours.has(n)),
    [],
    "nothing but the layout in the cache directory",
  );
}

/**
 * Bytes no client library would send, on connections of their own: each gets an HTTP answer that
 * is not a 5xx, or the connection closed, within a few seconds; none takes the mirror down.
 */
async function rawHostile(base: string): Promise<void> {
  const u = new URL(base);
  const ok = "GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n";
  const inputs: Array<string | Buffer> = [
    randomBytes(4096),
    "GET /v2/ HTTP/1.1\r\nHost: x\r\nX: \u0000\r\n\r\n",
    "GET /v2/ HTTP/1.1\nHost: x\n\n",
    "GET /v2/" + "a".repeat(20_000) + " HTTP/1.1\r\nHost: x\r\n\r\n",
    "GET /v2/ HTTP/1.1\r\nHost: x\r\n" + "X-A: b\r\n".repeat(3000) + "\r\n",
    "GET /v2/ HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "GET /v2/ HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
    "GET /v2/%zz/manifests/%00 HTTP/1.1\r\nHost: x\r\n\r\n",
    "GET /v2/a/manifests/sha256:" + "0".repeat(64) + " HTTP/1.1\r\nHost: x\r\nRange: bytes=9-1\r\n\r\n",
    "HEAD /v2/../../etc/passwd HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    'GET /v2/ HTTP/1.1\r\nHost: x\r\nX-Request-Id: a"<script>\r\nConnection: close\r\n\r\n',
    "GET /v2/ HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + "A".repeat(8000) + "\r\n\r\n",
    "GET /v2/ HTTP/1.1\r\nHost: x\r\nAuthorization: Basic %%%\r\n\r\n",
    "GET /v2/ HTTP/9.9\r\nHost: x\r\n\r\n",
    "\r\n\r\n\r\n" + ok,
    "GET /v2/ HTTP/1.1\r\nHost: x\r\nUpgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\n\r\n",
    // Ten thousand pipelined requests in one write, then a half-close.
    ok.repeat(10_000),
    // Half a request, then a half-close.
    "GET /v2/library/x/manifests/1 HTTP/1.1\r\nHo",
  ];
  await Promise.all(inputs.map((bytes) => rawExchange(u, bytes)));
  // Still answering this client: nothing it sent is counted as in flight any more (a TLS
  // connection that half-closed with thousands of requests queued used to be, for good: 429).
  const res = await rawExchange(u, ok);
  assert.match(res, /^HTTP\/1\.1 (200|401) /);
}

/** Writes `bytes`, half-closes, and returns what came back before the server closed (≤ 10 s). */
async function rawExchange(u: URL, bytes: string | Buffer): Promise<string> {
  const { connect: tlsConnect } = await import("node:tls");
  const port = Number(u.port);
  const socket =
    u.protocol === "https:"
      ? tlsConnect({ host: u.hostname, port, rejectUnauthorized: false })
      : connect(port, u.hostname);
  const chunks: Buffer[] = [];
  socket.on("data", (d: Buffer) => chunks.push(d));
  socket.on("error", () => undefined);
  await new Promise<void>((resolve) =>
    socket.once(u.protocol === "https:" ? "secureConnect" : "connect", resolve),
  );
  socket.end(bytes);
  const closed = await new Promise<boolean>((resolve) => {
    socket.once("close", () => resolve(true));
    setTimeout(() => resolve(false), 10_000).unref();
  });
  socket.destroy();
  const text = Buffer.concat(chunks).toString("latin1");
  const what = typeof bytes === "string" ? JSON.stringify(bytes.slice(0, 60)) : "random bytes";
  assert.ok(closed, `the mirror closed the connection: ${what}`);
  for (const m of text.matchAll(/HTTP\/1\.1 (\d{3}) /g)) assert.ok(Number(m[1]) < 500, `${m[1]} for ${what}`);
  assert.ok(text === "" || text.startsWith("HTTP/1.1 "), `an HTTP answer or nothing: ${what}`);
  return text;
}

/** One bad push of each kind: every answer a 4xx registry error, nothing stored; then a good push. */
async function hostilePushes(base: string, dispatcher: Agent, login: Record<string, string>): Promise<void> {
  const call = async (
    method: string,
    path: string,
    body?: Buffer | string,
    headers: Record<string, string> = {},
  ) => {
    const res = await dispatcher.request({
      origin: base,
      path,
      method,
      body,
      headers: { ...login, ...headers },
    });
    const text = await res.body.text();
    return { status: res.statusCode, headers: res.headers, text };
  };
  const refused = async (want: number, code: string, ...args: Parameters<typeof call>) => {
    const r = await call(...args);
    assert.equal(r.status, want, `${args[0]} ${args[1]}: ${r.text}`);
    assert.equal((JSON.parse(r.text) as { errors: Array<{ code: string }> }).errors[0]!.code, code, args[1]);
  };
  const OCI = "application/vnd.oci.image.manifest.v1+json";
  const big = Buffer.alloc(5 * 1024 * 1024, 0x20);
  big.write('{"schemaVersion":2}');
  await refused(413, "SIZE_INVALID", "PUT", "/v2/local/h/manifests/big", big, { "content-type": OCI });
  await refused(400, "MANIFEST_INVALID", "PUT", "/v2/local/h/manifests/junk", "<html>", {
    "content-type": OCI,
  });
  await refused(400, "MANIFEST_INVALID", "PUT", "/v2/local/h/manifests/t", "{}", {
    "content-type": "text/html",
  });
  const missing = JSON.stringify({
    schemaVersion: 2,
    mediaType: OCI,
    config: { mediaType: "application/vnd.oci.image.config.v1+json", digest: `sha256:${HEX}`, size: 2 },
    layers: [],
  });
  await refused(400, "MANIFEST_BLOB_UNKNOWN", "PUT", "/v2/local/h/manifests/t", missing, {
    "content-type": OCI,
  });
  const bytes = randomBytes(1000);
  const d = sha256(bytes);
  await refused(400, "DIGEST_INVALID", "POST", `/v2/local/h/blobs/uploads/?digest=sha256:${HEX}`, bytes);
  await refused(400, "DIGEST_INVALID", "POST", "/v2/local/h/blobs/uploads/?digest=md5:x", bytes);
  await refused(404, "BLOB_UPLOAD_UNKNOWN", "PATCH", "/v2/local/h/blobs/uploads/nosuchupload", bytes);
  await refused(404, "BLOB_UPLOAD_UNKNOWN", "PUT", `/v2/local/h/blobs/uploads/${"f".repeat(36)}?digest=${d}`);
  const tooBig = await call("POST", `/v2/local/h/blobs/uploads/?digest=${d}`, Buffer.alloc(5 * 1024 * 1024));
  assert.equal(tooBig.status, 413, tooBig.text);
  // An upload session, then bytes out of order and a wrong digest at the end.
  const started = await call("POST", "/v2/local/h/blobs/uploads/");
  assert.equal(started.status, 202, started.text);
  const at = String(started.headers.location);
  const path = at.startsWith("http") ? new URL(at).pathname + new URL(at).search : at;
  const sep = path.includes("?") ? "&" : "?";
  const gap = await call("PATCH", path, bytes, {
    "content-range": "10-1009",
    "content-type": "application/octet-stream",
  });
  assert.equal(gap.status, 416, gap.text);
  const junkRange = await call("PATCH", path, bytes, { "content-range": "x-y" });
  assert.ok(junkRange.status >= 400 && junkRange.status < 500, junkRange.text);
  await refused(
    404,
    "BLOB_UPLOAD_UNKNOWN",
    "PUT",
    `${path.replace("/local/h/", "/local/other/")}${sep}digest=${d}`,
  );
  const part = await call("PATCH", path, bytes, {
    "content-range": "0-999",
    "content-type": "application/octet-stream",
  });
  assert.equal(part.status, 202, part.text);
  await refused(400, "DIGEST_INVALID", "PUT", `${path}${sep}digest=sha256:${HEX}`);
  await refused(404, "BLOB_UNKNOWN", "GET", `/v2/local/h/blobs/sha256:${HEX}`);
  await refused(400, "DIGEST_INVALID", "DELETE", "/v2/local/h/manifests/sha256:xyz");
  await refused(400, "DIGEST_INVALID", "DELETE", "/v2/local/h/blobs/notadigest");
  // A good push and pull.
  const good = await call("POST", `/v2/local/h/blobs/uploads/?digest=${d}`, bytes, {
    "content-type": "application/octet-stream",
  });
  assert.equal(good.status, 201, good.text);
  const manifest = JSON.stringify({
    schemaVersion: 2,
    mediaType: OCI,
    config: { mediaType: "application/vnd.oci.image.config.v1+json", digest: d, size: bytes.length },
    layers: [],
  });
  const put = await call("PUT", "/v2/local/h/manifests/good", manifest, { "content-type": OCI });
  assert.equal(put.status, 201, put.text);
  const back = await call("GET", "/v2/local/h/manifests/good");
  assert.equal(back.status, 200);
  assert.equal(back.text, manifest);
  const blob = await dispatcher.request({
    origin: base,
    path: `/v2/local/h/blobs/${d}`,
    method: "GET",
    headers: login,
  });
  assert.equal(sha256(Buffer.from(await blob.body.arrayBuffer())), d);
}

describe("hostile input", () => {
  let fake: FakeUpstream;
  let mirror: TestMirror;
  let parent: string;
  before(async () => {
    fake = await startFakeUpstream();
    // A directory of our own around the cache, so "nothing written beside it" is not disturbed
    // by other test files creating temp dirs at the same time.
    parent = await mkdtemp(join(tmpdir(), "regmirror-hostile-"));
    mirror = await startTestMirror(fake.url, {
      cache: { dir: join(parent, "cache") },
      limits: { headersTimeout: "1s" },
    });
  });
  after(async () => {
    await mirror.stop();
    await fake.stop();
    await rm(parent, { recursive: true, force: true });
  });

  it("refuses oversized headers with 431, and cuts off a slow-header client", async () => {
    const big = await fetch(`${mirror.url}/v2/`, { headers: { "x-junk": "a".repeat(20_000) } });
    assert.equal(big.status, 431);
    const port = Number(new URL(mirror.url).port);
    const closed = await new Promise<boolean>((resolve) => {
      const s = connect(port, "127.0.0.1", () => s.write("GET /v2/ HTTP/1.1\r\nHost: x\r\n"));
      const drip = setInterval(() => s.write("X-Slow: 1\r\n"), 200);
      s.on("close", () => {
        clearInterval(drip);
        resolve(true);
      });
      s.on("error", () => undefined);
      setTimeout(() => {
        clearInterval(drip);
        s.destroy();
        resolve(false);
      }, 8000).unref();
    });
    assert.ok(closed, "the server closed a connection that never finished its headers");
  });

  it("refuses a hostile upstream's manifests: oversized, not a manifest, wrong digest", async () => {
    const big = Buffer.alloc(5 * 1024 * 1024, 0x20);
    big.write('{"schemaVersion":2,"layers":[]}');
    fake.addManifest("library/h", "big", big, "application/vnd.oci.image.manifest.v1+json");
    fake.addManifest("library/h", "junk", Buffer.from("<html>not a manifest</html>"), "text/html");
    const ok = Buffer.from(
      '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","layers":[]}',
    );
    const okDigest = fake.addManifest("library/h", "wrong", ok, "application/vnd.oci.image.manifest.v1+json");
    fake.behave(okDigest, { wrongDigest: true });
    for (const tag of ["big", "junk", "wrong"]) {
      const res = await fetch(`${mirror.url}/v2/library/h/manifests/${tag}`);
      assert.equal(res.status, 502, tag);
      assert.equal(
        ((await res.json()) as { errors: Array<{ code: string }> }).errors[0]!.code,
        "UPSTREAM_ERROR",
      );
    }
    assert.equal(existsSync(join(mirror.cacheDir, "manifests")), false, "nothing cached");
    fake.clearBehaviours();
  });

  it("refuses a redirect to a non-http URL", async () => {
    const port = await freePort();
    const evil = createServer((req, res) => {
      if (req.url?.includes("/blobs/")) res.writeHead(307, { location: "file:///etc/passwd" }).end();
      else res.writeHead(200, { "docker-distribution-api-version": "registry/2.0" }).end("{}");
    });
    await new Promise<void>((r) => evil.listen(port, "127.0.0.1", r));
    const m = await startTestMirror(`http://127.0.0.1:${port}`);
    try {
      const res = await fetch(`${m.url}/v2/library/x/blobs/sha256:${HEX}`);
      assert.equal(res.status, 502);
      assert.equal(
        ((await res.json()) as { errors: Array<{ code: string }> }).errors[0]!.code,
        "UPSTREAM_ERROR",
      );
    } finally {
      await m.stop();
      await new Promise((r) => evil.close(r));
    }
  });
});
