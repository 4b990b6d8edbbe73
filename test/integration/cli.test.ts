// The operator's command line as a script runs it: `node --import tsx src/main.ts <cmd>` as a child
// process, exit codes and stdout/stderr checked. warm runs against a regmirror process over a fake
// upstream that counts requests; the maintenance commands then work on that mirror's cache
// directory while it keeps running, which is how they are meant to be used.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { copyFile, mkdir, mkdtemp, readFile, rm, utimes, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import bcrypt from "bcryptjs";
import { startFakeUpstream, type FakeUpstream } from "../fixtures/fake-upstream.ts";
import {
  buildImage,
  buildIndex,
  sha256,
  type BuiltImage,
  addImage,
  addIndex,
  blobsOf,
} from "../fixtures/images.ts";
import { spawnMirror, type MirrorProcess } from "../fixtures/mirror-process.ts";
import { startTestMirror } from "../fixtures/mirror.ts";
import { freePort } from "../fixtures/ports.ts";
import { get } from "../fixtures/http.ts";
import { skopeo } from "../fixtures/skopeo.ts";
import { parseImageRef } from "../../src/maintenance/image-ref.ts";
import type { Listing } from "../../src/maintenance/ls.ts";
import type { WarmResult } from "../../src/maintenance/warm.ts";
import { cli, type Run } from "../fixtures/cli.ts";

const HOUR = 3_600_000;
const ago = (ms: number) => new Date(Date.now() - ms);
const bytesOf = (imgs: BuiltImage[]) => imgs.flatMap(blobsOf).reduce((a, b) => a + b.size, 0);

describe("image references", () => {
  it("parses the forms people type, and keeps the name as typed for the mirror to route", () => {
    assert.deepEqual(parseImageRef("alpine"), {
      text: "alpine",
      name: "alpine",
      reference: "latest",
      isDigest: false,
    });
    assert.equal(parseImageRef("library/alpine:3.20").reference, "3.20");
    const ghcr = parseImageRef("ghcr.io/org/img:v1");
    assert.deepEqual([ghcr.name, ghcr.reference], ["ghcr.io/org/img", "v1"]);
    const port = parseImageRef("registry.local:5000/team/app");
    assert.deepEqual([port.name, port.reference], ["registry.local:5000/team/app", "latest"]);
    const d = `sha256:${"a".repeat(64)}`;
    assert.equal(parseImageRef(`alpine:3.20@${d}`).reference, d, "the digest wins over the tag");
    for (const bad of ["Alpine", "alpine@sha256:abc", "alpine:", "a//b", "bad_host:1/x:y:z"]) {
      assert.throws(() => parseImageRef(bad), /invalid image reference/, bad);
    }
  });
});

