// podman with the mirror in registries.conf (docs/podman.md), with real podman: a docker.io pull
// goes through the [[registry.mirror]] entry, each blob fetched upstream once (podman first sends a
// TLS ClientHello to the plain-HTTP port, then speaks HTTP); the pulled image is pushed with
// --creds to a hosted repository of the mirror (htpasswd, anonymous pulls allowed) and pulled back
// by the mirror's name with the same image ID. See test/fixtures/podman.ts.
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
import { startPodman, type Podman } from "../fixtures/podman.ts";

describe("podman with the mirror in registries.conf", { timeout: 180_000 }, () => {
  let work: string;
  let fake: FakeUpstream;
  let mirror: TestMirror;
  let pm: Podman;
  let base: BuiltImage;
  const podman = (...args: string[]) => pm.podman(args);
  const imageId = async (ref: string) =>
    (await podman("image", "inspect", "--format", "{{.Id}}", ref)).trim();

  before(async () => {
    work = await mkdtemp(join(tmpdir(), "regmirror-client-podman-"));
    fake = await startFakeUpstream();
    base = buildImage({ layers: 2, format: "docker" });
    addImage(fake, "library/base", "1", base);
    const htpasswd = join(work, "htpasswd");
    await writeFile(htpasswd, `alice:${bcrypt.hashSync("secret", 4)}\n`);
    mirror = await startTestMirror(fake.url, {
      auth: { htpasswd, anonymousPull: true },
      hosted: { repositories: ["local/**"] },
    });
    // docs/podman.md's drop-in, the mirror on 127.0.0.1 (location as in the notes: docker.io).
    pm = await startPodman({
      registriesConf: [
        "unqualified-search-registries = []",
        "",
        "[[registry]]",
        'prefix = "docker.io"',
        'location = "docker.io"',
        "",
        "[[registry.mirror]]",
        `location = "${mirror.host}"`,
        "insecure = true",
        "",
      ].join("\n"),
    });
  });
  after(async () => {
    await pm?.stop().catch((err: unknown) => console.error("podman clean-up:", err));
    await mirror?.stop().catch((err: unknown) => console.error("mirror stop:", err));
    await fake?.stop().catch((err: unknown) => console.error("fake upstream stop:", err));
    if (work !== undefined) await rm(work, { recursive: true, force: true });
  });

  it("pulls docker.io/library/base:1 through the registries.conf mirror, each blob upstream once", async () => {
    fake.resetRequests();
    await podman("pull", "docker.io/library/base:1");
    assert.equal(await imageId("docker.io/library/base:1"), base.config.digest.slice(7));
    for (const b of blobsOf(base)) {
      const up = fake.requests.filter(
        (r) => r.method === "GET" && r.path === `/v2/library/base/blobs/${b.digest}`,
      );
      assert.equal(up.length, 1, `${b.digest} fetched upstream once`);
    }
    const metrics = await mirror.metrics();
    assert.ok(value(metrics, "regmirror_pulls_total", { upstream: "docker.io" }) >= 1);
    assert.equal(
      value(metrics, "regmirror_cache_misses_total", { kind: "blob", upstream: "docker.io" }),
      blobsOf(base).length,
    );
  });

  it("refuses a push without credentials", async () => {
    const err = await podman(
      "push",
      "--tls-verify=false",
      "docker.io/library/base:1",
      `docker://${mirror.host}/local/nologin:1`,
    ).then(
      () => undefined,
      (e: unknown) => e,
    );
    assert.ok(err instanceof CommandError, "podman push failed");
    assert.match(err.stderr, /unauthorized|authentication required/i, err.stderr);
    assert.equal((await fetch(`${mirror.url}/v2/local/nologin/tags/list`)).status, 404);
  });

  it("pushes it with --creds to a hosted repository and pulls it back by the mirror's name", async () => {
    fake.resetRequests();
    await podman(
      "push",
      "--tls-verify=false",
      "--creds",
      "alice:secret",
      "docker.io/library/base:1",
      `docker://${mirror.host}/local/pod:1`,
    );
    const res = await fetch(`${mirror.url}/v2/local/pod/manifests/1`, {
      headers: {
        accept:
          "application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json",
      },
    });
    assert.equal(res.status, 200, "pulled anonymously");
    const manifest = (await res.json()) as { config: { digest: string }; layers: unknown[] };
    assert.equal(manifest.config.digest, base.config.digest, "the image's own config");
    assert.equal(manifest.layers.length, base.layers.length);

    await podman("rmi", "docker.io/library/base:1");
    await assert.rejects(imageId(base.config.digest.slice(7)), CommandError);
    await podman("pull", "--tls-verify=false", `${mirror.host}/local/pod:1`);
    assert.equal(await imageId(`${mirror.host}/local/pod:1`), base.config.digest.slice(7));
    assert.equal(fake.requests.length, 0, "nothing asked of the upstream for a hosted name");
  });
});
