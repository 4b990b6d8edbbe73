// A black-holed upstream (it accepts connections and never answers): after a few timeouts the
// mirror stops asking it, so cached tags are served stale at once and misses answer 503 at once;
// once the upstream is back and the cool-down has passed, requests reach it again.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import { describe, it } from "node:test";
import type { FakeUpstream } from "../fixtures/fake-upstream.ts";
import { fakeAndMirror, type TestMirror } from "../fixtures/mirror.ts";

const OCI = "application/vnd.oci.image.manifest.v1+json";
const manifest = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: OCI, config: {}, layers: [] }));

function gauge(text: string, name: string): number | undefined {
  const line = text.split("\n").find((l) => l.startsWith(`${name}{`) || l.startsWith(`${name} `));
  return line === undefined ? undefined : Number(line.slice(line.lastIndexOf(" ") + 1));
}

describe("an upstream that accepts connections and never answers", () => {
  let fake: FakeUpstream;
  let mirror: TestMirror;
  // TTL 0: every tag request asks the upstream first. A short timeout keeps the test short; the
  // breaker's cool-down is its default (10 s).
  fakeAndMirror((f, m) => ((fake = f), (mirror = m)), {
    upstream: { timeout: "1s", revalidateTimeout: "1s" },
    tag: { ttl: "0s", maxStale: "1h" },
  });

  const tag = async () => {
    const res = await fetch(`${mirror.url}/v2/library/bh/manifests/1`);
    await res.arrayBuffer();
    return { status: res.status, stale: res.headers.get("warning") !== null };
  };

  it("stops asking it after three timeouts, and asks again once it is back", async () => {
    fake.addManifest("library/bh", "1", manifest, OCI);
    assert.deepEqual(await tag(), { status: 200, stale: false });

    fake.behave("*", { hang: true });
    // Each of these waits out the upstream timeout, then gets the stale tag.
    for (let i = 0; i < 3; i++) assert.deepEqual(await tag(), { status: 200, stale: true });
    assert.equal(gauge(await mirror.metrics(), "regmirror_upstream_up"), 0);

    // Open: stale tags and 503s come without a word to the upstream.
    fake.resetRequests();
    for (let i = 0; i < 5; i++) assert.deepEqual(await tag(), { status: 200, stale: true });
    const miss = await fetch(`${mirror.url}/v2/library/bh/blobs/sha256:${"a".repeat(64)}`);
    assert.equal(miss.status, 503);
    const body = (await miss.json()) as { errors: Array<{ code: string }> };
    assert.equal(body.errors[0]!.code, "UNAVAILABLE");
    assert.ok(miss.headers.get("retry-after") !== null, "tells the client when to try again");
    assert.equal(fake.requests.length, 0, "the upstream was not contacted while the breaker was open");

    // The upstream recovers; after the cool-down a probe gets through and closes the breaker.
    fake.clearBehaviours();
    const blob = fake.addBlob(randomBytes(1000));
    let reached = false;
    for (let i = 0; i < 40 && !reached; i++) {
      await sleep(500);
      await tag();
      reached = fake.requests.length > 0;
    }
    assert.ok(reached, "the upstream is asked again after the cool-down");
    assert.deepEqual(await tag(), { status: 200, stale: false });
    const fill = await fetch(`${mirror.url}/v2/library/bh/blobs/${blob}`);
    assert.equal(fill.status, 200);
    await fill.arrayBuffer();
    assert.equal(gauge(await mirror.metrics(), "regmirror_upstream_up"), 1);
  });
});