describe("regmirror CLI against a running mirror and its cache", () => {
  let fake: FakeUpstream;
  let mirror: MirrorProcess;
  let dir: string;
  let cacheDir: string;
  let env: Record<string, string>;
  const alpine = buildIndex({ platforms: ["linux/amd64", "linux/arm64"], layers: 2 });
  const multi = buildIndex({ platforms: ["linux/amd64", "linux/arm64", "linux/arm/v7"], format: "oci" });
  // One layer above the mirror's 1 MiB small-blob memory: a running mirror serves small blobs it
  // has seen from memory, so only a large one shows it going back to the upstream for a removed file.
  const app = buildImage({ layers: [randomBytes(1536 * 1024), Buffer.from("small\n")], format: "oci" });
  const flaky = buildImage({ layers: 2 });
  const [alpineAmd, alpineArm] = alpine.images as [BuiltImage, BuiltImage];
  const blobFile = (digest: string) => join(cacheDir, "blobs", "sha256", digest.slice(7, 9), digest.slice(7));
  const manifestFile = (digest: string) =>
    join(cacheDir, "manifests", "sha256", digest.slice(7, 9), digest.slice(7));
  const tagFile = (repo: string, tag: string) =>
    join(cacheDir, "repos", "docker.io", repo, "_tags", `${tag}.json`);
  const json = <T>(r: Run): T => JSON.parse(r.stdout) as T;
  /** A blob the gc test leaves behind as too young to remove. */
  let youngDigest = "";

  before(async () => {
    fake = await startFakeUpstream();
    addIndex(fake, "library/alpine", "3.20", alpine);
    addIndex(fake, "library/multi", "1", multi);
    addImage(fake, "team/app", "1.0", app);
    addImage(fake, "team/flaky", "1", flaky);
    fake.behave(flaky.layers[0]!.digest, { status: 500 });
    dir = await mkdtemp(join(tmpdir(), "regmirror-cli-"));
    cacheDir = join(dir, "cache");
    const config = join(dir, "mirror.yml");
    const settings = `upstream: { url: "${fake.url}" }\ncache: { dir: "${cacheDir}" }\n`;
    await writeFile(config, settings);
    env = { REGMIRROR_CONFIG: config };
    mirror = await spawnMirror(env);
    // The CLI reads the settings the mirror runs with, and so finds it at the port it listens on.
    await writeFile(config, `${settings}listen: ${new URL(mirror.url).host}\n`);
  });
  after(async () => {
    mirror?.kill("SIGKILL");
    await mirror?.exited;
    await fake?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  it("warm fills the cache so that a following pull of every platform makes zero upstream requests", async () => {
    // No --mirror: the default is the listen port from the config.
    const r = await cli(["warm", "alpine:3.20", "team/app:1.0"], env);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^warmed alpine:3\.20: 6 blobs, [\d.]+ KiB$/m);
    assert.match(r.stdout, /^warmed team\/app:1\.0: 3 blobs, /m);
    for (const b of [...alpine.images.flatMap(blobsOf), ...blobsOf(app)]) {
      assert.equal(existsSync(blobFile(b.digest)), true, `${b.digest} cached`);
    }

    fake.resetRequests();
    const host = new URL(mirror.url).host;
    await skopeo(
      "copy",
      "--all",
      "--src-tls-verify=false",
      `docker://${host}/library/alpine:3.20`,
      `dir:${join(dir, "pull-a")}`,
    );
    await skopeo(
      "copy",
      "--src-tls-verify=false",
      `docker://${host}/team/app:1.0`,
      `dir:${join(dir, "pull-b")}`,
    );
    assert.deepEqual(
      fake.requests.map((q) => `${q.method} ${q.path}`),
      [],
      "every manifest and blob came from the cache",
    );
  });

  it("warm --platform pulls only that platform of an index", async () => {
    fake.resetRequests();
    const r = await cli(
      ["warm", "--json", "--mirror", mirror.url, "--platform", "linux/arm/v7", "library/multi:1"],
      env,
    );
    assert.equal(r.code, 0, r.stderr);
    const wanted = multi.images.find((i) => i.platform === "linux/arm/v7")!;
    assert.deepEqual(json<{ images: WarmResult[] }>(r).images, [
      {
        image: "library/multi:1",
        ok: true,
        digest: multi.manifestDigest,
        manifests: 2,
        blobs: 2,
        bytes: bytesOf([wanted]),
      },
    ]);
    const blobGets = fake.requests
      .filter((q) => q.path.includes("/blobs/"))
      .map((q) => q.path.split("/").pop());
    assert.deepEqual(
      blobGets.sort(),
      blobsOf(wanted)
        .map((b) => b.digest)
        .sort(),
    );
    assert.equal(fake.count("GET", `/v2/library/multi/manifests/${wanted.manifestDigest}`), 1);
    assert.equal(fake.count("GET", "/v2/library/multi/manifests/sha256:"), 1, "no other platform's manifest");
  });

  it("warm and friends exit 1 when something fails and 2 on a usage or config error", async () => {
    const closed = `http://127.0.0.1:${await freePort()}`;
    const [missing, brokenLayer, badRef, unreachable, badPlatform, noPlatform, badConfig] = await Promise.all(
      [
        cli(["warm", "--mirror", mirror.url, "team/app:1.0", "team/nosuch:1"], env),
        cli(["warm", "--mirror", mirror.url, "team/flaky:1"], env),
        cli(["warm", "--mirror", mirror.url, "Team/App"], env),
        cli(["warm", "--mirror", closed, "alpine"], env),
        cli(["warm", "--mirror", mirror.url, "--platform", "linux", "alpine"], env),
        cli(["warm", "--mirror", mirror.url, "--platform", "windows/amd64", "alpine:3.20"], env),
        cli(["ls"], { ...env, REGMIRROR_CACHE_MAX_SIZE: "lots" }),
      ],
    );
    assert.equal(missing.code, 1);
    assert.match(missing.stdout, /^warmed team\/app:1\.0: 3 blobs/m, "the images that can be warmed are");
    assert.match(missing.stderr, /could not warm team\/nosuch:1: .*404 MANIFEST_UNKNOWN/);
    assert.equal(brokenLayer.code, 1);
    assert.match(
      brokenLayer.stderr,
      /could not warm team\/flaky:1: 1 of 3 blobs failed; the first: GET .*: 5\d\d/,
    );
    for (const b of [flaky.config, flaky.layers[1]!]) {
      assert.equal(existsSync(blobFile(b.digest)), true, "the other blobs of the image are cached");
    }
    assert.equal(badRef.code, 2);
    assert.match(badRef.stderr, /invalid image reference "Team\/App"/);
    assert.equal(unreachable.code, 1);
    assert.match(unreachable.stderr, /cannot reach the mirror at http:\/\/127\.0\.0\.1:\d+: .*ECONNREFUSED/);
    assert.equal(badPlatform.code, 2);
    assert.match(badPlatform.stderr, /invalid platform "linux"/);
    assert.equal(noPlatform.code, 1);
    assert.match(
      noPlatform.stderr,
      /no manifest for windows\/amd64 in the index \(it has linux\/amd64, linux\/arm64\)/,
    );
    assert.equal(badConfig.code, 2);
    assert.match(badConfig.stderr, /cache\.maxSize/);
  });

  it("ls lists repositories, tags and sizes", async () => {
    const [r, text] = await Promise.all([cli(["ls", "--json"], env), cli(["ls"], env)]);
    assert.equal(r.code, 0, r.stderr);
    const listing = json<Listing>(r);
    const repo = (name: string) => listing.repositories.find((x) => x.name === name);
    assert.deepEqual(
      listing.repositories.map((x) => `${x.upstream}/${x.name}`),
      ["docker.io/library/alpine", "docker.io/library/multi", "docker.io/team/app", "docker.io/team/flaky"],
    );
    const a = repo("library/alpine")!;
    assert.equal(a.tags.length, 1);
    assert.equal(a.tags[0]!.tag, "3.20");
    assert.equal(a.tags[0]!.entries[0]!.digest, alpine.manifestDigest);
    assert.equal(a.tags[0]!.entries[0]!.mediaType, alpine.mediaType);
    assert.ok(Date.parse(a.tags[0]!.entries[0]!.checkedAt) > Date.now() - HOUR);
    assert.equal(a.bytes, bytesOf(alpine.images), "both platforms' blobs, counted once");
    assert.equal(a.cachedBytes, a.bytes);
    assert.equal(a.tags[0]!.blobs, 6);
    const m = repo("library/multi")!;
    const arm = multi.images.filter((i) => i.platform === "linux/arm/v7");
    assert.equal(m.bytes, bytesOf(arm), "an index counts only its cached children");
    assert.equal(repo("team/app")!.bytes, bytesOf([app]));
    const f = repo("team/flaky")!;
    assert.deepEqual(
      [f.bytes, f.blobs, f.cachedBytes, f.cachedBlobs],
      [bytesOf([flaky]), 3, flaky.config.size + flaky.layers[1]!.size, 2],
      "a blob that could not be fetched counts in the size, not in what is cached",
    );
    assert.equal(listing.cache.blobs, 6 + 2 + 3 + 2);

    assert.equal(text.code, 0, text.stderr);
    assert.match(text.stdout, /^docker\.io\/library\/alpine {2}1 tag {2}[\d.]+ KiB$/m);
    assert.match(text.stdout, /^docker\.io\/team\/flaky {2}1 tag {2}\d+ B \(\d+ B cached, 2\/3 blobs\)$/m);
    assert.match(text.stdout, new RegExp(`^ {2}3\\.20 {2}${alpine.manifestDigest.slice(7, 19)} `, "m"));
  });

  it("verify removes a corrupted blob and exits 1; the mirror fetches it again on the next pull", async () => {
    const victim = app.layers[0]!.digest;
    const bytes = await readFile(blobFile(victim));
    bytes[10] = bytes[10]! ^ 0xff;
    await writeFile(blobFile(victim), bytes);

    const r = await cli(["verify", "--json"], env);
    assert.equal(r.code, 1, r.stderr);
    const report = json<{ checked: number; corrupt: Array<{ kind: string; digest: string }> }>(r);
    assert.deepEqual(
      report.corrupt.map((c) => [c.kind, c.digest]),
      [["blob", victim]],
    );
    assert.equal(report.checked, 13 + 7, "13 blobs; 7 manifests: 2 indexes, 3 of their children, 2 images");
    assert.equal(existsSync(blobFile(victim)), false);
    assert.match(r.stderr, /1 corrupt file removed/);

    const again = await cli(["verify"], env);
    assert.equal(again.code, 0, again.stderr);
    assert.match(again.stdout, /: 0 corrupt files$/m);

    fake.resetRequests();
    const got = await get(`${mirror.url}/v2/team/app/blobs/${victim}`);
    assert.equal(got.digest, victim);
    assert.equal(fake.count("GET", `/v2/team/app/blobs/${victim}`), 1);
    assert.equal(existsSync(blobFile(victim)), true, "and caches it again");
  });

  it("gc removes an orphan blob and a stale temp file, and spares referenced and recent files", async () => {
    const orphan = randomBytes(5000);
    const orphanDigest = sha256(orphan);
    const young = randomBytes(100);
    youngDigest = sha256(young);
    await mkdir(join(blobFile(orphanDigest), ".."), { recursive: true });
    await writeFile(blobFile(orphanDigest), orphan);
    await utimes(blobFile(orphanDigest), ago(2 * HOUR), ago(2 * HOUR));
    await mkdir(join(blobFile(sha256(young)), ".."), { recursive: true });
    await writeFile(blobFile(sha256(young)), young);
    const staleTmp = join(cacheDir, "tmp", "crashed-fill");
    const freshTmp = join(cacheDir, "tmp", "fill-in-progress");
    await writeFile(staleTmp, randomBytes(300));
    await utimes(staleTmp, ago(2 * HOUR), ago(2 * HOUR));
    await writeFile(freshTmp, randomBytes(300));

    type GcReport = {
      blobs: { removed: string[] };
      manifests: { removed: string[] };
      tmp: { removed: string[] };
    };
    const dry = await cli(["gc", "--dry-run", "--json"], env);
    assert.equal(dry.code, 0, dry.stderr);
    assert.deepEqual(json<GcReport>(dry).blobs.removed, [orphanDigest]);
    assert.equal(existsSync(blobFile(orphanDigest)), true, "a dry run removes nothing");

    const r = await cli(["gc", "--json"], env);
    assert.equal(r.code, 0, r.stderr);
    const report = json<GcReport & { freedBytes: number }>(r);
    assert.deepEqual(report.blobs.removed, [orphanDigest]);
    assert.deepEqual(report.tmp.removed, ["crashed-fill"]);
    assert.deepEqual(report.manifests.removed, []);
    assert.equal(report.freedBytes, 5000 + 300);
    assert.equal(existsSync(blobFile(orphanDigest)), false);
    assert.equal(existsSync(staleTmp), false);
    assert.equal(existsSync(blobFile(sha256(young))), true, "younger than --min-age");
    assert.equal(existsSync(freshTmp), true, "a fill may still be writing it");
    for (const b of [...alpine.images.flatMap(blobsOf), ...blobsOf(app)]) {
      assert.equal(existsSync(blobFile(b.digest)), true, `referenced ${b.digest} kept`);
    }
  });

  it("purge REPO:TAG removes the tag record, and gc then removes what only that tag reached", async () => {
    const r = await cli(["purge", "team/app:1.0"], env);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^removed tag docker\.io\/team\/app:1\.0 /m);
    assert.equal(existsSync(tagFile("team/app", "1.0")), false);
    assert.equal(
      existsSync(join(cacheDir, "repos", "docker.io", "team", "app")),
      false,
      "no empty directories",
    );
    assert.equal(existsSync(join(cacheDir, "repos", "docker.io", "team", "flaky")), true);

    const none = await cli(["purge", "team/app:1.0"], env);
    assert.equal(none.code, 1, "nothing matched");
    assert.match(none.stderr, /nothing in the cache matches team\/app:1\.0/);

    const g = await cli(["gc", "--min-age", "0s", "--json"], env);
    assert.equal(g.code, 0, g.stderr);
    const report = json<{ blobs: { removed: string[] }; manifests: { removed: string[] } }>(g);
    assert.deepEqual(report.manifests.removed, [app.manifestDigest]);
    assert.deepEqual(report.blobs.removed.sort(), [...blobsOf(app).map((b) => b.digest), youngDigest].sort());
    assert.equal(existsSync(manifestFile(alpine.manifestDigest)), true, "a tagged index stays");
    assert.equal(existsSync(manifestFile(alpineArm.manifestDigest)), true, "and its children");
  });

  it("purge DIGEST removes that blob; purge --older-than removes blobs not read for that long", async () => {
    const victim = alpineArm.layers[1]!.digest;
    const r = await cli(["purge", `library/alpine@${victim}`], env);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, new RegExp(`^removed blob ${victim} `, "m"));
    assert.equal(existsSync(blobFile(victim)), false);

    const old = [alpineArm.config.digest, alpineArm.layers[0]!.digest];
    for (const d of old) await utimes(blobFile(d), ago(40 * 24 * HOUR), ago(40 * 24 * HOUR));
    // skopeo read them above; once the mirror has saved its reads (every minute, so on a slow
    // run before this point), that record says so, and wins over the file times. Age it too.
    const lastRead = join(cacheDir, "state", "last-read.json");
    if (existsSync(lastRead)) {
      const doc = JSON.parse(await readFile(lastRead, "utf8")) as { reads: Record<string, number> };
      for (const d of old)
        doc.reads[d.slice("sha256:".length)] = Math.round(ago(40 * 24 * HOUR).getTime() / 1000);
      await writeFile(lastRead, JSON.stringify(doc));
    }
    const o = await cli(["purge", "--older-than", "30d", "--json"], env);
    assert.equal(o.code, 0, o.stderr);
    const report = json<{
      removed: Array<{ kind: string; name: string; bytes: number }>;
      freedBytes: number;
    }>(o);
    assert.deepEqual(report.removed.map((x) => x.name).sort(), [...old].sort());
    assert.equal(report.freedBytes, alpineArm.config.size + alpineArm.layers[0]!.size);
    assert.equal(existsSync(blobFile(alpineAmd.config.digest)), true, "recently read blobs stay");
  });

  it("purge --repo removes every tag of a repository", async () => {
    await copyFile(tagFile("library/alpine", "3.20"), tagFile("library/alpine", "latest"));
    const r = await cli(["purge", "--repo", "alpine", "--json"], env);
    assert.equal(r.code, 0, r.stderr);
    const report = json<{ removed: Array<{ kind: string; name: string }> }>(r);
    assert.deepEqual(report.removed.map((x) => x.name).sort(), [
      "docker.io/library/alpine:3.20",
      "docker.io/library/alpine:latest",
    ]);
    assert.equal(existsSync(join(cacheDir, "repos", "docker.io", "library", "alpine")), false);
    assert.equal(existsSync(tagFile("library/multi", "1")), true, "other repositories stay");

    const usage = await cli(["purge", "alpine:3.20", "--repo", "alpine"], env);
    assert.equal(usage.code, 2);
  });
});

