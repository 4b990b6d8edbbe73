// Proves the test fixtures themselves: a real distribution registry behind a token server, images
// pushed over the API and pulled back by a real client (skopeo), access-log counting, and each
// fault the fake upstream can inject.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtemp, readFile, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { promisify } from "node:util";
import { request } from "undici";
import { startFakeUpstream, type FakeUpstream } from "../fixtures/fake-upstream.ts";
import {
  buildImage,
  buildIndex,
  pushImage,
  pushIndex,
  pushLargeBlobImage,
  registryRequest,
  sha256,
  type BuiltImage,
  type BuiltIndex,
} from "../fixtures/images.ts";
import { startUpstream, type Upstream } from "../fixtures/upstream.ts";

const execFileP = promisify(execFile);

/** skopeo against a plain-HTTP loopback registry; --insecure-policy so no host policy.json matters. */
async function skopeo(...args: string[]): Promise<string> {
  const { stdout } = await execFileP("skopeo", ["--insecure-policy", ...args], { timeout: 30_000 });
  return stdout;
}

describe("real upstream with token auth", () => {
  let up: Upstream;
  let work: string;
  let image: BuiltImage;
  let index: BuiltIndex;
  const creds = (): string => `${up.credentials.username}:${up.credentials.password}`;

  before(async () => {
    work = await mkdtemp(join(tmpdir(), "regmirror-fixtures-test-"));
    up = await startUpstream({ auth: "token" });
    image = await pushImage(up, "library/x", "1", { layers: 2 });
    index = await pushIndex(up, "library/multi", "1", {
      platforms: ["linux/amd64", "linux/arm64"],
      format: "oci",
    });
  });
  after(async () => {
    await up?.stop();
    await rm(work, { recursive: true, force: true });
  });

  it("serves a pushed image to skopeo copy, byte for byte", async () => {
    const out = join(work, "x");
    await skopeo(
      "copy",
      "--src-tls-verify=false",
      "--src-creds",
      creds(),
      `docker://${up.host}/library/x:1`,
      `dir:${out}`,
    );
    assert.deepEqual(await readFile(join(out, "manifest.json")), image.manifest);
    for (const blob of [...image.layers, image.config]) {
      assert.deepEqual(await readFile(join(out, blob.digest.slice("sha256:".length))), blob.bytes);
    }
  });

  it("serves an OCI index whole: inspect --raw and copy --all", async () => {
    const raw = await skopeo(
      "inspect",
      "--raw",
      "--tls-verify=false",
      "--creds",
      creds(),
      `docker://${up.host}/library/multi:1`,
    );
    assert.equal(sha256(raw), index.manifestDigest);
    const out = join(work, "multi");
    await skopeo(
      "copy",
      "--all",
      "--src-tls-verify=false",
      "--src-creds",
      creds(),
      `docker://${up.host}/library/multi:1`,
      `dir:${out}`,
    );
    const files = await readdir(out);
    for (const img of index.images) {
      // dir: stores child manifests as <hex>.manifest.json
      assert.ok(files.includes(`${img.manifestDigest.slice("sha256:".length)}.manifest.json`), img.platform);
    }
  });

  it("lets anonymous clients pull, and the token server records who asked", async () => {
    const before = up.token?.requests.length ?? 0;
    await skopeo("inspect", "--raw", "--tls-verify=false", "--no-creds", `docker://${up.host}/library/x:1`);
    const fresh = up.token?.requests.slice(before) ?? [];
    assert.ok(fresh.length > 0);
    assert.ok(fresh.every((r) => r.authorization === undefined && r.status === 200));
    assert.match(fresh[0]?.query.get("scope") ?? "", /^repository:library\/x:pull$/);
  });

  it("rejects wrong credentials at the token server", async () => {
    await assert.rejects(
      skopeo(
        "inspect",
        "--raw",
        "--tls-verify=false",
        "--creds",
        "regmirror:wrong",
        `docker://${up.host}/library/x:1`,
      ),
    );
    assert.equal(up.token?.requests.at(-1)?.status, 401);
    assert.equal(up.token?.requests.at(-1)?.username, "regmirror");
  });

  it("counts the requests it handled from the access log", async () => {
    await up.resetRequests();
    const accept = { accept: image.mediaType };
    await registryRequest(up, "library/x", "HEAD", "/v2/library/x/manifests/1", { headers: accept });
    await registryRequest(up, "library/x", "GET", `/v2/library/x/blobs/${image.config.digest}`);
    await registryRequest(up, "library/x", "GET", "/v2/library/x/manifests/nope", { expect: [404] });
    const seen = await up.requests();
    assert.deepEqual(
      seen.map((r) => [r.method, r.path, r.status]),
      [
        ["HEAD", "/v2/library/x/manifests/1", 200],
        ["GET", `/v2/library/x/blobs/${image.config.digest}`, 200],
        ["GET", "/v2/library/x/manifests/nope", 404],
      ],
    );
    assert.equal(await up.count("GET", "/v2/library/x/manifests/"), 1);
    assert.equal(await up.count("*", "/v2/library/x/"), 3);
  });
});

