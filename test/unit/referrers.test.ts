// The referrers of mirrored content without HTTP: the pure index helpers, and ReferrersService
// driven in-process against a scripted upstream (no sockets, no clock assertions).
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
import { ReferrersService, answerReferrers, type ReferrersAnswer } from "../../src/mirror/referrers.ts";
import {
  filterByArtifactType,
  indexManifests,
  nextPage,
  referrersTag,
  type ReferrerDescriptor,
} from "../../src/mirror/referrers-index.ts";
import { digestOf, parseDigest, type Digest } from "../../src/oci/digest.ts";
import { RegistryError } from "../../src/oci/errors.ts";
import { OCI_INDEX, OCI_MANIFEST } from "../../src/oci/media-types.ts";
import { BlobStore } from "../../src/storage/blob-store.ts";
import { filesystemCache, type Cache } from "../../src/storage/cache.ts";
import { referrersKey } from "../../src/storage/keys.ts";
import { ManifestStore } from "../../src/storage/manifest-store.ts";
import type { UpstreamClient, UpstreamRequest, UpstreamResponse } from "../../src/upstream/client.ts";

const quiet = { info() {}, warn() {}, error() {}, debug() {} } as unknown as Logger;

const subjectOf = (s: string): Digest => parseDigest(digestOf(Buffer.from(s)))!;
const descriptor = (name: string, artifactType?: string): ReferrerDescriptor => ({
  mediaType: OCI_MANIFEST,
  digest: digestOf(Buffer.from(name)),
  size: name.length,
  ...(artifactType !== undefined ? { artifactType } : {}),
});
const index = (manifests: unknown[]): Buffer =>
  Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: OCI_INDEX, manifests }));

describe("referrers index helpers", () => {
  it("names the referrers tag sha256-<hex>", () => {
    const d = subjectOf("x");
    assert.equal(referrersTag(d), `sha256-${d.hex}`);
  });

  it("reads an index's descriptors and drops entries that are not descriptors", () => {
    const good = descriptor("a", "t");
    const listed = indexManifests(index([good, { digest: "x" }, "junk", { ...good, size: -1 }]));
    assert.deepEqual(listed, [good]);
    // An index may leave its mediaType out; anything else is not an index.
    assert.deepEqual(indexManifests(Buffer.from('{"schemaVersion":2,"manifests":[]}')), []);
    assert.equal(indexManifests(Buffer.from(`{"mediaType":"${OCI_MANIFEST}","manifests":[]}`)), undefined);
    assert.equal(indexManifests(Buffer.from('{"errors":[]}')), undefined);
    assert.equal(indexManifests(Buffer.from("404 page not found")), undefined);
  });

  it("filters by artifactType, and not at all without one", () => {
    const list = [descriptor("a", "sig"), descriptor("b", "sbom"), descriptor("c")];
    assert.deepEqual(filterByArtifactType(list, "sbom"), [list[1]]);
    assert.deepEqual(filterByArtifactType(list, undefined), list);
  });

  it("finds the next page in a Link header, relative or absolute", () => {
    const base = new URL("http://up.example/v2/r/referrers/sha256:ab");
    assert.equal(
      nextPage('</v2/r/referrers/sha256:ab?last=x>; rel="next"', base)?.href,
      "http://up.example/v2/r/referrers/sha256:ab?last=x",
    );
    assert.equal(
      nextPage(['<http://a.example/p>; rel="prev"', "<http://b.example/q>; rel=next"], base)?.href,
      "http://b.example/q",
    );
    assert.equal(nextPage('</x>; rel="prev"', base), undefined);
    assert.equal(nextPage(undefined, base), undefined);
  });

  it("sets OCI-Filters-Applied only when it filtered, and Warning when stale", () => {
    const a: ReferrersAnswer = {
      manifests: [descriptor("a", "sig"), descriptor("b", "sbom")],
      source: "cache",
      stale: true,
      via: "api",
    };
    const filtered = answerReferrers(a, "sig");
    assert.equal(filtered.headers["oci-filters-applied"], "artifactType");
    assert.equal(filtered.headers["content-type"], OCI_INDEX);
    assert.equal(filtered.headers["content-length"], filtered.body.length);
    assert.match(String(filtered.headers.warning), /^110 /);
    assert.deepEqual(JSON.parse(filtered.body.toString()), {
      schemaVersion: 2,
      mediaType: OCI_INDEX,
      manifests: [a.manifests[0]],
    });
    const whole = answerReferrers({ ...a, stale: false }, undefined);
    assert.equal(whole.headers["oci-filters-applied"], undefined);
    assert.equal(whole.headers.warning, undefined);
  });
});