describe("warm against a mirror with client authentication", () => {
  it("logs in with --user and --password-stdin, and says so when a login is needed", async () => {
    const fake = await startFakeUpstream();
    const work = await mkdtemp(join(tmpdir(), "regmirror-cli-auth-"));
    const img = buildImage();
    addImage(fake, "team/locked", "1", img);
    await writeFile(join(work, "htpasswd"), `alice:${bcrypt.hashSync("wonderland", 4)}\n`);
    const mirror = await startTestMirror(fake.url, { auth: { htpasswd: join(work, "htpasswd") } });
    try {
      const env = { REGMIRROR_CONFIG: join(work, "none.yml") };
      await writeFile(env.REGMIRROR_CONFIG, "");
      const args = ["warm", "--mirror", mirror.url, "team/locked:1"];
      const [anonymous, wrong, ok] = await Promise.all([
        cli(args, env),
        cli([...args, "--user", "alice:hatter"], env),
        cli([...args, "--user", "alice", "--password-stdin"], env, "wonderland\n"),
      ]);
      assert.equal(anonymous.code, 1);
      assert.match(anonymous.stderr, /requires a login: use --user/);
      assert.equal(wrong.code, 1);
      assert.match(wrong.stderr, /refused the credentials/);
      assert.equal(ok.code, 0, ok.stderr);
      assert.match(ok.stdout, /^warmed team\/locked:1: 2 blobs/m);
      const layer = img.layers[0]!.digest.slice(7);
      assert.equal(existsSync(join(mirror.cacheDir, "blobs", "sha256", layer.slice(0, 2), layer)), true);
    } finally {
      await mirror.stop();
      await fake.stop();
      await rm(work, { recursive: true, force: true });
    }
  });
});

