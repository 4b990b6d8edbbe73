// The OCI 1.1 referrers API for mirrored repositories: against a real registry without the API
// (distribution 2.8: the referrers tag schema), and against a fake upstream that has it
// (forwarded, cached with the tag TTL, coalesced, served stale).
import assert from "node:assert/strict";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { request } from "undici";
import { startUpstream, type Upstream } from "../fixtures/upstream.ts";
import { startFakeUpstream, type FakeUpstream } from "../fixtures/fake-upstream.ts";
import { startTestMirror, type TestMirror } from "../fixtures/mirror.ts";
import { MEDIA, blobsOf, buildImage, pushBlob, pushManifest, sha256 } from "../fixtures/images.ts";
import { skopeo } from "../fixtures/skopeo.ts";

const SBOM = "application/vnd.example.sbom.v1+json";
const SIGNATURE = "application/vnd.example.signature.v1";
const EMPTY = "application/vnd.oci.empty.v1+json";

interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  artifactType?: string;
  annotations?: Record<string, string>;
}

async function referrers(
  mirror: TestMirror,
  repo: string,
  subject: string,
  opts: { artifactType?: string; method?: "GET" | "HEAD" } = {},
): Promise<{
  status: number;
  headers: Record<string, unknown>;
  body: { manifests?: Descriptor[] } & object;
}> {
  const q = opts.artifactType === undefined ? "" : `?artifactType=${encodeURIComponent(opts.artifactType)}`;
  const res = await request(`${mirror.url}/v2/${repo}/referrers/${subject}${q}`, {
    method: opts.method ?? "GET",
  });
  const text = await res.body.text();
  return { status: res.statusCode, headers: res.headers, body: text ? (JSON.parse(text) as object) : {} };
}

const index = (manifests: Descriptor[]): Buffer =>
  Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MEDIA.ociIndex, manifests }));

describe("referrers of a mirrored repository, upstream without the referrers API (distribution 2.8)", () => {
  let up: Upstream;
  let mirror: TestMirror;
  let work: string;
  let subject: string;
  let sbom: Descriptor;
  let signature: Descriptor;
  const repo = "library/signed";

  before(async () => {
    up = await startUpstream({ auth: "token" });
    mirror = await startTestMirror(up.url);
    work = await mkdtemp(join(tmpdir(), "regmirror-referrers-"));
    // The image goes up as a user's would: skopeo copy from a dir: layout, with credentials.
    const img = buildImage({ format: "oci" });
    const layout = join(work, "image");
    await mkdir(layout);
    await writeFile(join(layout, "version"), "Directory Transport Version: 1.1\n");
    await writeFile(join(layout, "manifest.json"), img.manifest);
    for (const b of blobsOf(img)) await writeFile(join(layout, b.digest.slice("sha256:".length)), b.bytes);
    const { username, password } = up.credentials;
    await skopeo(
      "copy",
      "--dest-tls-verify=false",
      "--dest-creds",
      `${username}:${password}`,
      `dir:${layout}`,
      `docker://${up.host}/${repo}:v1`,
    );
    subject = img.manifestDigest;
    // Two artifacts about the image, pushed by digest as oras and cosign do on such a registry,
    // then the index under the referrers tag that lists them.
    const empty = await pushBlob(up, repo, Buffer.from("{}"));
    const artifact = async (artifactType: string, content: string): Promise<Descriptor> => {
      const layer = await pushBlob(up, repo, Buffer.from(content));
      const annotations = { "org.opencontainers.image.created": "2026-01-01T00:00:00Z", kind: content };
      const manifest = Buffer.from(
        JSON.stringify({
          schemaVersion: 2,
          mediaType: MEDIA.ociManifest,
          artifactType,
          config: { mediaType: EMPTY, digest: empty.digest, size: empty.size },
          layers: [{ mediaType: "application/octet-stream", digest: layer.digest, size: layer.size }],
          subject: { mediaType: img.mediaType, digest: subject, size: img.manifest.length },
          annotations,
        }),
      );
      const digest = await pushManifest(up, repo, sha256(manifest), manifest, MEDIA.ociManifest);
      return { mediaType: MEDIA.ociManifest, digest, size: manifest.length, artifactType, annotations };
    };
    sbom = await artifact(SBOM, "an sbom");
    signature = await artifact(SIGNATURE, "a signature");
    const tag = `sha256-${subject.slice("sha256:".length)}`;
    await pushManifest(up, repo, tag, index([sbom, signature]), MEDIA.ociIndex);
  });
  after(async () => {
    await mirror?.stop();
    await up?.stop();
    if (work) await rm(work, { recursive: true, force: true });
  });

  it("lists the referrers from the sha256-<hex> tag", async () => {
    // The subject is the image skopeo pushed, byte for byte.
    const tagged = await request(`${mirror.url}/v2/${repo}/manifests/v1`, {
      headers: { accept: MEDIA.ociManifest },
    });
    await tagged.body.dump();
    assert.equal(tagged.headers["docker-content-digest"], subject);
    const r = await referrers(mirror, repo, subject);
    assert.equal(r.status, 200);
    assert.equal(r.headers["content-type"], MEDIA.ociIndex);
    assert.equal(r.headers["oci-filters-applied"], undefined);
    assert.deepEqual(r.body, { schemaVersion: 2, mediaType: MEDIA.ociIndex, manifests: [sbom, signature] });
  });

  it("lists referrers a client can then pull through the mirror", async () => {
    const raw = await skopeo(
      "inspect",
      "--raw",
      "--tls-verify=false",
      `docker://${mirror.host}/${repo}@${sbom.digest}`,
    );
    const manifest = JSON.parse(raw) as { artifactType?: string; subject?: { digest?: string } };
    assert.equal(manifest.artifactType, SBOM);
    assert.equal(manifest.subject?.digest, subject);
  });

  it("filters by artifactType and says so in OCI-Filters-Applied", async () => {
    const r = await referrers(mirror, repo, subject, { artifactType: SIGNATURE });
    assert.equal(r.status, 200);
    assert.equal(r.headers["oci-filters-applied"], "artifactType");
    assert.deepEqual(r.body.manifests, [signature]);
  });

  it("answers an empty index for a subject without a referrers tag, asking the API no more", async () => {
    await up.resetRequests();
    const other = sha256("no referrers here");
    const r = await referrers(mirror, repo, other);
    assert.equal(r.status, 200);
    assert.deepEqual(r.body, { schemaVersion: 2, mediaType: MEDIA.ociIndex, manifests: [] });
    const seen = await up.requests();
    // The first request learnt that this upstream has no referrers API: only the tag is asked.
    assert.equal(seen.filter((e) => e.path.includes("/referrers/")).length, 0);
    assert.equal(seen.filter((e) => e.path === `/v2/${repo}/manifests/sha256-${other.slice(7)}`).length, 1);
  });

  it("answers HEAD with the headers of the GET and no body", async () => {
    const res = await request(`${mirror.url}/v2/${repo}/referrers/${subject}`, { method: "HEAD" });
    const body = await res.body.text();
    assert.equal(res.statusCode, 200);
    assert.equal(body, "");
    assert.equal(res.headers["content-type"], MEDIA.ociIndex);
    assert.equal(Number(res.headers["content-length"]), index([sbom, signature]).length);
  });

  it("refuses an invalid digest with 400 DIGEST_INVALID", async () => {
    const r = await referrers(mirror, repo, "sha256:not-hex");
    assert.equal(r.status, 400);
    assert.equal((r.body as { errors: Array<{ code: string }> }).errors[0]?.code, "DIGEST_INVALID");
  });
});

