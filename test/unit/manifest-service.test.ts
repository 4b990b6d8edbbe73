// ManifestService's coalescing driven in-process: an in-memory upstream that answers when told,
// a ManifestStore in a temp directory, no HTTP.
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PassThrough } from "node:stream";
import { after, before, describe, it } from "node:test";
import type { Logger } from "winston";
import { InProcessCoordinator } from "../../src/coordination/in-process.ts";
import { Metrics } from "../../src/metrics/metrics.ts";
import { ManifestService, type ManifestAnswer } from "../../src/mirror/manifests.ts";
import { digestOf } from "../../src/oci/digest.ts";
import { RegistryError } from "../../src/oci/errors.ts";
import { OCI_MANIFEST } from "../../src/oci/media-types.ts";
import { parseReference } from "../../src/oci/reference.ts";
import { BlobStore } from "../../src/storage/blob-store.ts";
import { ManifestStore } from "../../src/storage/manifest-store.ts";
import { filesystemCache, type Cache } from "../../src/storage/cache.ts";
import type { UpstreamClient, UpstreamRequest, UpstreamResponse } from "../../src/upstream/client.ts";
import { value } from "../fixtures/metrics.ts";

const quiet = { info() {}, warn() {}, error() {}, debug() {} } as unknown as Logger;

/** Serves one manifest; every request waits for answer(). */
class FakeUpstream {
  readonly name = "fake";
  readonly requests: UpstreamRequest[] = [];
  private waiting: Array<() => void> = [];
  status = 200;

  constructor(readonly manifest: Buffer) {}

  answer(): void {
    for (const go of this.waiting.splice(0)) go();
  }

  async requested(n: number): Promise<void> {
    while (this.requests.length < n) await new Promise((r) => setImmediate(r));
  }

  async fetch(req: UpstreamRequest): Promise<UpstreamResponse> {
    this.requests.push(req);
    await new Promise<void>((resolve) => this.waiting.push(resolve));
    const body = new PassThrough();
    body.end(this.status === 200 && req.method === "GET" ? this.manifest : undefined);
    return {
      status: this.status,
      headers: {
        "content-type": OCI_MANIFEST,
        "content-length": String(this.manifest.length),
        "docker-content-digest": digestOf(this.manifest),
      },
      body,
    };
  }
}

describe("ManifestService coalescing", () => {
  let dir: string;
  let cache: Cache;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "regmirror-manifests-"));
    cache = filesystemCache(dir);
    await new BlobStore(cache.driver, cache.paths).init(); // the cache layout
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  function service(manifest: Buffer) {
    const upstream = new FakeUpstream(manifest);
    const metrics = new Metrics({ processMetrics: false });
    const manifests = new ManifestService({
      store: new ManifestStore(cache.driver, 1 << 20),
      upstream: upstream as unknown as UpstreamClient,
      upstreamName: "fake",
      metrics,
      log: quiet,
      tagTtlMs: 60_000,
      maxStaleMs: 0,
      maxManifestBytes: 1 << 20,
      revalidateTimeoutMs: 60_000,
      flights: new InProcessCoordinator().flights<ManifestAnswer>("manifests/fake"),
    });
    return { upstream, metrics, manifests };
  }

  const manifestOf = (tag: string) =>
    Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, layers: [], tag }));

  for (const by of ["tag", "digest"] as const) {
    it(`asks the upstream once for 20 concurrent requests of a cold manifest by ${by}`, async () => {
      const bytes = manifestOf(`cold-${by}`);
      const { upstream, metrics, manifests } = service(bytes);
      const ref = parseReference(by === "tag" ? `cold-${by}` : digestOf(bytes));
      const answers = Array.from({ length: 20 }, () => manifests.get("library/x", ref, [OCI_MANIFEST]));
      await upstream.requested(1);
      upstream.answer();
      for (const a of await Promise.all(answers)) {
        assert.ok(a.bytes.equals(bytes));
        assert.equal(a.digest, digestOf(bytes));
      }
      assert.equal(upstream.requests.length, 1);
      const text = await metrics.registry.metrics();
      assert.equal(value(text, "regmirror_coalesced_requests_total", { kind: "manifest" }), 19);
      const hit = await manifests.get("library/x", ref, [OCI_MANIFEST]);
      assert.equal(hit.source, "cache");
      assert.equal(upstream.requests.length, 1, "then a hit");
    });
  }

  it("gives a failed fetch to every waiting request, and the next one asks afresh", async () => {
    const { upstream, manifests } = service(manifestOf("failing"));
    upstream.status = 500;
    const ref = parseReference("failing");
    const answers = Array.from({ length: 5 }, () => manifests.get("library/x", ref, [OCI_MANIFEST]));
    await upstream.requested(1);
    upstream.answer();
    for (const a of answers) await assert.rejects(a, RegistryError);
    assert.equal(upstream.requests.length, 1);
    const again = manifests.get("library/x", ref, [OCI_MANIFEST]);
    await upstream.requested(2);
    upstream.answer();
    await assert.rejects(again, RegistryError);
    assert.equal(upstream.requests.length, 2, "the failure was not remembered");
  });
});
