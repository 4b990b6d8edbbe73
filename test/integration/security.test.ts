// Clients' access to the mirror: htpasswd logins through the standard token challenge, HTTPS
// with certificate reload, repository allow/deny lists, and a per-client bound.
import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile, rename } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import bcrypt from "bcryptjs";
import { Agent, request } from "undici";
import { startUpstream, type Upstream } from "../fixtures/upstream.ts";
import { startFakeUpstream } from "../fixtures/fake-upstream.ts";
import { pushImage, type BuiltImage } from "../fixtures/images.ts";
import { startTestMirror, type TestMirror } from "../fixtures/mirror.ts";
import { skopeo } from "../fixtures/skopeo.ts";
import { makeCert, peerCommonName } from "../fixtures/tls.ts";

describe("client authentication and TLS", () => {
  let up: Upstream;
  let mirror: TestMirror;
  let work: string;
  let image: BuiltImage;
  before(async () => {
    work = await mkdtemp(join(tmpdir(), "regmirror-sec-"));
    up = await startUpstream({ auth: "none" });
    image = await pushImage(up, "library/locked", "1", { layers: 1 });
    await writeFile(join(work, "htpasswd"), `alice:${bcrypt.hashSync("wonderland", 4)}\n`);
    const { cert, key } = makeCert(work, "first");
    mirror = await startTestMirror(up.url, {
      auth: { htpasswd: join(work, "htpasswd") },
      tls: { cert, key },
    });
  });
  after(async () => {
    await mirror?.stop();
    await up?.stop();
    await rm(work, { recursive: true, force: true });
  });

  it("challenges an anonymous client with a Bearer realm on the mirror itself", async () => {
    for (const path of ["/v2/", "/v2/library/locked/manifests/1"]) {
      const res = await fetch(mirror.url + path);
      assert.equal(res.status, 401, path);
      const challenge = res.headers.get("www-authenticate") ?? "";
      assert.match(challenge, new RegExp(`^Bearer realm="${mirror.url}/auth/token",service="regmirror"`));
      const body = (await res.json()) as { errors: Array<{ code: string }> };
      assert.equal(body.errors[0]!.code, "UNAUTHORIZED");
    }
    const token = await fetch(`${mirror.url}/auth/token?service=regmirror`, {
      headers: { authorization: "Basic " + Buffer.from("alice:wrong").toString("base64") },
    });
    assert.equal(token.status, 401);
  });

  it("lets skopeo pull with --src-creds, and refuses it without", async () => {
    const ref = `docker://${mirror.host}/library/locked:1`;
    await skopeo(
      "copy",
      "--src-tls-verify=false",
      "--src-creds",
      "alice:wonderland",
      ref,
      `dir:${join(work, "ok")}`,
    );
    await assert.rejects(
      skopeo("copy", "--src-tls-verify=false", ref, `dir:${join(work, "no")}`),
      /unauthorized|authentication required/i,
    );
  });

  it("serves HTTPS too, to skopeo and by token", async () => {
    const host = new URL(mirror.tlsUrl!).host;
    const raw = await skopeo(
      "inspect",
      "--raw",
      "--tls-verify=false",
      "--creds",
      "alice:wonderland",
      `docker://${host}/library/locked:1`,
    );
    assert.equal(raw, image.manifest.toString());
    const dispatcher = new Agent({ connect: { rejectUnauthorized: false } });
    const tok = await request(`${mirror.tlsUrl}/auth/token`, {
      dispatcher,
      headers: { authorization: "Basic " + Buffer.from("alice:wonderland").toString("base64") },
    });
    const { token } = (await tok.body.json()) as { token: string };
    const res = await request(`${mirror.tlsUrl}/v2/library/locked/manifests/1`, {
      dispatcher,
      headers: { authorization: `Bearer ${token}` },
    });
    assert.equal(res.statusCode, 200);
    await res.body.dump();
    await dispatcher.close();
  });

  it("reloads the certificate (SIGHUP)", async () => {
    assert.equal(await peerCommonName(mirror.tlsUrl!), "first");
    const second = makeCert(work, "second");
    await rename(second.cert, join(work, "first.crt"));
    await rename(second.key, join(work, "first.key"));
    mirror.reloadTls();
    assert.equal(await peerCommonName(mirror.tlsUrl!), "second");
  });
});

describe("repository allow and deny lists", () => {
  it("denies what is not allowed, with DENIED", async () => {
    const fake = await startFakeUpstream();
    const mirror = await startTestMirror(fake.url, {
      access: { allow: ["library/*", "myorg/*"], deny: ["library/secret*"] },
    });
    try {
      const type = "application/vnd.oci.image.manifest.v1+json";
      for (const repo of ["library/ok", "myorg/a/b", "library/secret-thing", "other/x"]) {
        fake.addManifest(
          repo,
          "1",
          Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: type, layers: [], r: repo })),
          type,
        );
      }
      const status = async (repo: string) => (await fetch(`${mirror.url}/v2/${repo}/manifests/1`)).status;
      assert.equal(await status("library/ok"), 200);
      assert.equal(await status("ok"), 200, "short names are checked after library/ is added");
      assert.equal(await status("myorg/a/b"), 200);
      assert.equal(await status("library/secret-thing"), 403);
      assert.equal(await status("other/x"), 403);
      const res = await fetch(`${mirror.url}/v2/other/x/blobs/sha256:${"a".repeat(64)}`);
      assert.equal(((await res.json()) as { errors: Array<{ code: string }> }).errors[0]!.code, "DENIED");
      assert.equal(fake.count("*", "/v2/other/"), 0, "a denied request never reaches the upstream");
    } finally {
      await mirror.stop();
      await fake.stop();
    }
  });
});

describe("per-client bound", () => {
  it("answers 429 past limits.perClient requests in flight from one address", async () => {
    const fake = await startFakeUpstream();
    const mirror = await startTestMirror(fake.url, { limits: { perClient: 4 } });
    try {
      fake.behave("*", { hang: true });
      const hanging = Array.from({ length: 4 }, () =>
        request(`${mirror.url}/v2/library/h/manifests/1`).catch(() => undefined),
      );
      await new Promise((r) => setTimeout(r, 200));
      const fifth = await fetch(`${mirror.url}/v2/`);
      assert.equal(fifth.status, 429);
      assert.equal(
        ((await fifth.json()) as { errors: Array<{ code: string }> }).errors[0]!.code,
        "TOOMANYREQUESTS",
      );
      await fake.stop(); // ends the hanging upstream requests, so the mirror's answers end too
      await Promise.all(hanging);
    } finally {
      await mirror.stop();
      await fake.stop();
    }
  });
});
