// The admin API: off by default, behind a bearer token, and doing what `regmirror purge`, `gc` and
// `warm` do, against the running mirror's own cache.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdtemp, rm, utimes, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import bcrypt from "bcryptjs";
import { startFakeUpstream, type FakeUpstream } from "../fixtures/fake-upstream.ts";
import { buildImage, buildIndex, addImage, addIndex, blobsOf } from "../fixtures/images.ts";
import { startTestMirror, type TestMirror } from "../fixtures/mirror.ts";
import { pullThrough } from "../fixtures/pull.ts";
import type { GcResult } from "../../src/maintenance/gc.ts";
import type { PurgeResult } from "../../src/maintenance/purge.ts";
import type { WarmReport } from "../../src/maintenance/warm.ts";
import type { RepositoriesSummary } from "../../src/http/repositories.ts";

const TOKEN = "admin-token-for-tests-0123456789";

interface Answer<T> {
  status: number;
  headers: Headers;
  body: T;
}

async function post<T>(url: string, body: unknown, token: string | null = TOKEN): Promise<Answer<T>> {
  const res = await fetch(url, {
    method: "POST",
    headers: { "content-type": "application/json", ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: typeof body === "string" ? body : JSON.stringify(body),
  });
  return { status: res.status, headers: res.headers, body: (await res.json()) as T };
}

type ErrorBody = { errors: Array<{ code: string; message: string }> };

describe("admin API", () => {
  let fake: FakeUpstream;
  let mirror: TestMirror;
  const alpine = buildIndex({ platforms: ["linux/amd64", "linux/arm64"], layers: 2 });
  // Above the 1 MiB small-blob memory, so a removed blob is really gone for the running mirror.
  const app = buildImage({ layers: [randomBytes(1200 * 1024)], format: "oci" });
  const blobFile = (digest: string) =>
    join(mirror.cacheDir, "blobs", "sha256", digest.slice(7, 9), digest.slice(7));
  const tagFile = (repo: string, tag: string) =>
    join(mirror.cacheDir, "repos", "registry.test", repo, "_tags", `${tag}.json`);

  before(async () => {
    fake = await startFakeUpstream();
    addIndex(fake, "library/alpine", "3.20", alpine);
    addImage(fake, "team/app", "1.0", app);
    mirror = await startTestMirror(fake.url, {
      upstream: { name: "registry.test" },
      admin: { token: TOKEN },
    });
  });
  after(async () => {
    await mirror?.stop();
    await fake?.stop();
  });

  it("is off (404) unless admin.token is set", async () => {
    const off = await startTestMirror(fake.url);
    try {
      for (const path of ["/admin/gc", "/admin/purge", "/admin/warm"]) {
        const r = await post<ErrorBody>(`${off.url}${path}`, {});
        assert.equal(r.status, 404, path);
      }
    } finally {
      await off.stop();
    }
  });

  it("answers 401 without the token or with a wrong one, before reading the body", async () => {
    const none = await post<ErrorBody>(`${mirror.url}/admin/gc`, {}, null);
    assert.equal(none.status, 401);
    assert.equal(none.body.errors[0]?.code, "UNAUTHORIZED");
    assert.match(none.headers.get("www-authenticate") ?? "", /^Bearer realm="regmirror-admin"/);
    const wrong = await post<ErrorBody>(`${mirror.url}/admin/gc`, {}, TOKEN.slice(0, -1) + "x");
    assert.equal(wrong.status, 401);
    assert.match(wrong.headers.get("www-authenticate") ?? "", /error="invalid_token"/);
    // Unknown paths too: without the token nothing under /admin/ is told apart.
    assert.equal((await post(`${mirror.url}/admin/nope`, "not json", "guess-guess-guess")).status, 401);
  });

  it("rejects a malformed body with 400 naming the problem", async () => {
    const bad = await post<ErrorBody>(`${mirror.url}/admin/purge`, { olderThan: "soon" });
    assert.equal(bad.status, 400);
    assert.match(bad.body.errors[0]?.message ?? "", /olderThan: not a duration/);
    assert.equal((await post(`${mirror.url}/admin/gc`, "{not json")).status, 400);
    assert.equal((await post(`${mirror.url}/admin/purge`, { ref: "x:1", repo: "x" })).status, 400);
    assert.equal((await post(`${mirror.url}/admin/warm`, { images: ["Alpine"] })).status, 400);
  });

  it("warm fills the cache so that a following pull makes zero upstream requests", async () => {
    const r = await post<WarmReport>(`${mirror.url}/admin/warm`, {
      images: ["library/alpine:3.20", "team/app:1.0"],
    });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.equal(r.body.ok, true);
    assert.deepEqual(
      r.body.images.map((i) => [i.image, i.blobs]),
      [
        ["library/alpine:3.20", 6],
        ["team/app:1.0", 2],
      ],
    );
    for (const b of [...alpine.images.flatMap(blobsOf), ...blobsOf(app)]) {
      assert.equal(existsSync(blobFile(b.digest)), true, `${b.digest} cached`);
    }
    fake.resetRequests();
    await pullThrough(mirror.url, "library/alpine", "3.20");
    await pullThrough(mirror.url, "team/app", "1.0");
    assert.deepEqual(fake.requests, [], "requests the pull made upstream");
  });

  it("warm reports an image that fails and still warms the others", async () => {
    const r = await post<WarmReport>(`${mirror.url}/admin/warm`, {
      images: ["library/alpine:3.20", "library/nothere:1"],
      platform: "linux/arm64",
    });
    assert.equal(r.status, 200);
    assert.equal(r.body.ok, false);
    assert.deepEqual(
      r.body.images.map((i) => i.ok),
      [true, false],
    );
    assert.match(r.body.images[1]?.error ?? "", /404/);
  });

  it("purge REF removes the tag record; gc then removes what only it reached", async () => {
    const dry = await post<PurgeResult>(`${mirror.url}/admin/purge`, { ref: "team/app:1.0", dryRun: true });
    assert.equal(dry.status, 200);
    assert.equal(existsSync(tagFile("team/app", "1.0")), true, "a dry run removes nothing");

    const r = await post<PurgeResult>(`${mirror.url}/admin/purge`, { ref: "team/app:1.0" });
    assert.equal(r.status, 200);
    assert.deepEqual(
      r.body.removed.map((x) => [x.kind, x.name]),
      [["tag", "registry.test/team/app:1.0"]],
    );
    assert.equal(existsSync(tagFile("team/app", "1.0")), false);
    const again = await post<ErrorBody>(`${mirror.url}/admin/purge`, { ref: "team/app:1.0" });
    assert.equal(again.status, 404, "nothing matched: as the CLI exits 1");
    // The status page's data is read again after a purge, not served from its short cache.
    const repos = (await (await fetch(`${mirror.url}/api/repositories`)).json()) as RepositoriesSummary;
    assert.deepEqual(
      repos.repositories.map((x) => x.name),
      ["library/alpine"],
    );

    const gc = await post<GcResult>(`${mirror.url}/admin/gc`, { minAge: "0s" });
    assert.equal(gc.status, 200);
    assert.deepEqual(
      gc.body.blobs.removed.sort(),
      blobsOf(app)
        .map((b) => b.digest)
        .sort(),
    );
    assert.deepEqual(gc.body.manifests.removed, [app.manifestDigest]);
    for (const b of blobsOf(app)) assert.equal(existsSync(blobFile(b.digest)), false);
    for (const b of alpine.images.flatMap(blobsOf)) assert.equal(existsSync(blobFile(b.digest)), true);

    // The mirror fetches it again on the next pull.
    fake.resetRequests();
    await pullThrough(mirror.url, "team/app", "1.0");
    assert.ok(fake.count("GET", `/v2/team/app/blobs/${app.layers[0]!.digest}`) >= 1);
  });

  it("purge --repo and --older-than, as JSON bodies", async () => {
    const layer = alpine.images[0]!.layers[0]!;
    const old = new Date(Date.now() - 40 * 86_400_000);
    await utimes(blobFile(layer.digest), old, old);
    const aged = await post<PurgeResult>(`${mirror.url}/admin/purge`, { olderThan: "30d" });
    assert.equal(aged.status, 200);
    assert.deepEqual(
      aged.body.removed.map((x) => x.name),
      [layer.digest],
    );
    assert.equal(existsSync(blobFile(layer.digest)), false);

    const repo = await post<PurgeResult>(`${mirror.url}/admin/purge`, { repo: "library/alpine" });
    assert.equal(repo.status, 200);
    assert.deepEqual(
      repo.body.removed.map((x) => x.name),
      ["registry.test/library/alpine:3.20"],
    );
  });
});

describe("admin warm on a mirror with client logins", () => {
  it("pulls through the mirror with a token the mirror issued itself", async () => {
    const fake = await startFakeUpstream();
    const work = await mkdtemp(join(tmpdir(), "regmirror-admin-"));
    const img = buildImage({ layers: 1 });
    addImage(fake, "team/app", "1", img);
    await writeFile(join(work, "htpasswd"), `alice:${bcrypt.hashSync("wonderland", 4)}\n`);
    const mirror = await startTestMirror(fake.url, {
      auth: { htpasswd: join(work, "htpasswd") },
      admin: { token: TOKEN },
    });
    try {
      const r = await post<WarmReport>(`${mirror.url}/admin/warm`, { images: ["team/app:1"] });
      assert.equal(r.status, 200);
      assert.equal(r.body.ok, true, JSON.stringify(r.body));
      // The status page asks for the same login as the registry, with a challenge a browser answers.
      const page = await fetch(`${mirror.url}/`);
      assert.equal(page.status, 401);
      assert.match(page.headers.get("www-authenticate") ?? "", /^Basic /);
      const basic = "Basic " + Buffer.from("alice:wonderland").toString("base64");
      assert.equal((await fetch(`${mirror.url}/`, { headers: { authorization: basic } })).status, 200);
    } finally {
      await mirror.stop();
      await fake.stop();
      await rm(work, { recursive: true, force: true });
    }
  });
});

describe("admin.token in the configuration", () => {
  const configCheck = (token: string) =>
    new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
      execFile(
        process.execPath,
        ["--import", "tsx", "src/main.ts", "config", "check"],
        { env: { PATH: process.env.PATH ?? "", REGMIRROR_ADMIN_TOKEN: token }, timeout: 30_000 },
        (err, stdout, stderr) => resolve({ code: err === null ? 0 : Number(err.code), stdout, stderr }),
      );
    });

  it("comes from REGMIRROR_ADMIN_TOKEN, is never printed, and must not be short", async () => {
    const ok = await configCheck(TOKEN);
    assert.equal(ok.code, 0, ok.stderr);
    assert.equal((JSON.parse(ok.stdout) as { admin: { token: string } }).admin.token, "(set)");
    assert.ok(!ok.stdout.includes(TOKEN));
    const short = await configCheck("secret");
    assert.equal(short.code, 2);
    assert.match(short.stderr, /admin\.token.*at least 16 characters/);
  });
});
