// The core promise, end to end: a real client (skopeo) pulls real images through regmirror from a
// real registry (distribution 2.8 behind a Docker-Hub-like token server); the second pull never
// touches the upstream.
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { mkdtemp, readFile, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { pushImage, pushIndex, type BuiltImage, type BuiltIndex } from "../fixtures/images.ts";
import { startUpstream, type Upstream } from "../fixtures/upstream.ts";
import { startTestMirror, type TestMirror } from "../fixtures/mirror.ts";
import { skopeo } from "../fixtures/skopeo.ts";

const sha256 = (b: Buffer) => "sha256:" + createHash("sha256").update(b).digest("hex");

/** Every file of a skopeo dir: copy, by the digest of its content. */
async function pulledDigests(dir: string): Promise<Set<string>> {
  const out = new Set<string>();
  for (const name of await readdir(dir)) {
    if (name === "version") continue;
    out.add(sha256(await readFile(join(dir, name))));
  }
  return out;
}

describe("pull through regmirror from a token-auth registry", () => {
  let up: Upstream;
  let mirror: TestMirror;
  let work: string;
  let image: BuiltImage;
  let dockerIndex: BuiltIndex;
  let ociIndex: BuiltIndex;

  before(async () => {
    work = await mkdtemp(join(tmpdir(), "regmirror-pull-"));
    up = await startUpstream({ auth: "token" });
    image = await pushImage(up, "library/app", "1", { layers: 3, format: "docker" });
    dockerIndex = await pushIndex(up, "library/multi", "1", {
      platforms: ["linux/amd64", "linux/arm64"],
      format: "docker",
    });
    ociIndex = await pushIndex(up, "org/team/oci", "v2", {
      platforms: ["linux/amd64", "linux/arm64"],
      format: "oci",
    });
    mirror = await startTestMirror(up.url);
  });
  after(async () => {
    await mirror?.stop();
    await up?.stop();
    await rm(work, { recursive: true, force: true });
  });

  it("skopeo copy gets every layer; a second pull makes no upstream request", async () => {
    await up.resetRequests();
    const first = join(work, "first");
    await skopeo("copy", "--src-tls-verify=false", `docker://${mirror.host}/library/app:1`, `dir:${first}`);
    const want = new Set([image.manifestDigest, image.config.digest, ...image.layers.map((l) => l.digest)]);
    assert.deepEqual(await pulledDigests(first), want);
    assert.equal(
      await up.count("GET", "/v2/library/app/blobs/"),
      image.layers.length + 1,
      "one upstream GET per blob",
    );

    await up.resetRequests();
    const second = join(work, "second");
    await skopeo("copy", "--src-tls-verify=false", `docker://${mirror.host}/library/app:1`, `dir:${second}`);
    assert.deepEqual(await pulledDigests(second), want);
    assert.deepEqual(await up.requests(), [], "the warm pull never reached the upstream");
  });

  for (const [label, repo, tag, get] of [
    ["Docker manifest list", "library/multi", "1", () => dockerIndex],
    ["OCI index, three-segment name", "org/team/oci", "v2", () => ociIndex],
  ] as const) {
    it(`pulls every platform of a ${label} (skopeo --all), warm the second time`, async () => {
      const index = get();
      const want = new Set([index.manifestDigest]);
      for (const img of index.images) {
        want.add(img.manifestDigest);
        want.add(img.config.digest);
        for (const l of img.layers) want.add(l.digest);
      }
      const first = join(work, `${repo.replaceAll("/", "_")}-1`);
      await skopeo(
        "copy",
        "--all",
        "--src-tls-verify=false",
        `docker://${mirror.host}/${repo}:${tag}`,
        `dir:${first}`,
      );
      assert.deepEqual(await pulledDigests(first), want);

      await up.resetRequests();
      const second = join(work, `${repo.replaceAll("/", "_")}-2`);
      await skopeo(
        "copy",
        "--all",
        "--src-tls-verify=false",
        `docker://${mirror.host}/${repo}:${tag}`,
        `dir:${second}`,
      );
      assert.deepEqual(await pulledDigests(second), want);
      assert.deepEqual(await up.requests(), []);
    });
  }

  it("answers manifests with the upstream's bytes and registry headers, GET and HEAD", async () => {
    for (const method of ["GET", "HEAD"]) {
      const res = await fetch(`${mirror.url}/v2/library/multi/manifests/1`, {
        method,
        headers: { accept: "application/vnd.docker.distribution.manifest.list.v2+json" },
      });
      assert.equal(res.status, 200);
      assert.equal(res.headers.get("docker-content-digest"), dockerIndex.manifestDigest);
      assert.equal(res.headers.get("content-type"), dockerIndex.mediaType);
      assert.equal(res.headers.get("content-length"), String(dockerIndex.manifest.length));
      assert.equal(res.headers.get("docker-distribution-api-version"), "registry/2.0");
      if (method === "GET") assert.deepEqual(Buffer.from(await res.arrayBuffer()), dockerIndex.manifest);
    }
    const raw = await skopeo(
      "inspect",
      "--raw",
      "--tls-verify=false",
      `docker://${mirror.host}/org/team/oci:v2`,
    );
    assert.equal(raw, ociIndex.manifest.toString());
  });

  it("serves a blob by digest with Content-Length, digest header and HEAD", async () => {
    const layer = image.layers[0]!;
    const head = await fetch(`${mirror.url}/v2/library/app/blobs/${layer.digest}`, { method: "HEAD" });
    assert.equal(head.status, 200);
    assert.equal(head.headers.get("content-length"), String(layer.size));
    assert.equal(head.headers.get("docker-content-digest"), layer.digest);
    const get = await fetch(`${mirror.url}/v2/library/app/blobs/${layer.digest}`);
    assert.equal(sha256(Buffer.from(await get.arrayBuffer())), layer.digest);
  });

  it("answers what is not there, and what it will not do, with registry errors", async () => {
    const cases: Array<[string, string, number, string]> = [
      ["GET", "/v2/library/nope/manifests/1", 404, "NAME_UNKNOWN|MANIFEST_UNKNOWN"],
      ["GET", "/v2/library/app/manifests/2", 404, "MANIFEST_UNKNOWN"],
      ["GET", `/v2/library/app/blobs/sha256:${"0".repeat(64)}`, 404, "BLOB_UNKNOWN"],
      ["GET", "/v2/Library/App/manifests/1", 400, "NAME_INVALID"],
      ["GET", "/v2/library/app/blobs/sha256:123", 400, "DIGEST_INVALID"],
      ["GET", "/v2/library/app/blobs/md5:abc", 400, "DIGEST_INVALID"],
      ["PUT", "/v2/library/app/manifests/1", 405, "UNSUPPORTED"],
      ["DELETE", `/v2/library/app/blobs/${image.layers[0]!.digest}`, 405, "UNSUPPORTED"],
      ["POST", "/v2/library/app/blobs/uploads/", 405, "UNSUPPORTED"],
    ];
    for (const [method, path, status, code] of cases) {
      const res = await fetch(mirror.url + path, { method });
      assert.equal(res.status, status, `${method} ${path}`);
      const body = (await res.json()) as { errors: Array<{ code: string }> };
      assert.match(body.errors[0]!.code, new RegExp(`^(${code})$`), `${method} ${path}`);
      assert.equal(res.headers.get("docker-distribution-api-version"), "registry/2.0");
    }
  });
});

describe("upstream credentials", () => {
  it("are sent to the token realm, and a private pull works with them", async () => {
    const up = await startUpstream({ auth: "token" });
    const mirror = await startTestMirror(up.url, { upstream: { ...up.credentials } });
    try {
      await pushImage(up, "private/thing", "1", { layers: 1 });
      const res = await fetch(`${mirror.url}/v2/private/thing/manifests/1`);
      assert.equal(res.status, 200);
      const basic =
        "Basic " + Buffer.from(`${up.credentials.username}:${up.credentials.password}`).toString("base64");
      const realm = up.token!.requests.filter((r) => r.authorization === basic);
      assert.ok(realm.length > 0, "the mirror asked the realm for a token with the configured credentials");
    } finally {
      await mirror.stop();
      await up.stop();
    }
  });
});
