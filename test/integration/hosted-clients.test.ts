// Hosted repositories with real push clients (skopeo, buildah): push with a login, pull back
// anonymously with the same digests, copy a mirrored image into a hosted repository (its blobs
// mounted from the cache), and never a request upstream for a hosted name. Hosted content
// survives eviction by size. docs/hosted.md shows these commands.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { after, before, describe, it } from "node:test";
import bcrypt from "bcryptjs";
import { startFakeUpstream, type FakeUpstream } from "../fixtures/fake-upstream.ts";
import { startTestMirror, type TestMirror } from "../fixtures/mirror.ts";
import { buildImage, sha256, type BuiltImage } from "../fixtures/images.ts";
import { skopeo } from "../fixtures/skopeo.ts";

const execFileP = promisify(execFile);

/** An image in skopeo's dir: layout (manifest.json, one file per blob, version). */
async function writeDirImage(dir: string, img: BuiltImage): Promise<void> {
  await mkdir(dir, { recursive: true });
  await writeFile(join(dir, "version"), "Directory Transport Version: 1.1\n");
  await writeFile(join(dir, "manifest.json"), img.manifest);
  for (const b of [img.config, ...img.layers]) await writeFile(join(dir, b.digest.slice(7)), b.bytes);
}

async function digestOf(ref: string, ...flags: string[]): Promise<string> {
  return sha256(Buffer.from(await skopeo("inspect", "--raw", "--tls-verify=false", ...flags, ref)));
}

