// Hosted repositories with a real Docker daemon (docs/hosted.md, "With Docker"): a private dockerd
// that has the mirror as its registry-mirrors and as an insecure registry. It pulls a mirrored
// image through registry-mirrors, logs in to the mirror, pushes to a hosted repository (the layers
// mounted from the cache when dockerd knows them from the mirror's own name, uploaded when it
// does not), pulls the pushed image back, and after a logout is refused a push. An image made
// locally (docker import) is pushed by real uploads. See test/fixtures/dockerd.ts for how the
// daemon is kept off the internet.
import assert from "node:assert/strict";
import { readFile, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { randomBytes } from "node:crypto";
import { after, before, describe, it } from "node:test";
import bcrypt from "bcryptjs";
import { CommandError } from "../fixtures/client-process.ts";
import { startFakeUpstream, type FakeUpstream } from "../fixtures/fake-upstream.ts";
import { startTestMirror, type TestMirror } from "../fixtures/mirror.ts";
import { addImage, buildImage, sha256, tarWithFile, type BuiltImage } from "../fixtures/images.ts";
import { startDockerd, type Dockerd } from "../fixtures/dockerd.ts";

interface PushedManifest {
  mediaType: string;
  config: { digest: string };
  layers: Array<{ digest: string }>;
}

/** The digest `docker push` prints last: "<tag>: digest: sha256:… size: N". */
function pushedDigest(out: string): string {
  const m = /: digest: (sha256:[a-f0-9]{64}) size: \d+/.exec(out);
  assert.ok(m?.[1], `docker push printed no digest:\n${out}`);
  return m[1];
}

/** The manifest the mirror serves anonymously for repo:ref, checked against its Docker-Content-Digest. */
async function servedManifest(
  mirror: TestMirror,
  repo: string,
  ref: string,
): Promise<{ digest: string; manifest: PushedManifest }> {
  const res = await fetch(`${mirror.url}/v2/${repo}/manifests/${ref}`, {
    headers: { accept: "application/vnd.docker.distribution.manifest.v2+json" },
  });
  const body = Buffer.from(await res.arrayBuffer());
  assert.equal(res.status, 200, `GET /v2/${repo}/manifests/${ref}: ${body.toString()}`);
  const digest = sha256(body);
  assert.equal(res.headers.get("docker-content-digest"), digest);
  return { digest, manifest: JSON.parse(body.toString()) as PushedManifest };
}

describe(
  "hosted repositories with a real Docker daemon",
  // dockerd starts in ~1 s and the whole file runs in ~15 s; the margin is for a loaded machine.
  { timeout: 240_000 },
  () => {
    let fake: FakeUpstream;
    let mirror: TestMirror;
    let dockerd: Dockerd;
    let work: string;
    let base: BuiltImage;
    let tool: BuiltImage;
    let host: string;
    const docker = (...args: string[]) => dockerd.docker(args);

    before(async () => {
      work = await mkdtemp(join(tmpdir(), "regmirror-hosted-docker-"));
      fake = await startFakeUpstream();
      base = buildImage({ layers: 2, format: "docker" });
      addImage(fake, "library/base", "1", base);
      tool = buildImage({ layers: 1, format: "docker" });
      addImage(fake, "library/tool", "1", tool);
      const htpasswd = join(work, "htpasswd");
      await writeFile(htpasswd, `alice:${bcrypt.hashSync("secret", 4)}\n`);
      mirror = await startTestMirror(fake.url, {
        auth: { htpasswd, anonymousPull: true },
        hosted: { repositories: ["local/**"], delete: true },
      });
      host = mirror.host;
      dockerd = await startDockerd({ registryMirrors: [mirror.url], insecureRegistries: [host] });
    });
    after(async () => {
      // Each step on its own, so one failure does not leave the others running.
      await dockerd?.stop().catch((err: unknown) => console.error("dockerd stop:", err));
      await mirror?.stop().catch((err: unknown) => console.error("mirror stop:", err));
      await fake?.stop().catch((err: unknown) => console.error("fake upstream stop:", err));
      if (work !== undefined) await rm(work, { recursive: true, force: true });
    });

    it("pulls a Docker Hub name through registry-mirrors, from the upstream once", async () => {
      fake.resetRequests();
      await docker("pull", "base:1");
      assert.ok(fake.count("GET", "/v2/library/base/manifests/") >= 1, "the manifest came from the upstream");
      for (const b of [base.config, ...base.layers]) {
        const gets = fake.requests.filter(
          (r) => r.method === "GET" && r.path === `/v2/library/base/blobs/${b.digest}`,
        );
        assert.equal(gets.length, 1, `blob ${b.digest} fetched once`);
      }
      const id = (await docker("image", "inspect", "--format", "{{.Id}}", "base:1")).stdout.trim();
      assert.equal(id, base.config.digest, "the image is the upstream's config");
    });

    it("refuses a wrong password", async () => {
      const err = await dockerd
        .docker(["login", host, "-u", "alice", "--password-stdin"], { input: "wrong\n" })
        .then(
          () => undefined,
          (e: unknown) => e,
        );
      assert.ok(err instanceof CommandError, "docker login failed");
      assert.match(err.stderr, /unauthorized|incorrect username or password/i);
    });

    it("logs in with docker login (the credentials stored in its own DOCKER_CONFIG)", async () => {
      const out = await dockerd.docker(["login", host, "-u", "alice", "--password-stdin"], {
        input: "secret\n",
      });
      assert.match(out.stdout, /Login Succeeded/);
      const config = JSON.parse(await readFile(join(dockerd.configDir, "config.json"), "utf8")) as {
        auths?: Record<string, unknown>;
      };
      assert.ok(config.auths?.[host], `config.json has an entry for ${host}`);
    });

    it("pushes a mirrored image to a hosted repository with its layers mounted from the cache", async () => {
      // dockerd mounts only from a repository of the registry it pushes to, so it must know these
      // layers by the mirror's own name: removed, then pulled again as 127.0.0.1:PORT/library/base
      // (from the cache). An image it already has it would only tag, learning nothing.
      await docker("rmi", "base:1");
      fake.resetRequests();
      await docker("pull", `${host}/library/base:1`);
      assert.equal(fake.count("GET", "/v2/library/base/blobs/"), 0, "the blobs came from the cache");

      await docker("tag", `${host}/library/base:1`, `${host}/local/app:1`);
      fake.resetRequests();
      const out = (await docker("push", `${host}/local/app:1`)).stdout;
      for (const l of base.layers) {
        assert.match(out, new RegExp(`${l.diffId.slice(7, 19)}: Mounted from library/base`), out);
      }
      const digest = pushedDigest(out);
      const served = await servedManifest(mirror, "local/app", "1");
      assert.equal(served.digest, digest, "the mirror serves what docker push printed");
      assert.deepEqual(
        served.manifest.layers.map((l) => l.digest),
        base.layers.map((l) => l.digest),
        "the upstream's compressed layers, not recompressed ones",
      );
      assert.equal(served.manifest.config.digest, base.config.digest);
      assert.equal(
        fake.count("GET", "/v2/library/base/blobs/"),
        0,
        "no blob was fetched upstream for the push",
      );
    });

    it("pulls the pushed image back by the mirror's name after docker rmi", async () => {
      const digest = (await servedManifest(mirror, "local/app", "1")).digest;
      // Every tag of the image goes, so the pull must fetch its layers again.
      await docker("rmi", `${host}/library/base:1`, `${host}/local/app:1`);
      await assert.rejects(docker("image", "inspect", base.config.digest), CommandError);
      fake.resetRequests();
      const out = (await docker("pull", `${host}/local/app:1`)).stdout;
      assert.match(out, new RegExp(`Digest: ${digest}`));
      const inspected = JSON.parse(
        (await docker("image", "inspect", "--format", "{{json .}}", `${host}/local/app:1`)).stdout,
      ) as { Id: string; RepoDigests: string[] };
      assert.equal(inspected.Id, base.config.digest);
      assert.deepEqual(inspected.RepoDigests, [`${host}/local/app@${digest}`]);
      assert.equal(fake.requests.length, 0, "a hosted name is never asked of the upstream");
    });

    it("pushes an image pulled only through registry-mirrors by uploading its layers", async () => {
      // dockerd knows tool:1 only as docker.io/library/tool: it mounts only from a repository of the
      // registry it pushes to, so it compresses the layers again and uploads them.
      await docker("pull", "tool:1");
      await docker("tag", "tool:1", `${host}/local/tool:1`);
      fake.resetRequests();
      const out = (await docker("push", `${host}/local/tool:1`)).stdout;
      assert.match(out, /: Pushed/);
      assert.doesNotMatch(out, /Mounted from/);
      const served = await servedManifest(mirror, "local/tool", "1");
      assert.equal(served.digest, pushedDigest(out));
      assert.equal(served.manifest.config.digest, tool.config.digest, "the image's own config");
      assert.equal(served.manifest.layers.length, tool.layers.length);
      assert.equal(fake.requests.length, 0);
    });

    it("pushes an image made locally (docker import): real uploads, pulled back the same", async () => {
      const tarball = join(work, "imported.tar");
      await writeFile(
        tarball,
        tarWithFile("hello.txt", Buffer.from(`hello ${randomBytes(8).toString("hex")}\n`)),
      );
      const ref = `${host}/local/imported:1`;
      await docker("import", tarball, ref);
      const id = (await docker("image", "inspect", "--format", "{{.Id}}", ref)).stdout.trim();
      fake.resetRequests();
      const out = (await docker("push", ref)).stdout;
      assert.match(out, /: Pushed/);
      assert.doesNotMatch(out, /Mounted from/);
      const digest = pushedDigest(out);
      const served = await servedManifest(mirror, "local/imported", "1");
      assert.equal(served.digest, digest);
      assert.equal(served.manifest.config.digest, id);
      assert.equal(served.manifest.layers.length, 1);
      await docker("rmi", ref);
      await docker("pull", ref);
      assert.equal((await docker("image", "inspect", "--format", "{{.Id}}", ref)).stdout.trim(), id);
      assert.equal(fake.requests.length, 0);
    });

    it("refuses a push after docker logout", async () => {
      const out = await docker("logout", host);
      assert.match(out.stdout, /Removing login credentials/);
      const ref = `${host}/local/nologin:1`;
      await docker("tag", `${host}/local/imported:1`, ref);
      const err = await docker("push", ref).then(
        () => undefined,
        (e: unknown) => e,
      );
      assert.ok(err instanceof CommandError, "docker push failed");
      assert.notEqual(err.code, 0);
      assert.match(err.stderr, /unauthorized: authentication required/);
      // A refusal dockerd takes for final: no "Retrying in 5 seconds" (and 50 s) before it gives up.
      assert.doesNotMatch(err.stdout, /Retrying in/, err.stdout);
      const res = await fetch(`${mirror.url}/v2/local/nologin/tags/list`);
      assert.equal(res.status, 404, "nothing was stored");
    });
  },
);
