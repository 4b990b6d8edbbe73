// What operators look at: metrics that move as they should across a miss and a hit, /stats,
// /readyz, request ids.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdir, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, it } from "node:test";
import { startFakeUpstream, type FakeUpstream } from "../fixtures/fake-upstream.ts";
import { fakeAndMirror, startTestMirror, type TestMirror } from "../fixtures/mirror.ts";
import { get } from "../fixtures/http.ts";
import { value } from "../fixtures/metrics.ts";

const OCI = "application/vnd.oci.image.manifest.v1+json";

describe("metrics, stats, health", () => {
  let fake: FakeUpstream;
  let mirror: TestMirror;
  fakeAndMirror((f, m) => ((fake = f), (mirror = m)), { upstream: { name: "registry.test" } });

  it("counts a miss, then a hit, for a manifest and a blob, with bytes by source", async () => {
    const blob = randomBytes(50_000);
    const d = fake.addBlob(blob);
    const manifest = Buffer.from(
      JSON.stringify({ schemaVersion: 2, mediaType: OCI, layers: [{ digest: d }] }),
    );
    fake.addManifest("library/m", "1", manifest, OCI);
    const m0 = await mirror.metrics();
    await fetch(`${mirror.url}/v2/library/m/manifests/1`).then((r) => r.arrayBuffer());
    await get(`${mirror.url}/v2/library/m/blobs/${d}`);
    // Served bytes are counted when the response has been handed to the socket, which in one
    // process can come a turn of the event loop after the client has read it: wait for it.
    const settled = async (source: string, atLeast: number) => {
      for (let i = 0; i < 100; i++) {
        const text = await mirror.metrics();
        if (value(text, "regmirror_served_bytes_total", { source }) >= atLeast) return text;
        await new Promise((r) => setTimeout(r, 20));
      }
      return mirror.metrics();
    };
    const m1 = await settled("upstream", blob.length + manifest.length);
    await fetch(`${mirror.url}/v2/library/m/manifests/1`).then((r) => r.arrayBuffer());
    await get(`${mirror.url}/v2/library/m/blobs/${d}`);
    const m2 = await settled("cache", blob.length + manifest.length);
    const at = { upstream: "registry.test" };
    for (const kind of ["manifest", "blob"]) {
      assert.equal(
        value(m1, "regmirror_cache_misses_total", { kind, ...at }) -
          value(m0, "regmirror_cache_misses_total", { kind, ...at }),
        1,
        kind,
      );
      assert.equal(
        value(m1, "regmirror_cache_hits_total", { kind }) - value(m0, "regmirror_cache_hits_total", { kind }),
        0,
        kind,
      );
      assert.equal(
        value(m2, "regmirror_cache_hits_total", { kind, ...at }) -
          value(m1, "regmirror_cache_hits_total", { kind, ...at }),
        1,
        kind,
      );
      assert.equal(
        value(m2, "regmirror_cache_misses_total", { kind }) -
          value(m1, "regmirror_cache_misses_total", { kind }),
        0,
        kind,
      );
    }
    const served = (t: string, source: string) => value(t, "regmirror_served_bytes_total", { source });
    assert.equal(served(m1, "upstream") - served(m0, "upstream"), blob.length + manifest.length);
    assert.equal(served(m2, "cache") - served(m1, "cache"), blob.length + manifest.length);
    assert.equal(
      value(m2, "regmirror_upstream_requests_total", {
        upstream: "registry.test",
        method: "GET",
        status: "200",
      }),
      2,
    );
    assert.equal(value(m2, "regmirror_pulls_total", at), 2);
    assert.equal(value(m2, "regmirror_cache_blobs"), 1);
    assert.equal(value(m2, "regmirror_cache_size_bytes"), blob.length);
    assert.equal(value(m2, "regmirror_upstream_up", at), 1);

    const stats = (await (await fetch(`${mirror.url}/stats?history`)).json()) as {
      hitRatio: number;
      bytesSaved: number;
      pullsLastHour: number;
      cache: { blobs: number };
      upstreams: Array<{ name: string; up: boolean }>;
      history: unknown[];
    };
    assert.equal(stats.hitRatio, 0.5);
    assert.equal(stats.bytesSaved, blob.length + manifest.length);
    assert.equal(stats.cache.blobs, 1);
    assert.equal(stats.pullsLastHour, 2);
    assert.deepEqual(
      stats.upstreams.map((u) => [u.name, u.up]),
      [["registry.test", true]],
    );
    assert.ok(Array.isArray(stats.history));
  });

  it("tags every response with a request id (the client's, if it sent a sane one)", async () => {
    const a = await fetch(`${mirror.url}/v2/`);
    assert.match(a.headers.get("x-request-id") ?? "", /^[0-9a-f-]{36}$/);
    const b = await fetch(`${mirror.url}/v2/`, { headers: { "x-request-id": "trace-42" } });
    assert.equal(b.headers.get("x-request-id"), "trace-42");
    const c = await fetch(`${mirror.url}/v2/`, { headers: { "x-request-id": "bad id\twith junk" } });
    assert.notEqual(c.headers.get("x-request-id"), "bad id\twith junk");
  });

  it("/healthz is alive; /readyz fails, saying why, when the cache cannot be written", async () => {
    assert.equal((await fetch(`${mirror.url}/healthz`)).status, 200);
    const ok = await fetch(`${mirror.url}/readyz`);
    assert.equal(ok.status, 200);
    // Root ignores permission bits, so make tmp/ unusable the way a broken mount would be.
    const tmp = join(mirror.cacheDir, "tmp");
    await rm(tmp, { recursive: true });
    await writeFile(tmp, "not a directory");
    try {
      const bad = await fetch(`${mirror.url}/readyz`);
      assert.equal(bad.status, 503);
      const body = (await bad.json()) as {
        ready: boolean;
        checks: Record<string, { ok: boolean; detail?: string }>;
      };
      assert.equal(body.ready, false);
      assert.equal(body.checks.cacheWritable!.ok, false);
      assert.ok(body.checks.cacheWritable!.detail);
    } finally {
      await rm(tmp);
      await mkdir(tmp);
    }
  });

  it("/readyz fails when an upstream is down and stale serving is off", async () => {
    const other = await startFakeUpstream();
    const m = await startTestMirror(other.url, { tag: { maxStale: "0s" } });
    try {
      other.behave("*", { status: 503 });
      await fetch(`${m.url}/v2/library/x/manifests/1`).then((r) => r.arrayBuffer());
      const res = await fetch(`${m.url}/readyz`);
      assert.equal(res.status, 503);
      const body = (await res.json()) as { checks: { upstreams: { ok: boolean } } };
      assert.equal(body.checks.upstreams.ok, false);
    } finally {
      await m.stop();
      await other.stop();
    }
  });
});
