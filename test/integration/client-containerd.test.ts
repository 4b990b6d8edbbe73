// containerd with the mirror in a hosts.toml (docs/containerd.md), with a real containerd and ctr:
// a docker.io pull goes through the mirror with ?ns=docker.io and no /v2/ ping, each blob fetched
// upstream once; pulled again after `ctr images rm`, it comes from the cache. A mirror that needs a
// login works with an Authorization header in hosts.toml and is skipped without one. An image pushed
// to a hosted repository pulls by the mirror's own name, as the hosts.toml's server and as a
// [host] entry (then with ?ns=<the mirror's host>). See test/fixtures/containerd.ts.
import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import bcrypt from "bcryptjs";
import { CommandError } from "../fixtures/client-process.ts";
import { startFakeUpstream, type FakeUpstream } from "../fixtures/fake-upstream.ts";
import { startTestMirror, type TestMirror } from "../fixtures/mirror.ts";
import { addImage, blobsOf, buildImage, type BuiltImage } from "../fixtures/images.ts";
import { value } from "../fixtures/metrics.ts";
import { startRecorder, type Recorder } from "../fixtures/recorder.ts";
import { startContainerd, type Containerd } from "../fixtures/containerd.ts";

/** docs/containerd.md's hosts.toml for docker.io, the mirror at `url`. */
const hubHosts = (url: string, header = ""): string =>
  `server = "https://registry-1.docker.io"\n\n[host."${url}"]\n  capabilities = ["pull", "resolve"]\n${header}`;

/** Pushes a built image to a hosted repository: one monolithic POST per blob, then the manifest. */
async function pushHosted(mirror: TestMirror, repo: string, tag: string, img: BuiltImage): Promise<void> {
  for (const b of blobsOf(img)) {
    const up = await fetch(`${mirror.url}/v2/${repo}/blobs/uploads/?digest=${b.digest}`, {
      method: "POST",
      body: new Uint8Array(b.bytes),
    });
    assert.equal(up.status, 201, await up.text());
  }
  const put = await fetch(`${mirror.url}/v2/${repo}/manifests/${tag}`, {
    method: "PUT",
    body: new Uint8Array(img.manifest),
    headers: { "content-type": img.mediaType },
  });
  assert.equal(put.status, 201, await put.text());
}

/** "METHOD /path?query" of each request the recorder saw, the query decoded (containerd sends ns=127.0.0.1%3A5555). */
const requestLines = (r: Recorder): string[] =>
  r.requests.map((q) => `${q.method} ${decodeURIComponent(q.url)}`);

/** The image names `ctr images ls -q` lists. */
async function images(c: Containerd): Promise<string[]> {
  return (await c.ctr(["images", "ls", "-q"])).split("\n").filter((l) => l !== "");
}

