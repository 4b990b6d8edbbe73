// _catalog and tags/list answer from the cache, with the spec's n/last pagination and Link.
import assert from "node:assert/strict";
import { mkdir, rm, symlink } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { startFakeUpstream, type FakeUpstream } from "../fixtures/fake-upstream.ts";
import { startTestMirror, type TestMirror } from "../fixtures/mirror.ts";
import { paginate } from "../../src/mirror/listing.ts";

const OCI = "application/vnd.oci.image.manifest.v1+json";

describe("listing the cache over the API", () => {
  let hub: FakeUpstream;
  let other: FakeUpstream;
  let mirror: TestMirror;
  before(async () => {
    [hub, other] = await Promise.all([startFakeUpstream(), startFakeUpstream()]);
    mirror = await startTestMirror(hub.url, { upstreams: [{ name: "other.test", url: other.url }] });
    const pull = async (f: FakeUpstream, repo: string, tag: string, via: string) => {
      f.addManifest(
        repo,
        tag,
        Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: OCI, layers: [], repo, tag })),
        OCI,
      );
      assert.equal((await fetch(`${mirror.url}/v2/${via}/manifests/${tag}`)).status, 200);
    };
    for (const tag of ["1", "2", "3", "latest", "10"]) await pull(hub, "library/app", tag, "library/app");
    await pull(hub, "library/base", "1", "library/base");
    await pull(hub, "org/team/tool", "v1", "org/team/tool");
    await pull(other, "x/y", "1", "other.test/x/y");
  });
  after(async () => {
    await mirror.stop();
    await Promise.all([hub.stop(), other.stop()]);
  });

  it("lists a repository's cached tags, page by page", async () => {
    const all = await fetch(`${mirror.url}/v2/library/app/tags/list`);
    assert.deepEqual(await all.json(), { name: "library/app", tags: ["1", "10", "2", "3", "latest"] });
    const first = await fetch(`${mirror.url}/v2/library/app/tags/list?n=2`);
    assert.deepEqual(((await first.json()) as { tags: string[] }).tags, ["1", "10"]);
    assert.equal(first.headers.get("link"), '</v2/library/app/tags/list?n=2&last=10>; rel="next"');
    const second = await fetch(`${mirror.url}/v2/library/app/tags/list?n=2&last=10`);
    assert.deepEqual(((await second.json()) as { tags: string[] }).tags, ["2", "3"]);
    const third = await fetch(`${mirror.url}/v2/library/app/tags/list?n=2&last=3`);
    assert.deepEqual(((await third.json()) as { tags: string[] }).tags, ["latest"]);
    assert.equal(third.headers.get("link"), null);
    // Short names and registry prefixes route as everywhere else.
    assert.equal(
      ((await (await fetch(`${mirror.url}/v2/app/tags/list`)).json()) as { tags: string[] }).tags.length,
      5,
    );
    assert.deepEqual(await (await fetch(`${mirror.url}/v2/other.test/x/y/tags/list`)).json(), {
      name: "other.test/x/y",
      tags: ["1"],
    });
  });

  it("lists cached repositories, registry-qualified for the non-default upstreams", async () => {
    const all = await fetch(`${mirror.url}/v2/_catalog`);
    assert.deepEqual(await all.json(), {
      repositories: ["library/app", "library/base", "org/team/tool", "other.test/x/y"],
    });
    const page = await fetch(`${mirror.url}/v2/_catalog?n=3`);
    assert.deepEqual(((await page.json()) as { repositories: string[] }).repositories, [
      "library/app",
      "library/base",
      "org/team/tool",
    ]);
    assert.equal(page.headers.get("link"), '</v2/_catalog?n=3&last=org%2Fteam%2Ftool>; rel="next"');
    const rest = await fetch(`${mirror.url}/v2/_catalog?n=3&last=org%2Fteam%2Ftool`);
    assert.deepEqual(((await rest.json()) as { repositories: string[] }).repositories, ["other.test/x/y"]);
    const ns = await fetch(`${mirror.url}/v2/_catalog?ns=other.test`);
    assert.deepEqual(await ns.json(), { repositories: ["x/y"] });
  });

  it("answers what it does not have, and bad page sizes, with registry errors", async () => {
    const none = await fetch(`${mirror.url}/v2/library/never/tags/list`);
    assert.equal(none.status, 404);
    assert.equal(
      ((await none.json()) as { errors: Array<{ code: string }> }).errors[0]!.code,
      "NAME_UNKNOWN",
    );
    const bad = await fetch(`${mirror.url}/v2/_catalog?n=-1`);
    assert.equal(bad.status, 400);
    assert.equal(
      ((await bad.json()) as { errors: Array<{ code: string }> }).errors[0]!.code,
      "PAGINATION_NUMBER_INVALID",
    );
  });

  it("tells a tag directory it cannot read from one that is not there", async () => {
    // A symlink loop: readdir fails with ELOOP, an error root cannot bypass (as it can EACCES).
    const dir = join(mirror.cacheDir, "repos", "docker.io", "library", "loop", "_tags");
    await mkdir(join(dir, ".."), { recursive: true });
    await symlink(dir, dir);
    try {
      const res = await fetch(`${mirror.url}/v2/library/loop/tags/list`);
      assert.equal(res.status, 500, "a fault, not NAME_UNKNOWN");
    } finally {
      await rm(join(dir, ".."), { recursive: true, force: true });
    }
  });

  it("paginates by the spec's rules (pure)", () => {
    assert.deepEqual(paginate(["a", "b", "c"], 2, undefined), { items: ["a", "b"], next: "b" });
    assert.deepEqual(paginate(["a", "b", "c"], 2, "b"), { items: ["c"], next: undefined });
    assert.deepEqual(paginate(["a", "b", "c"], 0, undefined), { items: [], next: undefined });
    assert.deepEqual(paginate(["a", "b", "c"], undefined, "z"), { items: [], next: undefined });
    assert.deepEqual(paginate(["a", "c"], 5, "b"), { items: ["c"], next: undefined });
  });
});