describe("warm --direct, with no mirror running", () => {
  it("fills the configured cache directory, so that a mirror started on it pulls nothing upstream", async () => {
    const fake = await startFakeUpstream();
    const work = await mkdtemp(join(tmpdir(), "regmirror-cli-direct-"));
    const index = buildIndex({ platforms: ["linux/amd64", "linux/arm64"] });
    addIndex(fake, "library/app", "2", index);
    const cacheDir = join(work, "cache");
    const env = { REGMIRROR_CONFIG: join(work, "mirror.yml") };
    await writeFile(
      env.REGMIRROR_CONFIG,
      `upstream: { name: fake.test, url: "${fake.url}" }\ncache: { dir: "${cacheDir}" }\n`,
    );
    try {
      const r = await cli(["warm", "--direct", "--json", "library/app:2"], env);
      assert.equal(r.code, 0, r.stderr);
      fake.resetRequests();
      const mirror = await spawnMirror({ REGMIRROR_CONFIG: env.REGMIRROR_CONFIG });
      try {
        const out = join(work, "pulled");
        await skopeo(
          "copy",
          "--all",
          "--src-tls-verify=false",
          `docker://${new URL(mirror.url).host}/library/app:2`,
          `dir:${out}`,
        );
        assert.deepEqual(fake.requests, [], "everything came from the cache warm --direct filled");
      } finally {
        mirror.kill("SIGTERM");
        await mirror.exited;
      }
      assert.equal((await cli(["warm", "--direct", "--mirror", "http://127.0.0.1:1", "x"], env)).code, 2);
    } finally {
      await fake.stop();
      await rm(work, { recursive: true, force: true });
    }
  });
});
