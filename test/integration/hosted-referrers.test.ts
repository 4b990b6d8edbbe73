// The OCI 1.1 referrers API for hosted repositories: built from the `subject` of pushed
// manifests, filtered by artifactType, and never asked of the upstream.
//
// Blob uploads to hosted repositories are not in yet, so the blobs the manifests name are put in
// place below the mirror, through HostedStore, as an upload would leave them.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { request } from "undici";
import { startFakeUpstream, type FakeUpstream } from "../fixtures/fake-upstream.ts";
import { seedHostedBlob } from "../fixtures/hosted.ts";
import { startTestMirror, type TestMirror } from "../fixtures/mirror.ts";
import { MEDIA, buildImage, sha256 } from "../fixtures/images.ts";
import { HostedStore } from "../../src/hosted/store.ts";
import { filesystemCache } from "../../src/storage/cache.ts";

const SBOM = "application/vnd.example.sbom.v1+json";
const SIGNATURE = "application/vnd.example.signature.v1";
const EMPTY = "application/vnd.oci.empty.v1+json";

describe("referrers of a hosted repository", () => {
  let fake: FakeUpstream;
  let mirror: TestMirror;
  let store: HostedStore;
  const repo = "local/team/app";

  before(async () => {
    fake = await startFakeUpstream();
    mirror = await startTestMirror(fake.url, { hosted: { repositories: ["local/**"], anonymousPush: true } });
    const cache = filesystemCache(mirror.cacheDir);
    store = new HostedStore(cache.driver, cache.paths);
  });
  after(async () => {
    await mirror?.stop();
    await fake?.stop();
  });

  /** What an upload leaves: the bytes below hosted/, and the blob linked in the repository. */
  const seedBlob = (bytes: Buffer) => seedHostedBlob(store, repo, bytes);

  async function put(reference: string, manifest: Buffer, mediaType: string) {
    const res = await request(`${mirror.url}/v2/${repo}/manifests/${reference}`, {
      method: "PUT",
      headers: { "content-type": mediaType },
      body: manifest,
    });
    const text = await res.body.text();
    assert.equal(res.statusCode, 201, text);
    return res.headers;
  }

  async function referrers(subject: string, query = "") {
    const res = await request(`${mirror.url}/v2/${repo}/referrers/${subject}${query}`);
    return {
      status: res.statusCode,
      headers: res.headers,
      body: (await res.body.json()) as {
        schemaVersion: number;
        mediaType: string;
        manifests: Array<{ digest: string }>;
      },
    };
  }

  it("lists an artifact pushed with a subject, filters by artifactType, and asks the upstream nothing", async () => {
    fake.resetRequests();
    const img = buildImage({ format: "oci" });
    for (const b of [img.config, ...img.layers]) await seedBlob(b.bytes);
    const imageHeaders = await put("v1", img.manifest, img.mediaType);
    assert.equal(imageHeaders["docker-content-digest"], img.manifestDigest);
    assert.equal(imageHeaders["oci-subject"], undefined);

    const empty = await seedBlob(Buffer.from("{}"));
    const pushArtifact = async (artifactType: string, content: string) => {
      const layer = await seedBlob(Buffer.from(content));
      const annotations = { "org.opencontainers.image.created": "2026-01-01T00:00:00Z", about: content };
      const manifest = Buffer.from(
        JSON.stringify({
          schemaVersion: 2,
          mediaType: MEDIA.ociManifest,
          artifactType,
          config: { mediaType: EMPTY, digest: empty.digest, size: empty.size },
          layers: [{ mediaType: "application/octet-stream", digest: layer.digest, size: layer.size }],
          subject: { mediaType: img.mediaType, digest: img.manifestDigest, size: img.manifest.length },
          annotations,
        }),
      );
      const digest = sha256(manifest);
      const headers = await put(digest, manifest, MEDIA.ociManifest);
      assert.equal(headers["oci-subject"], img.manifestDigest, "the PUT names the subject it indexed");
      return { mediaType: MEDIA.ociManifest, digest, size: manifest.length, artifactType, annotations };
    };
    const sbom = await pushArtifact(SBOM, "an sbom");
    const signature = await pushArtifact(SIGNATURE, "a signature");

    const all = await referrers(img.manifestDigest);
    assert.equal(all.status, 200);
    assert.equal(all.headers["content-type"], MEDIA.ociIndex);
    assert.equal(all.headers["oci-filters-applied"], undefined);
    assert.equal(all.body.schemaVersion, 2);
    assert.equal(all.body.mediaType, MEDIA.ociIndex);
    const byDigest = (a: { digest: string }, b: { digest: string }) => a.digest.localeCompare(b.digest);
    // The order of a referrers list is the registry's to choose.
    assert.deepEqual([...all.body.manifests].sort(byDigest), [sbom, signature].sort(byDigest));

    const filtered = await referrers(img.manifestDigest, `?artifactType=${encodeURIComponent(SBOM)}`);
    assert.equal(filtered.status, 200);
    assert.equal(filtered.headers["oci-filters-applied"], "artifactType");
    assert.deepEqual(filtered.body.manifests, [sbom]);

    const none = await referrers(sha256("nothing refers to this"));
    assert.equal(none.status, 200);
    assert.deepEqual(none.body.manifests, []);

    assert.deepEqual(
      fake.requests.map((r) => `${r.method} ${r.path}`),
      [],
      "hosted names are never sent upstream",
    );
  });

  it("refuses an invalid digest with 400 DIGEST_INVALID", async () => {
    const res = await request(`${mirror.url}/v2/${repo}/referrers/sha256:short`);
    const body = (await res.body.json()) as { errors: Array<{ code: string }> };
    assert.equal(res.statusCode, 400);
    assert.equal(body.errors[0]?.code, "DIGEST_INVALID");
  });
});