interface Scripted {
  status: number;
  body?: Buffer;
  headers?: Record<string, string>;
}

/** An upstream that answers by a script; with `hold`, every request waits for release(). */
class ScriptedUpstream {
  readonly url = "http://up.example";
  readonly name = "up";
  readonly requests: UpstreamRequest[] = [];
  hold = false;
  private waiting: Array<() => void> = [];

  constructor(public answer: (req: UpstreamRequest) => Scripted) {}

  paths(part: string): string[] {
    return this.requests.map((r) => r.path).filter((p) => p.includes(part));
  }

  /** Answers the held requests, and the ones to come at once. */
  release(): void {
    this.hold = false;
    for (const go of this.waiting.splice(0)) go();
  }

  async requested(n: number): Promise<void> {
    while (this.requests.length < n) await new Promise((r) => setImmediate(r));
  }

  async fetch(req: UpstreamRequest): Promise<UpstreamResponse> {
    this.requests.push(req);
    if (this.hold) await new Promise<void>((resolve) => this.waiting.push(resolve));
    const a = this.answer(req);
    const body = new PassThrough();
    body.end(req.method === "GET" ? a.body : undefined);
    const headers: Record<string, string> = { ...a.headers };
    if (a.body) headers["content-length"] = String(a.body.length);
    return { status: a.status, headers, body };
  }
}

