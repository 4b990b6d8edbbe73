// What a real registry cannot be made to do, against the fake upstream: wrong bytes, redirects
// to storage, expired tokens, Basic auth, a dead upstream.
import assert from "node:assert/strict";
import { randomBytes, createHash } from "node:crypto";
import { existsSync } from "node:fs";
import { readdir } from "node:fs/promises";
import { join } from "node:path";
import { describe, it } from "node:test";
import { request } from "undici";
import { createServer } from "node:http";
import { startFakeUpstream, type FakeUpstream } from "../fixtures/fake-upstream.ts";
import { fakeAndMirror, startTestMirror, type TestMirror } from "../fixtures/mirror.ts";
import { freePort } from "../fixtures/ports.ts";

const sha256 = (b: Buffer) => "sha256:" + createHash("sha256").update(b).digest("hex");
const blobPath = (cacheDir: string, digest: string) =>
  join(cacheDir, "blobs", "sha256", digest.slice(7, 9), digest.slice(7));

/** GETs a URL and reports whether the body arrived whole, without throwing on an aborted one. */
async function fetchBody(url: string): Promise<{ status: number; body: Buffer; complete: boolean }> {
  const res = await request(url);
  const chunks: Buffer[] = [];
  try {
    for await (const c of res.body) chunks.push(c as Buffer);
    return { status: res.statusCode, body: Buffer.concat(chunks), complete: true };
  } catch {
    return { status: res.statusCode, body: Buffer.concat(chunks), complete: false };
  }
}

describe("an upstream that sends the wrong bytes", () => {
  let fake: FakeUpstream;
  let mirror: TestMirror;
  fakeAndMirror((f, m) => ((fake = f), (mirror = m)));

  it("never gets a complete wrong blob to the client, and leaves nothing in the cache", async () => {
    const bytes = randomBytes(3 * 1024 * 1024 + 17);
    const digest = fake.addBlob(bytes);
    fake.behave(digest, { wrongDigest: true });
    const bad = await fetchBody(`${mirror.url}/v2/library/x/blobs/${digest}`);
    assert.ok(!bad.complete || bad.status !== 200, "the transfer must not look complete");
    assert.ok(bad.body.length < bytes.length, "the client never holds the whole (wrong) body");
    assert.ok(!existsSync(blobPath(mirror.cacheDir, digest)), "nothing cached under that digest");
    assert.deepEqual(await readdir(join(mirror.cacheDir, "tmp")), [], "no temp file left behind");

    // The upstream behaves again: the next request fills afresh and gets the right bytes.
    fake.clearBehaviours();
    const good = await fetchBody(`${mirror.url}/v2/library/x/blobs/${digest}`);
    assert.equal(good.status, 200);
    assert.ok(good.complete);
    assert.equal(sha256(good.body), digest);
    assert.ok(existsSync(blobPath(mirror.cacheDir, digest)));
  });

  it("refuses a manifest that does not match its digest, and caches nothing", async () => {
    const manifest = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: "application/vnd.oci.image.manifest.v1+json",
        layers: [],
      }),
    );
    const digest = fake.addManifest("library/m", "1", manifest, "application/vnd.oci.image.manifest.v1+json");
    fake.behave(digest, { wrongDigest: true, times: 2 });
    for (const ref of ["1", digest]) {
      const res = await fetch(`${mirror.url}/v2/library/m/manifests/${ref}`);
      assert.equal(res.status, 502, ref);
      const body = (await res.json()) as { errors: Array<{ code: string }> };
      assert.equal(body.errors[0]!.code, "UPSTREAM_ERROR");
    }
    const res = await fetch(`${mirror.url}/v2/library/m/manifests/${digest}`);
    assert.equal(res.status, 200);
    assert.deepEqual(Buffer.from(await res.arrayBuffer()), manifest);
  });
});