describe("containerd (ctr) with the mirror in hosts.toml", { timeout: 180_000 }, () => {
  let work: string;
  let fake: FakeUpstream;
  let mirror: TestMirror;
  let locked: TestMirror;
  let recorder: Recorder;
  let containerd: Containerd;
  let base: BuiltImage;
  let tool: BuiltImage;

  before(async () => {
    work = await mkdtemp(join(tmpdir(), "regmirror-client-containerd-"));
    fake = await startFakeUpstream();
    base = buildImage({ layers: 2, format: "docker" });
    addImage(fake, "library/base", "1", base);
    fake.addManifest("library/base", "2", base.manifest, base.mediaType);
    tool = buildImage({ layers: 1, format: "docker" });
    addImage(fake, "library/tool", "1", tool);
    mirror = await startTestMirror(fake.url, { hosted: { repositories: ["local/**"], anonymousPush: true } });
    const htpasswd = join(work, "htpasswd");
    await writeFile(htpasswd, `alice:${bcrypt.hashSync("secret", 4)}\n`);
    locked = await startTestMirror(fake.url, { auth: { htpasswd } });
    // The mirror keeps no per-request record: this passes containerd's requests through to it
    // and keeps their URLs, ?ns= included.
    recorder = await startRecorder(mirror.url);
    containerd = await startContainerd();
  });
  after(async () => {
    await containerd?.stop().catch((err: unknown) => console.error("containerd stop:", err));
    await recorder?.stop().catch((err: unknown) => console.error("recorder stop:", err));
    await mirror?.stop().catch((err: unknown) => console.error("mirror stop:", err));
    await locked?.stop().catch((err: unknown) => console.error("mirror stop:", err));
    await fake?.stop().catch((err: unknown) => console.error("fake upstream stop:", err));
    if (work !== undefined) await rm(work, { recursive: true, force: true });
  });

  it("pulls docker.io/library/base:1 through the mirror: ?ns=docker.io, no /v2/ ping, each blob upstream once", async () => {
    await containerd.writeHosts("docker.io", hubHosts(recorder.url));
    fake.resetRequests();
    recorder.reset();
    await containerd.pull("docker.io/library/base:1");
    assert.ok((await images(containerd)).includes("docker.io/library/base:1"));

    const seen = requestLines(recorder);
    assert.equal(seen[0], "HEAD /v2/library/base/manifests/1?ns=docker.io", seen.join("\n"));
    assert.ok(
      recorder.requests.every((r) => new URL(r.url, "http://x").searchParams.get("ns") === "docker.io"),
      seen.join("\n"),
    );
    assert.ok(!recorder.requests.some((r) => r.url.split("?")[0] === "/v2/"), "no /v2/ ping");
    for (const b of blobsOf(base)) {
      assert.ok(
        seen.includes(`GET /v2/library/base/blobs/${b.digest}?ns=docker.io`),
        `${b.digest} via the mirror`,
      );
      const up = fake.requests.filter(
        (r) => r.method === "GET" && r.path === `/v2/library/base/blobs/${b.digest}`,
      );
      assert.equal(up.length, 1, `${b.digest} fetched upstream once`);
    }
    assert.ok(fake.count("GET", "/v2/library/base/manifests/") >= 1, "the manifest came from the upstream");
    const metrics = await mirror.metrics();
    assert.equal(value(metrics, "regmirror_pulls_total", { upstream: "docker.io" }), 1);
  });

  it("after ctr images rm, a pull of another tag of the same image gets every blob from the cache", async () => {
    await containerd.ctr(["images", "rm", "--sync", "docker.io/library/base:1"]);
    const left = await containerd.contentDigests();
    for (const b of blobsOf(base)) assert.ok(!left.includes(b.digest), `containerd let ${b.digest} go`);
    fake.resetRequests();
    recorder.reset();
    await containerd.pull("docker.io/library/base:2");
    const seen = requestLines(recorder);
    for (const b of blobsOf(base)) {
      assert.ok(seen.includes(`GET /v2/library/base/blobs/${b.digest}?ns=docker.io`), seen.join("\n"));
    }
    assert.equal(fake.count("GET", "/v2/library/base/blobs/"), 0, "no blob GET upstream");
    assert.ok((await containerd.contentDigests()).includes(base.manifestDigest));
  });

  it("a mirror that needs a login: skipped without credentials, used with an Authorization header", async () => {
    await containerd.writeHosts("docker.io", hubHosts(locked.url));
    fake.resetRequests();
    // 401 from the mirror: containerd goes on to server, which fails on loopback in the namespace.
    const err = await containerd.pull("docker.io/library/tool:1").then(
      () => undefined,
      (e: unknown) => e,
    );
    assert.ok(err instanceof CommandError, "the pull failed");
    assert.match(err.stderr, /registry-1\.docker\.io/, err.stderr);
    assert.equal(fake.requests.length, 0, "the locked mirror asked nothing upstream");

    const basic = Buffer.from("alice:secret").toString("base64");
    await containerd.writeHosts(
      "docker.io",
      hubHosts(locked.url, `  [host."${locked.url}".header]\n    Authorization = "Basic ${basic}"\n`),
    );
    await containerd.pull("docker.io/library/tool:1");
    assert.ok((await images(containerd)).includes("docker.io/library/tool:1"));
    for (const b of blobsOf(tool)) {
      const up = fake.requests.filter(
        (r) => r.method === "GET" && r.path === `/v2/library/tool/blobs/${b.digest}`,
      );
      assert.equal(up.length, 1, `${b.digest} fetched upstream once, through the locked mirror`);
    }
  });

  it("pulls an image pushed to a hosted repository, with the mirror as the hosts.toml's server", async () => {
    const app = buildImage({ layers: 2, format: "docker" });
    await pushHosted(mirror, "local/app", "1", app);
    await containerd.writeHosts(mirror.host, `server = "${mirror.url}"\n`);
    fake.resetRequests();
    await containerd.pull("--plain-http", `${mirror.host}/local/app:1`);
    const ls = await containerd.ctr(["images", "ls"]);
    assert.match(ls, new RegExp(`${mirror.host}/local/app:1\\s+\\S+\\s+${app.manifestDigest}`), ls);
    for (const b of blobsOf(app)) assert.ok((await containerd.contentDigests()).includes(b.digest));
    assert.equal(fake.requests.length, 0, "a hosted name is never asked of the upstream");
  });

  it("pulls a hosted image through a [host] entry for the mirror's own name: ?ns=<the mirror's host> stays hosted", async () => {
    const app = buildImage({ layers: 1, format: "oci" });
    await pushHosted(mirror, "local/app", "2", app);
    // The [host] entry alone can serve the pull: the server (port 1) answers nothing.
    await containerd.writeHosts(
      mirror.host,
      `server = "http://127.0.0.1:1"\n\n[host."${mirror.url}"]\n  capabilities = ["pull", "resolve"]\n`,
    );
    fake.resetRequests();
    await containerd.pull("--plain-http", `${mirror.host}/local/app:2`);
    assert.ok((await containerd.contentDigests()).includes(app.manifestDigest));
    assert.equal(fake.requests.length, 0);

    // The same through the recorder, to see the ns containerd sends for a [host] entry.
    const app3 = buildImage({ layers: 1, format: "docker" });
    await pushHosted(mirror, "local/app", "3", app3);
    await containerd.writeHosts(
      mirror.host,
      `server = "http://127.0.0.1:1"\n\n[host."${recorder.url}"]\n  capabilities = ["pull", "resolve"]\n`,
    );
    recorder.reset();
    await containerd.pull("--plain-http", `${mirror.host}/local/app:3`);
    const seen = requestLines(recorder);
    assert.equal(seen[0], `HEAD /v2/local/app/manifests/3?ns=${mirror.host}`, seen.join("\n"));
    for (const b of blobsOf(app3)) {
      assert.ok(seen.includes(`GET /v2/local/app/blobs/${b.digest}?ns=${mirror.host}`), seen.join("\n"));
    }
    assert.equal(fake.requests.length, 0);
  });
});