describe("referrers of a mirrored repository, upstream with the referrers API", () => {
  let fake: FakeUpstream;
  let mirror: TestMirror;
  /** In front of the same fake, with a tag TTL of 0: every request asks the upstream first. */
  let eager: TestMirror;
  const repo = "library/app";
  const subject = sha256("an image manifest");
  const sbom: Descriptor = {
    mediaType: MEDIA.ociManifest,
    digest: sha256("sbom"),
    size: 400,
    artifactType: SBOM,
    annotations: { a: "b" },
  };
  const signature: Descriptor = {
    mediaType: MEDIA.ociManifest,
    digest: sha256("sig"),
    size: 300,
    artifactType: SIGNATURE,
  };
  const path = `/v2/${repo}/referrers/`;

  before(async () => {
    fake = await startFakeUpstream({ referrersApi: true });
    fake.setReferrers(repo, subject, index([sbom, signature]));
    mirror = await startTestMirror(fake.url);
    eager = await startTestMirror(fake.url, { tag: { ttl: "0s", maxStale: "1h" } });
  });
  after(async () => {
    await mirror?.stop();
    await eager?.stop();
    await fake?.stop();
  });

  it("forwards the upstream's answer, then serves it from the cache within the tag TTL", async () => {
    fake.resetRequests();
    const first = await referrers(mirror, repo, subject);
    assert.equal(first.status, 200);
    assert.equal(first.headers["content-type"], MEDIA.ociIndex);
    assert.deepEqual(first.body.manifests, [sbom, signature]);
    assert.equal(fake.count("GET", path), 1);
    assert.equal(fake.count("*", `/v2/${repo}/manifests/`), 0, "no fallback to the tag schema");
    const second = await referrers(mirror, repo, subject);
    assert.deepEqual(second.body, first.body);
    const filtered = await referrers(mirror, repo, subject, { artifactType: SBOM });
    assert.equal(filtered.headers["oci-filters-applied"], "artifactType");
    assert.deepEqual(filtered.body.manifests, [sbom]);
    assert.equal(fake.count("*", path), 1, "one upstream request for all three");
  });

  it("asks the upstream once for 20 concurrent requests", async () => {
    const cold = sha256("a cold subject");
    fake.setReferrers(repo, cold, index([signature]));
    fake.resetRequests();
    // The upstream holds its answer a moment, so that all 20 arrive while the first is out.
    fake.behave("*", { headersDelayMs: 300, times: 1 });
    const answers = await Promise.all(Array.from({ length: 20 }, () => referrers(mirror, repo, cold)));
    for (const a of answers) {
      assert.equal(a.status, 200);
      assert.deepEqual(a.body.manifests, [signature]);
    }
    assert.equal(fake.count("*", path), 1);
  });

  it("serves the cached answer stale while the upstream is down", async () => {
    fake.clearBehaviours();
    fake.resetRequests();
    const fresh = await referrers(eager, repo, subject);
    assert.equal(fresh.status, 200);
    assert.equal(fresh.headers.warning, undefined);
    fake.behave("*", { status: 503 });
    try {
      const stale = await referrers(eager, repo, subject);
      assert.equal(stale.status, 200);
      assert.deepEqual(stale.body, fresh.body);
      assert.match(String(stale.headers.warning), /^110 /);
      assert.equal(fake.count("*", path), 2, "the expired answer was asked for again first");
      // Nothing cached for this one: the client learns that the upstream is down.
      const uncached = await referrers(eager, repo, sha256("never asked"));
      assert.equal(uncached.status, 503);
    } finally {
      fake.clearBehaviours();
    }
  });
});
