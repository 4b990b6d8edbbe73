// Manifests against a hostile or slow upstream, and what a cheap request costs: the type a
// manifest is served as comes from what was recorded at fill time, never from its body; a hit
// by digest parses nothing; the catalog answers from an index; a revalidation that gets no
// answer gives way to the stale copy after upstream.revalidateTimeout.
import assert from "node:assert/strict";
import { cp, mkdir, mkdtemp, readFile, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { startFakeUpstream, type FakeUpstream } from "../fixtures/fake-upstream.ts";
import { startTestMirror, type TestMirror } from "../fixtures/mirror.ts";
import { sha256 } from "../fixtures/http.ts";
import { MANIFEST_TYPES } from "../../src/oci/media-types.ts";

const OCI = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX = "application/vnd.oci.image.index.v1+json";

/** An OCI manifest whose own mediaType field says text/html. */
const htmlClaiming = (n: string) =>
  Buffer.from(
    JSON.stringify({ schemaVersion: 2, mediaType: "text/html", config: {}, layers: [], n: `<script>${n}` }),
  );

const manifestFile = (m: TestMirror, digest: string) =>
  join(m.cacheDir, "manifests", "sha256", digest.slice(7, 9), digest.slice(7));

async function ask(m: TestMirror, repo: string, ref: string, method: "GET" | "HEAD" = "GET") {
  const res = await fetch(`${m.url}/v2/${repo}/manifests/${ref}`, { method });
  await res.arrayBuffer();
  assert.equal(res.status, 200, `${method} ${repo}:${ref}`);
  return { type: res.headers.get("content-type") ?? "", digest: res.headers.get("docker-content-digest") };
}

describe("manifest media types", () => {
  let fake: FakeUpstream;
  let mirror: TestMirror;
  let restarted: TestMirror | undefined;
  before(async () => {
    fake = await startFakeUpstream();
    mirror = await startTestMirror(fake.url, { upstream: { name: "registry.test" } });
  });
  after(async () => {
    await restarted?.stop();
    await mirror?.stop();
    await fake?.stop();
  });

  it("a body claiming text/html is served as a manifest type, cold, warm and after a restart", async () => {
    // The upstream labels one properly (its header wins) and the other as HTML (the shape decides).
    const cases = [
      { repo: "evil/labelled", header: OCI },
      { repo: "evil/unlabelled", header: "text/html" },
    ];
    const asked: Array<[string, string]> = [];
    for (const c of cases) {
      const byTag = fake.addManifest(c.repo, "1", htmlClaiming(`${c.repo} tag`), c.header);
      const byDigest = fake.addManifest(c.repo, undefined, htmlClaiming(`${c.repo} digest`), c.header);
      asked.push([c.repo, "1"], [c.repo, byTag], [c.repo, byDigest]);
    }
    const check = async (m: TestMirror, when: string) => {
      for (const [repo, ref] of asked) {
        for (const method of ["GET", "HEAD"] as const) {
          const { type } = await ask(m, repo, ref, method);
          assert.equal(type, OCI, `${when}: ${method} ${repo}:${ref}`);
        }
      }
    };
    await check(mirror, "cold"); // by tag first, so its digest is then a hit; the other digest is cold
    await check(mirror, "warm");
    // Another mirror over a copy of the cache: nothing in memory, everything from disk.
    const copy = await mkdtemp(join(tmpdir(), "regmirror-cache-copy-"));
    await cp(mirror.cacheDir, copy, { recursive: true });
    restarted = await startTestMirror(fake.url, {
      upstream: { name: "registry.test" },
      cache: { dir: copy },
    });
    fake.resetRequests();
    await check(restarted, "after a restart");
    assert.equal(fake.count("*", "/v2/evil/"), 0, "all of it answered from the cache");
  });

  it("a hit by digest takes its type from the stored record, without parsing the body", async () => {
    // Not even JSON: any parse of it would fail, so only the record can name its type.
    const bytes = Buffer.from("not a JSON document; the type record is all there is");
    const digest = sha256(bytes);
    const file = manifestFile(mirror, digest);
    await mkdir(join(file, ".."), { recursive: true });
    await writeFile(file, bytes);
    await writeFile(`${file}.meta`, JSON.stringify({ mediaType: OCI_INDEX }));
    for (const method of ["HEAD", "GET", "HEAD"] as const) {
      assert.deepEqual(await ask(mirror, "any/repo", digest, method), { type: OCI_INDEX, digest });
    }
  });

  it("a manifest cached before types were recorded is sniffed once, then recorded", async () => {
    const bytes = Buffer.from(JSON.stringify({ schemaVersion: 2, manifests: [] }));
    const hostile = htmlClaiming("legacy");
    for (const [b, want] of [
      [bytes, OCI_INDEX],
      [hostile, OCI],
    ] as const) {
      const digest = sha256(b);
      const file = manifestFile(mirror, digest);
      await mkdir(join(file, ".."), { recursive: true });
      await writeFile(file, b);
      assert.deepEqual(await ask(mirror, "old/cache", digest), { type: want, digest });
      assert.deepEqual(JSON.parse(await readFile(`${file}.meta`, "utf8")), { mediaType: want });
    }
  });

  it("a record naming a type that is not a manifest type is not believed", async () => {
    const bytes = Buffer.from(JSON.stringify({ schemaVersion: 2, layers: [], n: "bad record" }));
    const digest = sha256(bytes);
    const file = manifestFile(mirror, digest);
    await mkdir(join(file, ".."), { recursive: true });
    await writeFile(file, bytes);
    await writeFile(`${file}.meta`, JSON.stringify({ mediaType: "text/html" }));
    const { type } = await ask(mirror, "x/y", digest);
    assert.ok(MANIFEST_TYPES.has(type), type);
  });
});

describe("the catalog's index", () => {
  const TOKEN = "admin-token-for-tests-0123456789";
  let fake: FakeUpstream;
  let mirror: TestMirror;
  before(async () => {
    fake = await startFakeUpstream();
    mirror = await startTestMirror(fake.url, {
      upstream: { name: "registry.test" },
      admin: { token: TOKEN },
    });
  });
  after(async () => {
    await mirror?.stop();
    await fake?.stop();
  });

  const pull = async (repo: string) => {
    fake.addManifest(repo, "1", Buffer.from(JSON.stringify({ schemaVersion: 2, layers: [], repo })), OCI);
    await ask(mirror, repo, "1");
  };
  const catalog = async () =>
    ((await (await fetch(`${mirror.url}/v2/_catalog`)).json()) as { repositories: string[] }).repositories;

  it("answers from an index kept up to date by the mirror, not a walk per request", async () => {
    await pull("a/one");
    assert.deepEqual(await catalog(), ["a/one"]);
    // A record written behind the mirror's back is not seen: the catalog did not walk again.
    const hidden = join(mirror.cacheDir, "repos", "registry.test", "b", "hidden", "_tags");
    await mkdir(hidden, { recursive: true });
    await writeFile(join(hidden, "1.json"), JSON.stringify({ entries: [] }));
    assert.deepEqual(await catalog(), ["a/one"]);
    // A tag the mirror writes is in the index at once.
    await pull("c/new");
    assert.deepEqual(await catalog(), ["a/one", "c/new"]);
    // A purge through the admin API makes the next catalog walk the directory again.
    const purged = await fetch(`${mirror.url}/admin/purge`, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${TOKEN}` },
      body: JSON.stringify({ ref: "a/one:1" }),
    });
    assert.equal(purged.status, 200);
    assert.deepEqual(await catalog(), ["b/hidden", "c/new"]);
  });
});

describe("a tag revalidation has its own time limit", () => {
  let fake: FakeUpstream;
  let mirror: TestMirror;
  before(async () => {
    fake = await startFakeUpstream();
    // The upstream timeout is sized for blobs; a revalidation must not wait for it.
    mirror = await startTestMirror(fake.url, {
      upstream: { name: "registry.test", timeout: "60s", revalidateTimeout: "1s" },
      tag: { ttl: "0s", maxStale: "1h" },
    });
  });
  after(async () => {
    await mirror?.stop();
    await fake?.stop();
  });
  const body = (n: number) =>
    Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: OCI, layers: [], n }));
  const getTag = async (tag: string) => {
    const res = await fetch(`${mirror.url}/v2/slow/app/manifests/${tag}`);
    await res.arrayBuffer();
    assert.equal(res.status, 200);
    return { digest: res.headers.get("docker-content-digest"), warning: res.headers.get("warning") };
  };

  it("serves a cached tag stale when the upstream never answers the HEAD", { timeout: 20_000 }, async () => {
    const digest = fake.addManifest("slow/app", "1", body(1), OCI);
    assert.deepEqual(await getTag("1"), { digest, warning: null });
    fake.behave("*", { hang: true, method: "HEAD" });
    try {
      const stale = await getTag("1");
      assert.equal(stale.digest, digest);
      assert.match(stale.warning ?? "", /^110 /);
    } finally {
      fake.clearBehaviours();
    }
  });

  it(
    "and when the tag moved but the GET of its new manifest never answers",
    { timeout: 20_000 },
    async () => {
      const digest = fake.addManifest("slow/app", "2", body(2), OCI);
      assert.deepEqual(await getTag("2"), { digest, warning: null });
      fake.addManifest("slow/app", "2", body(3), OCI);
      fake.behave("slow/app:2", { hang: true, method: "GET" });
      try {
        const stale = await getTag("2");
        assert.equal(stale.digest, digest);
        assert.match(stale.warning ?? "", /^110 /);
      } finally {
        fake.clearBehaviours();
      }
    },
  );
});
