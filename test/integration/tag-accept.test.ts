// A tag's cached answer belongs to the Accept it was asked with. Against distribution 2.8, which
// answers a manifest list's tag with the amd64 manifest to a client that takes only v2 manifests.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { pushIndex, MEDIA, type BuiltIndex } from "../fixtures/images.ts";
import { startUpstream, type Upstream } from "../fixtures/upstream.ts";
import { startTestMirror, type TestMirror } from "../fixtures/mirror.ts";

const USUAL = [MEDIA.ociIndex, MEDIA.ociManifest, MEDIA.dockerList, MEDIA.dockerManifest].join(", ");

describe("tags and Accept, against a real registry", () => {
  let up: Upstream;
  let mirror: TestMirror;
  let list: BuiltIndex;

  before(async () => {
    up = await startUpstream({ auth: "token" });
    list = await pushIndex(up, "library/multi", "1", { platforms: ["linux/amd64", "linux/arm64"] });
    mirror = await startTestMirror(up.url);
  });
  after(async () => {
    await mirror?.stop();
    await up?.stop();
  });

  const get = async (accept: string) => {
    const res = await fetch(`${mirror.url}/v2/library/multi/manifests/1`, { headers: { accept } });
    assert.equal(res.status, 200);
    await res.arrayBuffer();
    return { digest: res.headers.get("docker-content-digest"), type: res.headers.get("content-type") };
  };

  it("one client's narrow Accept does not change what the others get", async () => {
    const amd64 = list.images.find((i) => i.platform === "linux/amd64")!;
    assert.deepEqual(await get(USUAL), { digest: list.manifestDigest, type: MEDIA.dockerList });
    // distribution picks the amd64 manifest for a client that cannot take a list.
    assert.deepEqual(await get(MEDIA.dockerManifest), {
      digest: amd64.manifestDigest,
      type: MEDIA.dockerManifest,
    });
    await up.resetRequests();
    // The bug: this answered the amd64 manifest (newest entry first) until the tag TTL ended.
    assert.deepEqual(await get(USUAL), { digest: list.manifestDigest, type: MEDIA.dockerList });
    assert.deepEqual(await get(MEDIA.dockerManifest), {
      digest: amd64.manifestDigest,
      type: MEDIA.dockerManifest,
    });
    // Both answers come from the cache, each for its own Accept.
    assert.equal(await up.count("*", "/v2/library/multi/manifests/"), 0);
  });

  // Follows the test above: the list and its amd64 manifest are cached.
  it("shares the tag's native manifest; for another narrow Accept, a HEAD finds what is cached", async () => {
    const amd64 = list.images.find((i) => i.platform === "linux/amd64")!;
    await up.resetRequests();
    // A client that takes lists gets the list cached for the usual Accept: it is the tag's own.
    assert.deepEqual(await get(`${MEDIA.dockerList}, ${MEDIA.dockerManifest}`), {
      digest: list.manifestDigest,
      type: MEDIA.dockerList,
    });
    assert.equal(await up.count("*", "/v2/library/multi/manifests/"), 0);
    // No list for this one: the upstream decides (HEAD), and names a manifest already cached.
    assert.deepEqual(await get(`${MEDIA.ociManifest}, ${MEDIA.dockerManifest}`), {
      digest: amd64.manifestDigest,
      type: MEDIA.dockerManifest,
    });
    const asked = (await up.requests()).filter((r) => r.path.startsWith("/v2/library/multi/manifests/"));
    assert.deepEqual(
      asked.map((r) => r.method),
      ["HEAD"],
    );
  });
});
