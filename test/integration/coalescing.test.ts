// Coalescing against the real registry: 32 clients ask for the same cold 64 MiB blob at once.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { startUpstream, type Upstream } from "../fixtures/upstream.ts";
import { startTestMirror, type TestMirror } from "../fixtures/mirror.ts";
import { pushRandomBlob } from "../fixtures/images.ts";
import { get } from "../fixtures/http.ts";

describe("coalesced misses against a real registry", () => {
  let up: Upstream;
  let mirror: TestMirror;
  before(async () => {
    up = await startUpstream({ auth: "token" });
    mirror = await startTestMirror(up.url);
  });
  after(async () => {
    await mirror?.stop();
    await up?.stop();
  });

  it("32 concurrent GETs of a cold 64 MiB blob → exactly one upstream blob GET, 32 verified bodies", async () => {
    const blob = await pushRandomBlob(up, "library/big", 64 * 1024 * 1024);
    await up.resetRequests();
    const url = `${mirror.url}/v2/library/big/blobs/${blob.digest}`;
    const results = await Promise.all(Array.from({ length: 32 }, () => get(url)));
    for (const r of results) {
      assert.equal(r.status, 200);
      assert.equal(r.length, blob.size);
      assert.equal(r.digest, blob.digest);
    }
    const gets = (await up.requests()).filter(
      (r) => r.method === "GET" && r.path.includes("/blobs/") && r.status === 200,
    );
    assert.equal(gets.length, 1);
    // HEAD requests share the fill too: none reaches the upstream now.
    await up.resetRequests();
    const head = await fetch(url, { method: "HEAD" });
    assert.equal(head.headers.get("content-length"), String(blob.size));
    assert.deepEqual(await up.requests(), []);
  });
});