describe("hosted repositories with real clients", { timeout: 180_000 }, () => {
  let fake: FakeUpstream;
  let mirror: TestMirror;
  let work: string;
  let buildah: (...args: string[]) => Promise<string>;
  before(async () => {
    fake = await startFakeUpstream();
    work = await mkdtemp(join(tmpdir(), "regmirror-hosted-clients-"));
    const htpasswd = join(work, "htpasswd");
    await writeFile(htpasswd, `alice:${bcrypt.hashSync("secret", 4)}\nbob:${bcrypt.hashSync("pw", 4)}\n`);
    mirror = await startTestMirror(fake.url, {
      auth: { htpasswd, anonymousPull: true },
      hosted: { repositories: ["local/**"], pushers: ["alice"], delete: true },
      // Small enough that the mirrored blobs below overflow it.
      cache: { maxSize: "3MiB" },
    });
    // buildah with storage of its own in the test's directory, and no registries.conf of the host.
    await writeFile(join(work, "registries.conf"), "unqualified-search-registries = []\n");
    buildah = async (...args: string[]) =>
      (
        await execFileP(
          "buildah",
          [
            "--root",
            join(work, "b-root"),
            "--runroot",
            join(work, "b-run"),
            "--storage-driver",
            "vfs",
            ...args,
          ],
          {
            timeout: 60_000,
            env: { ...process.env, CONTAINERS_REGISTRIES_CONF: join(work, "registries.conf") },
          },
        )
      ).stdout.trim();
  });
  after(async () => {
    await mirror.stop();
    await fake.stop();
    await rm(work, { recursive: true, force: true });
  });

  /** skopeo copies `img`, laid out in dir: form in `work/<dirName>`, to `repoTag` as alice. */
  async function pushAsAlice(img: BuiltImage, dirName: string, repoTag: string): Promise<void> {
    const src = join(work, dirName);
    await writeDirImage(src, img);
    await skopeo(
      "copy",
      "--dest-creds",
      "alice:secret",
      "--dest-tls-verify=false",
      `dir:${src}`,
      `docker://${mirror.host}/${repoTag}`,
    );
  }

  it("skopeo pushes with a login and pulls back anonymously: the same digests, nothing upstream", async () => {
    fake.resetRequests();
    const img = buildImage({ layers: 2, format: "oci" });
    await pushAsAlice(img, "src", "local/app:1");
    const back = join(work, "back");
    await skopeo("copy", "--src-tls-verify=false", `docker://${mirror.host}/local/app:1`, `dir:${back}`);
    assert.equal(
      sha256(await readFile(join(back, "manifest.json"))),
      img.manifestDigest,
      "the manifest as pushed",
    );
    for (const b of [img.config, ...img.layers])
      assert.equal(sha256(await readFile(join(back, b.digest.slice(7)))), b.digest);
    assert.equal(await digestOf(`docker://${mirror.host}/local/app:1`), img.manifestDigest);
    const tags = (await (await fetch(`${mirror.url}/v2/local/app/tags/list`)).json()) as { tags: string[] };
    assert.deepEqual(tags.tags, ["1"]);
    assert.equal(fake.requests.length, 0, "a hosted name is never asked of the upstream");
  });

  it("refuses a push without a login, and one by a user who is not a pusher", async () => {
    const img = buildImage({ format: "oci" });
    const src = join(work, "refused");
    await writeDirImage(src, img);
    await assert.rejects(
      skopeo("copy", "--dest-tls-verify=false", `dir:${src}`, `docker://${mirror.host}/local/nologin:1`),
      /unauthorized|authentication required/i,
    );
    await assert.rejects(
      skopeo(
        "copy",
        "--dest-creds",
        "bob:pw",
        "--dest-tls-verify=false",
        `dir:${src}`,
        `docker://${mirror.host}/local/bob:1`,
      ),
      /denied|may not push/i,
    );
    const res = await fetch(`${mirror.url}/v2/local/nologin/tags/list`);
    assert.equal(res.status, 404, "nothing was stored");
  });

  it("buildah pushes an image it built to a hosted repository", async () => {
    const file = join(work, "hello.txt");
    await writeFile(file, `hello ${randomBytes(4).toString("hex")}\n`);
    const ctr = await buildah("from", "scratch");
    await buildah("copy", ctr, file, "/hello.txt");
    await buildah("config", "--cmd", "/hello.txt", ctr);
    await buildah("commit", "-q", ctr, "localhost/built:1");
    await buildah(
      "push",
      "--tls-verify=false",
      "--creds",
      "alice:secret",
      "localhost/built:1",
      `docker://${mirror.host}/local/built:1`,
    );
    const raw = JSON.parse(
      await skopeo("inspect", "--raw", "--tls-verify=false", `docker://${mirror.host}/local/built:1`),
    ) as { layers: unknown[] };
    assert.equal(raw.layers.length, 1);
    const back = join(work, "built-back");
    await skopeo("copy", "--src-tls-verify=false", `docker://${mirror.host}/local/built:1`, `dir:${back}`);
  });

  it("copies a mirrored image into a hosted repository from the cache (mounted, not fetched again)", async () => {
    const img = buildImage({ layers: 2 });
    for (const b of [img.config, ...img.layers]) fake.addBlob(b.bytes);
    fake.addManifest("library/base", "1", img.manifest, img.mediaType);
    await skopeo(
      "copy",
      "--src-tls-verify=false",
      `docker://${mirror.host}/library/base:1`,
      `dir:${join(work, "base")}`,
    );
    fake.resetRequests();
    await skopeo(
      "copy",
      "--src-tls-verify=false",
      "--dest-tls-verify=false",
      "--dest-creds",
      "alice:secret",
      `docker://${mirror.host}/library/base:1`,
      `docker://${mirror.host}/local/base:1`,
    );
    assert.equal(fake.count("GET", "/v2/library/base/blobs/"), 0, "the blobs came from the cache");
    assert.equal(await digestOf(`docker://${mirror.host}/local/base:1`), img.manifestDigest);
  });

  it("keeps hosted content when the cache evicts by size", async () => {
    const img = buildImage({ layers: [randomBytes(1_000_000)], format: "oci" });
    await pushAsAlice(img, "keep", "local/keep:1");
    // Mirrored blobs worth twice cache.maxSize: the cache must evict.
    for (let i = 0; i < 6; i++) {
      const d = fake.addBlob(randomBytes(1_000_000));
      const res = await fetch(`${mirror.url}/v2/library/filler/blobs/${d}`);
      assert.equal(res.status, 200);
      await res.arrayBuffer();
    }
    const metrics = await mirror.metrics();
    const evicted = Number(/^regmirror_evictions_total(?:\{[^}]*\})? (\d+)/m.exec(metrics)?.[1] ?? "0");
    assert.ok(evicted > 0, "the cache evicted mirrored blobs");
    fake.resetRequests();
    const back = join(work, "keep-back");
    await skopeo("copy", "--src-tls-verify=false", `docker://${mirror.host}/local/keep:1`, `dir:${back}`);
    assert.equal(sha256(await readFile(join(back, img.layers[0]!.digest.slice(7)))), img.layers[0]!.digest);
    assert.equal(fake.requests.length, 0);
  });
});
