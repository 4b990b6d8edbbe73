// DELETE in hosted repositories: refused with 405 UNSUPPORTED unless hosted.delete, and with it
// a deleted tag, manifest or blob answers 404 afterwards, while what was not deleted still pulls.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, before, describe, it } from "node:test";
import { startFakeUpstream, type FakeUpstream } from "../fixtures/fake-upstream.ts";
import { startTestMirror, type TestMirror } from "../fixtures/mirror.ts";
import { sha256 } from "../fixtures/http.ts";
import { value } from "../fixtures/metrics.ts";

const OCI = "application/vnd.oci.image.manifest.v1+json";

/** Pushes one blob and a manifest naming it under `tag`; returns both digests. */
async function pushImage(
  m: TestMirror,
  repo: string,
  tag: string,
): Promise<{ blob: string; manifest: string }> {
  const bytes = randomBytes(2000);
  const blob = sha256(bytes);
  const up = await fetch(`${m.url}/v2/${repo}/blobs/uploads/?digest=${blob}`, {
    method: "POST",
    body: new Uint8Array(bytes),
  });
  assert.equal(up.status, 201, await up.text());
  const body = JSON.stringify({
    schemaVersion: 2,
    mediaType: OCI,
    config: { mediaType: "application/vnd.oci.image.config.v1+json", digest: blob, size: bytes.length },
    layers: [],
  });
  const put = await fetch(`${m.url}/v2/${repo}/manifests/${tag}`, {
    method: "PUT",
    body,
    headers: { "content-type": OCI },
  });
  assert.equal(put.status, 201, await put.text());
  return { blob, manifest: sha256(Buffer.from(body)) };
}

async function code(res: Response): Promise<string> {
  return ((await res.json()) as { errors: Array<{ code: string }> }).errors[0]!.code;
}

describe("DELETE in hosted repositories", () => {
  let fake: FakeUpstream;
  let off: TestMirror;
  let on: TestMirror;
  before(async () => {
    fake = await startFakeUpstream();
    const hosted = { repositories: ["local/**"], anonymousPush: true };
    off = await startTestMirror(fake.url, { hosted });
    on = await startTestMirror(fake.url, { hosted: { ...hosted, delete: true } });
  });
  after(async () => {
    await off.stop();
    await on.stop();
    await fake.stop();
  });

  it("is refused with 405 UNSUPPORTED without hosted.delete, and nothing goes", async () => {
    const { blob, manifest } = await pushImage(off, "local/keep", "1");
    const metrics = await off.metrics();
    assert.equal(value(metrics, "regmirror_hosted_pushes_total", { kind: "blob", via: "upload" }), 1);
    assert.equal(value(metrics, "regmirror_hosted_pushes_total", { kind: "manifest", via: "put" }), 1);
    assert.ok(value(metrics, "regmirror_hosted_pushed_bytes_total") > 2000);
    for (const path of [`manifests/${manifest}`, "manifests/1", `blobs/${blob}`]) {
      const res = await fetch(`${off.url}/v2/local/keep/${path}`, { method: "DELETE" });
      assert.equal(res.status, 405, path);
      assert.equal(await code(res), "UNSUPPORTED");
    }
    assert.equal((await fetch(`${off.url}/v2/local/keep/manifests/1`)).status, 200);
    // containerd names the registry in ?ns=: the mirror's own host is hosted content, docker.io is not.
    assert.equal((await fetch(`${off.url}/v2/local/keep/manifests/1?ns=${off.host}`)).status, 200);
    const hub = await fetch(`${off.url}/v2/local/keep/manifests/1?ns=docker.io`);
    assert.equal(hub.status, 404, "asked of the upstream, which has no such image");
    assert.equal(fake.count("*", "/v2/local/keep/"), 1);
    assert.equal((await fetch(`${off.url}/v2/local/keep/blobs/${blob}`)).status, 200);
  });

  it("with hosted.delete: a tag, then the manifest, then the blob answer 404 once deleted", async () => {
    const { blob, manifest } = await pushImage(on, "local/gone", "1");
    const del = (path: string) => fetch(`${on.url}/v2/local/gone/${path}`, { method: "DELETE" });
    // A tag alone (OCI 1.1): the manifest stays, by digest.
    assert.equal((await del("manifests/1")).status, 202);
    const tag = await fetch(`${on.url}/v2/local/gone/manifests/1`);
    assert.equal(tag.status, 404);
    assert.equal(await code(tag), "MANIFEST_UNKNOWN");
    assert.equal((await fetch(`${on.url}/v2/local/gone/manifests/${manifest}`)).status, 200);
    // The manifest by digest, tagged again first: its tags go with it.
    const again = await pushImage(on, "local/gone", "2");
    assert.equal((await del(`manifests/${again.manifest}`)).status, 202);
    assert.equal((await fetch(`${on.url}/v2/local/gone/manifests/${again.manifest}`)).status, 404);
    assert.equal((await fetch(`${on.url}/v2/local/gone/manifests/2`)).status, 404);
    assert.equal((await del(`manifests/${again.manifest}`)).status, 404, "already gone");
    // A blob.
    assert.equal((await del(`blobs/${blob}`)).status, 202);
    const b = await fetch(`${on.url}/v2/local/gone/blobs/${blob}`);
    assert.equal(b.status, 404);
    assert.equal(await code(b), "BLOB_UNKNOWN");
    assert.equal(fake.count("*", "/v2/local/gone/"), 0, "nothing asked upstream");
  });
});