describe("ReferrersService", () => {
  let dir: string;
  let cache: Cache;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "regmirror-referrers-"));
    cache = filesystemCache(dir);
    await new BlobStore(cache.driver, cache.paths).init();
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  let n = 0;
  /** A service on a fresh upstream name, so that tests share no cached record. */
  function service(
    answer: (req: UpstreamRequest) => Scripted,
    opts: { ttlMs?: number; maxStaleMs?: number } = {},
  ) {
    const upstream = new ScriptedUpstream(answer);
    const name = `up${++n}`;
    const coordinator = new InProcessCoordinator();
    const metrics = new Metrics({ processMetrics: false });
    const common = {
      upstream: upstream as unknown as UpstreamClient,
      upstreamName: name,
      metrics,
      log: quiet,
      tagTtlMs: opts.ttlMs ?? 60_000,
      maxStaleMs: opts.maxStaleMs ?? 60_000,
      revalidateTimeoutMs: 60_000,
    };
    const manifests = new ManifestService({
      ...common,
      store: new ManifestStore(cache.driver, 1 << 20),
      maxManifestBytes: 1 << 20,
      flights: coordinator.flights<ManifestAnswer>(`manifests/${name}`),
    });
    const referrers = new ReferrersService({
      ...common,
      driver: cache.driver,
      manifests,
      maxBytes: 1 << 20,
      flights: coordinator.flights<ReferrersAnswer>(`referrers/${name}`),
    });
    return { upstream, referrers, name };
  }

  const notFound: Scripted = { status: 404, body: Buffer.from("404 page not found") };
  const repo = "library/x";

  it("asks the upstream's API once for 20 concurrent requests, then answers from the cache", async () => {
    const subject = subjectOf("coalesced");
    const listed = [descriptor("sig", "sig")];
    const { upstream, referrers } = service(() => ({ status: 200, body: index(listed) }));
    upstream.hold = true;
    const answers = Array.from({ length: 20 }, () => referrers.get(repo, subject));
    await upstream.requested(1);
    // The others read the (absent) record from disk before they join: let them get there.
    for (let i = 0; i < 100; i++) await new Promise((r) => setImmediate(r));
    upstream.release();
    for (const a of await Promise.all(answers)) {
      assert.deepEqual(a.manifests, listed);
      assert.equal(a.via, "api");
    }
    assert.equal(upstream.requests.length, 1);
    assert.equal(upstream.requests[0]!.path, `/v2/${repo}/referrers/sha256:${subject.hex}`);
    const again = await referrers.get(repo, subject);
    assert.equal(again.source, "cache");
    assert.equal(upstream.requests.length, 1);
  });

  it("follows the upstream's pages and keeps the whole list", async () => {
    const subject = subjectOf("paged");
    const [a, b] = [descriptor("a", "sig"), descriptor("b", "sbom")];
    const { upstream, referrers } = service((req) =>
      req.path.endsWith("?last=1")
        ? { status: 200, body: index([b]) }
        : { status: 200, body: index([a]), headers: { link: `<${req.path}?last=1>; rel="next"` } },
    );
    assert.deepEqual((await referrers.get(repo, subject)).manifests, [a, b]);
    assert.equal(upstream.requests.length, 2);
  });

  it("refuses a next page on another host", async () => {
    const { referrers } = service(() => ({
      status: 200,
      body: index([]),
      headers: { link: '<http://elsewhere.example/v2/x>; rel="next"' },
    }));
    await assert.rejects(referrers.get(repo, subjectOf("elsewhere")), (err: RegistryError) => {
      assert.equal(err.code, "UPSTREAM_ERROR");
      return true;
    });
  });

  for (const [why, noApi] of [
    ["404", notFound],
    ["405", { status: 405, body: Buffer.from("") }],
    ["an answer that is no index", { status: 200, body: Buffer.from("<html>hello</html>") }],
  ] as const) {
    it(`falls back to the referrers tag after ${why}, and remembers that the API is missing`, async () => {
      const subject = subjectOf(`fallback ${why}`);
      const other = subjectOf(`untagged ${why}`);
      const listed = [descriptor("sbom", "sbom")];
      const tagIndex = index(listed);
      const { upstream, referrers } = service((req) => {
        if (req.path.includes("/referrers/")) return noApi;
        if (req.path === `/v2/${repo}/manifests/${referrersTag(subject)}`)
          return {
            status: 200,
            body: tagIndex,
            headers: { "content-type": OCI_INDEX, "docker-content-digest": digestOf(tagIndex) },
          };
        return notFound;
      });
      const a = await referrers.get(repo, subject);
      assert.deepEqual(a.manifests, listed);
      assert.equal(a.via, "tag");
      assert.deepEqual(
        upstream.requests[1]?.headers,
        { accept: [OCI_INDEX] },
        "the tag is asked for as an index",
      );
      // No tag, no referrers: an empty list, not an error; and no second try of the API.
      const none = await referrers.get(repo, other);
      assert.deepEqual(none.manifests, []);
      assert.equal(upstream.paths("/referrers/").length, 1);
      assert.equal(upstream.paths(`/manifests/${referrersTag(other)}`).length, 1);
    });
  }

  it("takes a 404 NAME_UNKNOWN for a missing repository, not for a missing API", async () => {
    const nameUnknown: Scripted = {
      status: 404,
      body: Buffer.from('{"errors":[{"code":"NAME_UNKNOWN","message":"repository name not known"}]}'),
    };
    let known = false;
    const { upstream, referrers } = service((req) =>
      req.path.includes("/referrers/") ? (known ? { status: 200, body: index([]) } : nameUnknown) : notFound,
    );
    assert.deepEqual((await referrers.get("library/gone", subjectOf("gone"))).manifests, []);
    known = true;
    const a = await referrers.get(repo, subjectOf("known"));
    assert.equal(a.via, "api");
    assert.equal(upstream.paths("/referrers/").length, 2, "the API is asked again");
  });

  it("lists nothing when the referrers tag is not an index", async () => {
    const subject = subjectOf("tag is an image");
    const image = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, layers: [] }));
    const { referrers } = service((req) =>
      req.path.includes("/manifests/")
        ? { status: 200, body: image, headers: { "content-type": OCI_MANIFEST } }
        : notFound,
    );
    assert.deepEqual((await referrers.get(repo, subject)).manifests, []);
  });

  it("serves the last answer stale while the upstream is down, within maxStale only", async () => {
    const subject = subjectOf("stale");
    const listed = [descriptor("sig", "sig")];
    let down = false;
    const answer = (): Scripted =>
      down ? { status: 503, body: Buffer.from("{}") } : { status: 200, body: index(listed) };
    const { upstream, referrers } = service(answer, { ttlMs: 0 });
    assert.equal((await referrers.get(repo, subject)).stale, false);
    down = true;
    const stale = await referrers.get(repo, subject);
    assert.equal(stale.stale, true);
    assert.deepEqual(stale.manifests, listed);
    assert.equal(upstream.requests.length, 2, "asked again first");
    // The same record past tag.ttl + tag.maxStale: the outage reaches the client.
    const strict = service(answer, { ttlMs: 0, maxStaleMs: 0 });
    down = false;
    await strict.referrers.get(repo, subject);
    down = true;
    await assert.rejects(strict.referrers.get(repo, subject), (err: RegistryError) => {
      assert.equal(err.code, "UNAVAILABLE");
      return true;
    });
  });

  it("asks the upstream again when its record is torn", async () => {
    const subject = subjectOf("torn");
    const { upstream, referrers, name } = service(() => ({ status: 200, body: index([]) }));
    await cache.driver.put(referrersKey(name, repo, subject), "{not json");
    assert.equal((await referrers.get(repo, subject)).source, "upstream");
    assert.equal(upstream.requests.length, 1);
  });
});