describe("real upstream without auth", () => {
  it("takes a large streamed random-blob image", async () => {
    const up = await startUpstream();
    try {
      const img = await pushLargeBlobImage(up, "big/one", "1", { layerSizes: [8 << 20, 1] });
      const head = await registryRequest(up, "big/one", "HEAD", `/v2/big/one/blobs/${img.layers[0]?.digest}`);
      assert.equal(head.headers["content-length"], String(8 << 20));
      const man = await registryRequest(up, "big/one", "GET", "/v2/big/one/manifests/1", {
        headers: { accept: img.mediaType },
      });
      assert.deepEqual(man.body, img.manifest);
    } finally {
      await up.stop();
    }
  });
});

describe("fake upstream", () => {
  let fake: FakeUpstream;
  let img: BuiltImage;
  let layer: string;
  before(async () => {
    fake = await startFakeUpstream();
    img = buildImage({ layers: [Buffer.alloc(64 * 1024, "a")] });
    for (const b of [...img.layers, img.config]) fake.addBlob(b.bytes);
    fake.addManifest("library/x", "1", img.manifest, img.mediaType);
    layer = img.layers[0]?.digest ?? "";
  });
  after(() => fake?.stop());

  const get = (path: string, headers: Record<string, string> = {}, method: "GET" | "HEAD" = "GET") =>
    request(`${fake.url}${path}`, { method, headers, headersTimeout: 2000 });

  it("serves manifests by tag and digest, and blobs with Range", async () => {
    fake.resetRequests();
    const byTag = await get("/v2/library/x/manifests/1", {}, "HEAD");
    await byTag.body.dump();
    assert.equal(byTag.headers["docker-content-digest"], img.manifestDigest);
    assert.equal(byTag.headers["content-type"], img.mediaType);
    assert.equal(byTag.headers["content-length"], String(img.manifest.length));
    const byDigest = await get(`/v2/library/x/manifests/${img.manifestDigest}`);
    assert.deepEqual(Buffer.from(await byDigest.body.arrayBuffer()), img.manifest);
    const part = await get(`/v2/library/x/blobs/${layer}`, { range: "bytes=10-19" });
    assert.equal(part.statusCode, 206);
    assert.equal(part.headers["content-range"], `bytes 10-19/${img.layers[0]?.size}`);
    assert.deepEqual(Buffer.from(await part.body.arrayBuffer()), img.layers[0]?.bytes.subarray(10, 20));
    const missing = await get("/v2/library/x/manifests/2");
    assert.equal(missing.statusCode, 404);
    assert.equal(
      ((await missing.body.json()) as { errors: Array<{ code: string }> }).errors[0]?.code,
      "MANIFEST_UNKNOWN",
    );
    assert.equal(fake.count("GET", "/v2/library/x/manifests/"), 2);
    assert.equal(fake.count("*", "/v2/"), 4);
  });

  it("injects wrong bytes, cuts, slowness and status codes", async () => {
    fake.behave(layer, { wrongDigest: true, times: 1 });
    const wrong = Buffer.from(await (await get(`/v2/library/x/blobs/${layer}`)).body.arrayBuffer());
    assert.equal(wrong.length, img.layers[0]?.size);
    assert.notEqual(sha256(wrong), layer);

    fake.behave(layer, { cutAt: 0.5, times: 1 });
    const cut = await get(`/v2/library/x/blobs/${layer}`);
    await assert.rejects(cut.body.arrayBuffer());

    fake.behave("*", { status: 429, retryAfterSec: 7, times: 1 });
    const limited = await get("/v2/library/x/manifests/1");
    assert.equal(limited.statusCode, 429);
    assert.equal(limited.headers["retry-after"], "7");
    assert.match(await limited.body.text(), /TOOMANYREQUESTS/);
    assert.equal((await get("/v2/library/x/manifests/1")).statusCode, 200, "times: 1 wears off");

    fake.behave(img.config.digest, { slowBytesPerSec: 2000, times: 1 });
    const t0 = Date.now();
    await (await get(`/v2/library/x/blobs/${img.config.digest}`)).body.arrayBuffer();
    assert.ok(Date.now() - t0 >= (img.config.size / 2000) * 1000 * 0.6, "slow enough");
  });

  it("delays or withholds headers", async () => {
    fake.behave("library/x:1", { headersDelayMs: 300, times: 1 });
    const t0 = Date.now();
    await (await get("/v2/library/x/manifests/1")).body.dump();
    assert.ok(Date.now() - t0 >= 290);

    fake.behave("*", { hang: true, times: 1 });
    await assert.rejects(request(`${fake.url}/v2/`, { headersTimeout: 200 }), {
      code: "UND_ERR_HEADERS_TIMEOUT",
    });
  });

  it("challenges with bearer tokens and redirects blobs to another port without auth", async () => {
    const f = await startFakeUpstream({ auth: "bearer", redirectBlobs: "port" });
    try {
      const digest = f.addBlob(Buffer.from("hello"));
      const path = `/v2/library/y/blobs/${digest}`;
      const first = await request(`${f.url}${path}`);
      await first.body.dump();
      assert.equal(first.statusCode, 401);
      const realm = /realm="([^"]+)"/.exec(String(first.headers["www-authenticate"]))?.[1] ?? "";
      const tok = await request(`${realm}?service=fake-upstream&scope=repository:library/y:pull`);
      const { token } = (await tok.body.json()) as { token: string };
      const authorization = `Bearer ${token}`;
      const redirected = await request(`${f.url}${path}`, { headers: { authorization } });
      await redirected.body.dump();
      assert.equal(redirected.statusCode, 307);
      const location = String(redirected.headers.location);
      assert.ok(location.startsWith(`${f.cdnUrl}/cdn/`));
      assert.notEqual(f.cdnUrl, f.url);
      assert.equal(await (await request(location)).body.text(), "hello");
      const atCdn = f.requests.filter((r) => r.server === "cdn");
      assert.equal(atCdn.length, 1);
      assert.equal(atCdn[0]?.headers.authorization, undefined);

      f.revokeTokens();
      const revoked = await request(`${f.url}${path}`, { headers: { authorization } });
      await revoked.body.dump();
      assert.equal(revoked.statusCode, 401);
    } finally {
      await f.stop();
    }
  });

  it("serves an index built for it", async () => {
    const idx = buildIndex({ format: "docker" });
    const digest = fake.addManifest("library/multi", "1", idx.manifest, idx.mediaType);
    for (const child of idx.images)
      fake.addManifest("library/multi", undefined, child.manifest, child.mediaType);
    const res = await get("/v2/library/multi/manifests/1");
    assert.equal(res.headers["docker-content-digest"], digest);
    assert.equal(res.headers["content-type"], idx.mediaType);
    await res.body.dump();
    const child = await get(`/v2/library/multi/manifests/${idx.images[1]?.manifestDigest}`, {}, "HEAD");
    assert.equal(child.statusCode, 200);
  });
});
