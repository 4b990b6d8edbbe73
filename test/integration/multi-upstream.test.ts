// One mirror, two real registries: one behind token auth with credentials, one anonymous.
// Requests reach the right one by ?ns= or by path prefix; a shared blob is stored once.
import assert from "node:assert/strict";
import { mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { randomBytes } from "node:crypto";
import { pushBlob, pushImage, type BuiltImage } from "../fixtures/images.ts";
import { startUpstream, type Upstream } from "../fixtures/upstream.ts";
import { startTestMirror, type TestMirror } from "../fixtures/mirror.ts";
import { skopeo } from "../fixtures/skopeo.ts";
import { get } from "../fixtures/http.ts";
import { loadConfig } from "../../src/config/load.ts";

describe("many upstreams in one mirror", () => {
  let hub: Upstream; // plays docker.io: anonymous pulls
  let corp: Upstream; // a company registry behind token auth
  let mirror: TestMirror;
  let work: string;
  let hubImage: BuiltImage;
  let corpImage: BuiltImage;
  let shared: { digest: string; size: number };

  before(async () => {
    work = await mkdtemp(join(tmpdir(), "regmirror-multi-"));
    [hub, corp] = await Promise.all([startUpstream({ auth: "none" }), startUpstream({ auth: "token" })]);
    hubImage = await pushImage(hub, "library/alpine", "3", { layers: 2 });
    corpImage = await pushImage(corp, "team/app", "1", { layers: 2 });
    const bytes = randomBytes(300_000);
    shared = await pushBlob(hub, "library/alpine", bytes);
    await pushBlob(corp, "team/app", bytes);
    // The credentials come through ${VAR} and a docker config.json, as a deployment would pass them.
    const dockerConfig = join(work, "config.json");
    const auth = Buffer.from(`${corp.credentials.username}:${corp.credentials.password}`).toString("base64");
    await writeFile(dockerConfig, JSON.stringify({ auths: { "corp.example": { auth } } }));
    mirror = await startTestMirror(hub.url, {
      upstream: { name: "docker.io" },
      upstreams: [{ name: "corp.example", url: corp.url, credentialsFile: dockerConfig }],
    });
  });
  after(async () => {
    await mirror?.stop();
    await Promise.all([hub?.stop(), corp?.stop()]);
    await rm(work, { recursive: true, force: true });
  });

  it("routes containerd's ?ns= to the named upstream", async () => {
    await Promise.all([hub.resetRequests(), corp.resetRequests()]);
    const res = await fetch(`${mirror.url}/v2/team/app/manifests/1?ns=corp.example`);
    assert.equal(res.status, 200);
    assert.equal(res.headers.get("docker-content-digest"), corpImage.manifestDigest);
    const hubRes = await fetch(`${mirror.url}/v2/library/alpine/manifests/3?ns=docker.io`);
    assert.equal(hubRes.headers.get("docker-content-digest"), hubImage.manifestDigest);
    assert.ok((await corp.count("GET", "/v2/team/app/manifests/1")) >= 1);
    assert.equal(await hub.count("*", "/v2/team/"), 0);
  });

  it("routes a path prefix (podman / CRI-O mirror locations) and pulls with skopeo", async () => {
    const out = join(work, "prefix");
    await skopeo(
      "copy",
      "--src-tls-verify=false",
      `docker://${mirror.host}/corp.example/team/app:1`,
      `dir:${out}`,
    );
    const files = await readdir(out);
    for (const l of corpImage.layers) assert.ok(files.includes(l.digest.slice(7)), l.digest);
    // Docker Hub's short names through the prefix too: docker.io/alpine → library/alpine.
    const res = await fetch(`${mirror.url}/v2/docker.io/alpine/manifests/3`);
    assert.equal(res.headers.get("docker-content-digest"), hubImage.manifestDigest);
  });

  it("refuses a registry it does not mirror", async () => {
    const res = await fetch(`${mirror.url}/v2/library/alpine/manifests/3?ns=evil.example.com`);
    assert.equal(res.status, 404);
    const body = (await res.json()) as { errors: Array<{ code: string }> };
    assert.equal(body.errors[0]!.code, "NAME_UNKNOWN");
  });

  it("stores a blob shared by both upstreams once", async () => {
    const a = await get(`${mirror.url}/v2/library/alpine/blobs/${shared.digest}`);
    assert.equal(a.digest, shared.digest);
    await corp.resetRequests();
    const b = await get(`${mirror.url}/v2/team/app/blobs/${shared.digest}?ns=corp.example`);
    assert.equal(b.digest, shared.digest);
    assert.equal(await corp.count("GET", "/v2/team/app/blobs/"), 0, "served from the one cached copy");
    const dir = join(mirror.cacheDir, "blobs", "sha256", shared.digest.slice(7, 9));
    assert.deepEqual(
      (await readdir(dir)).filter((n) => n === shared.digest.slice(7)),
      [shared.digest.slice(7)],
    );
  });

  it("sends credentials only to their own upstream's realm", async () => {
    const basic =
      "Basic " + Buffer.from(`${corp.credentials.username}:${corp.credentials.password}`).toString("base64");
    const withCreds = corp.token!.requests.filter((r) => r.authorization === basic);
    assert.ok(withCreds.length > 0, "the corp realm got the configured credentials");
    // The hub is anonymous: it must never have seen an Authorization header from the mirror.
    // distribution's access log has no headers, so check the one place credentials could go:
    // no token server stands behind the hub, and the corp realm saw only its own credentials.
    for (const r of corp.token!.requests)
      assert.ok(r.authorization === undefined || r.authorization === basic);
  });
});

describe("upstreams from the environment", () => {
  it("takes REGMIRROR_UPSTREAMS as YAML and ${VAR} in credentials", () => {
    const { config } = loadConfig(
      {
        REGMIRROR_UPSTREAMS:
          '[{name: ghcr.io, url: "https://ghcr.io", username: "${GH_USER}", password: "${GH_TOKEN}"}]',
        GH_USER: "me",
        GH_TOKEN: "t0ken",
      },
      "/nonexistent",
    );
    assert.equal(config.upstreams[0]!.name, "ghcr.io");
    assert.equal(config.upstreams[0]!.username, "me");
    assert.equal(config.upstreams[0]!.password, "t0ken");
    assert.throws(
      () => loadConfig({ REGMIRROR_UPSTREAM_PASSWORD: "${NOPE}" }, "/nonexistent"),
      /upstream\.password.*NOPE/,
    );
    assert.throws(
      () => loadConfig({ REGMIRROR_UPSTREAMS: "[{name: docker.io, url: 'http://x'}]" }, "/nonexistent"),
      /upstreams\.0\.name.*second upstream/,
    );
  });
});