describe("upstream authentication and redirects", () => {
  it("follows a blob redirect to another host without sending it the Authorization header", async () => {
    const fake = await startFakeUpstream({ auth: "bearer", redirectBlobs: "port" });
    const mirror = await startTestMirror(fake.url);
    try {
      const bytes = randomBytes(100_000);
      const digest = fake.addBlob(bytes);
      const got = await fetchBody(`${mirror.url}/v2/library/r/blobs/${digest}`);
      assert.equal(got.status, 200);
      assert.equal(sha256(got.body), digest);
      const atCdn = fake.requests.filter((r) => r.server === "cdn");
      assert.equal(atCdn.length, 1);
      assert.equal(atCdn[0]!.headers.authorization, undefined, "no credentials to the storage host");
      const atRegistry = fake.requests.filter((r) => r.server === "registry" && r.path.includes("/blobs/"));
      assert.ok(
        atRegistry.some((r) => r.headers.authorization?.startsWith("Bearer ")),
        "the registry got a token",
      );
    } finally {
      await mirror.stop();
      await fake.stop();
    }
  });

  it("drops a token the upstream no longer accepts and negotiates once more", async () => {
    const fake = await startFakeUpstream({ auth: "bearer" });
    const mirror = await startTestMirror(fake.url);
    try {
      const a = fake.addBlob(randomBytes(1000));
      const b = fake.addBlob(randomBytes(1000));
      assert.equal((await fetchBody(`${mirror.url}/v2/library/t/blobs/${a}`)).status, 200);
      const tokensBefore = fake.count("GET", "/token");
      fake.revokeTokens();
      const res = await fetchBody(`${mirror.url}/v2/library/t/blobs/${b}`);
      assert.equal(res.status, 200);
      assert.equal(sha256(res.body), b);
      assert.equal(fake.count("GET", "/token"), tokensBefore + 1, "exactly one new token");
    } finally {
      await mirror.stop();
      await fake.stop();
    }
  });

  it("reuses a cached token: one token fetch for many requests to one repository", async () => {
    const fake = await startFakeUpstream({ auth: "bearer" });
    const mirror = await startTestMirror(fake.url);
    try {
      const digests = Array.from({ length: 5 }, () => fake.addBlob(randomBytes(2000)));
      for (const d of digests)
        assert.equal((await fetchBody(`${mirror.url}/v2/library/c/blobs/${d}`)).status, 200);
      assert.equal(fake.count("GET", "/token"), 1);
    } finally {
      await mirror.stop();
      await fake.stop();
    }
  });

  it("talks Basic auth to an upstream that challenges with Basic", async () => {
    const fake = await startFakeUpstream({ auth: "basic", users: { alice: "s3cret" } });
    const mirror = await startTestMirror(fake.url, { upstream: { username: "alice", password: "s3cret" } });
    try {
      const d = fake.addBlob(randomBytes(5000));
      const res = await fetchBody(`${mirror.url}/v2/library/b/blobs/${d}`);
      assert.equal(res.status, 200);
      assert.equal(sha256(res.body), d);
    } finally {
      await mirror.stop();
      await fake.stop();
    }
  });
});

describe("an upstream that is not there", () => {
  it("answers 503 with a registry error body", async () => {
    const port = await freePort();
    const mirror = await startTestMirror(`http://127.0.0.1:${port}`);
    try {
      for (const path of ["/v2/library/x/manifests/1", `/v2/library/x/blobs/sha256:${"1".repeat(64)}`]) {
        const res = await fetch(mirror.url + path);
        assert.equal(res.status, 503, path);
        const body = (await res.json()) as { errors: Array<{ code: string }> };
        assert.equal(body.errors[0]!.code, "UNAVAILABLE");
      }
    } finally {
      await mirror.stop();
    }
  });
});

describe("a redirect target with its own token service (registry.k8s.io → Artifact Registry)", () => {
  it("gets an anonymous token from the target's realm, never sending it our credentials", async () => {
    const bytes = randomBytes(10_000);
    const digest = sha256(bytes);
    const seen: Array<{ path: string; authorization?: string }> = [];
    // The regional registry: challenges, issues tokens at its own /v2/token, serves with one.
    const region = createServer((req, res) => {
      seen.push({ path: req.url ?? "", authorization: req.headers.authorization });
      if (req.url?.startsWith("/v2/token"))
        return void res.end(JSON.stringify({ token: "region-token", expires_in: 300 }));
      if (req.headers.authorization !== "Bearer region-token") {
        res.writeHead(401, {
          "www-authenticate": `Bearer realm="http://127.0.0.1:${regionPort}/v2/token",service="region",scope="repository:prod/x:pull"`,
        });
        return void res.end();
      }
      res.writeHead(200, { "content-length": bytes.length, "docker-content-digest": digest });
      res.end(bytes);
    });
    const regionPort = await freePort();
    await new Promise<void>((r) => region.listen(regionPort, "127.0.0.1", r));
    // The front door: redirects everything to the region.
    const front = createServer((req, res) => {
      res.writeHead(307, { location: `http://127.0.0.1:${regionPort}/v2/prod/x/blobs/${digest}` }).end();
    });
    const frontPort = await freePort();
    await new Promise<void>((r) => front.listen(frontPort, "127.0.0.1", r));
    const mirror = await startTestMirror(`http://127.0.0.1:${frontPort}`, {
      upstream: { name: "k8s.test", username: "me", password: "secret" },
    });
    try {
      const got = await fetchBody(`${mirror.url}/v2/pause/blobs/${digest}`);
      assert.equal(got.status, 200);
      assert.equal(sha256(got.body), digest);
      assert.ok(
        seen.some((r) => r.path.startsWith("/v2/token") && r.authorization === undefined),
        "anonymous token request",
      );
      assert.ok(
        !seen.some((r) => r.authorization?.startsWith("Basic")),
        "our credentials never reach the redirect target",
      );
    } finally {
      await mirror.stop();
      await new Promise((r) => region.close(r));
      await new Promise((r) => front.close(r));
    }
  });
});
