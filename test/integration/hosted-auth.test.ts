// Who may push to hosted repositories and who may pull: logins through the mirror's own token
// endpoint (GET with Basic, POST with an OAuth2 form), hosted.pushers, auth.anonymousPull with its
// anonymous tokens, and hosted.anonymousPush without logins.
import assert from "node:assert/strict";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import bcrypt from "bcryptjs";
import { startFakeUpstream, type FakeUpstream } from "../fixtures/fake-upstream.ts";
import { addImage, blobsOf, buildImage, MEDIA, sha256 } from "../fixtures/images.ts";
import { startTestMirror, type TestMirror } from "../fixtures/mirror.ts";
import { skopeo } from "../fixtures/skopeo.ts";

type Errors = { errors: Array<{ code: string }> };

const basic = (user: string, password: string) =>
  "Basic " + Buffer.from(`${user}:${password}`).toString("base64");
/** An OCI index of nothing: a manifest push that needs no blobs. */
const EMPTY_INDEX = Buffer.from(
  JSON.stringify({ schemaVersion: 2, mediaType: MEDIA.ociIndex, manifests: [] }),
);

function putIndex(mirror: TestMirror, repo: string, tag: string, authorization?: string): Promise<Response> {
  return fetch(`${mirror.url}/v2/${repo}/manifests/${tag}`, {
    method: "PUT",
    headers: { "content-type": MEDIA.ociIndex, ...(authorization ? { authorization } : {}) },
    body: EMPTY_INDEX,
  });
}

async function tokenByGet(mirror: TestMirror, query: string, authorization?: string): Promise<string> {
  const res = await fetch(`${mirror.url}/auth/token?${query}`, {
    headers: authorization ? { authorization } : {},
  });
  assert.equal(res.status, 200, await res.clone().text());
  const body = (await res.json()) as { token: string; access_token: string; refresh_token?: string };
  assert.equal(body.token, body.access_token);
  assert.equal(body.refresh_token, undefined);
  return `Bearer ${body.token}`;
}

function postToken(mirror: TestMirror, form: string, type = "application/x-www-form-urlencoded") {
  return fetch(`${mirror.url}/auth/token`, { method: "POST", headers: { "content-type": type }, body: form });
}

async function code(res: Response): Promise<string | undefined> {
  return ((await res.json()) as Errors).errors[0]?.code;
}

/** A one-layer image in skopeo's dir: layout. */
async function dirImage(path: string): Promise<void> {
  const img = buildImage({ format: "oci" });
  await mkdir(path, { recursive: true });
  await writeFile(join(path, "version"), "Directory Transport Version: 1.1\n");
  await writeFile(join(path, "manifest.json"), img.manifest);
  for (const b of blobsOf(img)) await writeFile(join(path, b.digest.slice("sha256:".length)), b.bytes);
}

describe("hosted repositories with logins (auth.htpasswd)", () => {
  let work: string;
  let fake: FakeUpstream;
  let mirror: TestMirror;
  let open: TestMirror;
  before(async () => {
    work = await mkdtemp(join(tmpdir(), "regmirror-hosted-auth-"));
    await writeFile(
      join(work, "htpasswd"),
      `alice:${bcrypt.hashSync("wonderland", 4)}\nbob:${bcrypt.hashSync("builder", 4)}\n`,
    );
    fake = await startFakeUpstream();
    addImage(fake, "library/mirrored", "1", buildImage());
    const hosted = { repositories: ["local/*"], pushers: ["alice"] };
    mirror = await startTestMirror(fake.url, { auth: { htpasswd: join(work, "htpasswd") }, hosted });
    open = await startTestMirror(fake.url, {
      auth: { htpasswd: join(work, "htpasswd"), anonymousPull: true },
      hosted,
    });
  });
  after(async () => {
    await mirror?.stop();
    await open?.stop();
    await fake?.stop();
    await rm(work, { recursive: true, force: true });
  });

  it("answers a push without a login with 401 and a challenge naming the push scope", async () => {
    for (const m of [mirror, open]) {
      const res = await putIndex(m, "local/x", "v1");
      assert.equal(res.status, 401);
      assert.equal(
        res.headers.get("www-authenticate"),
        `Bearer realm="${m.url}/auth/token",service="regmirror",scope="repository:local/x:pull,push"`,
      );
      assert.equal(await code(res), "UNAUTHORIZED");
      const del = await fetch(`${m.url}/v2/local/x/manifests/v1`, { method: "DELETE" });
      assert.equal(del.status, 401);
      assert.match(del.headers.get("www-authenticate") ?? "", /,scope="repository:local\/x:delete"$/);
    }
  });

  it("takes a push with a token fetched by GET with Basic, and serves it back", async () => {
    const token = await tokenByGet(
      mirror,
      "service=regmirror&scope=repository:local/x:pull,push&scope=repository:library/mirrored:pull",
      basic("alice", "wonderland"),
    );
    const res = await putIndex(mirror, "local/x", "v1", token);
    assert.equal(res.status, 201, await res.text());
    assert.equal(res.headers.get("docker-content-digest"), sha256(EMPTY_INDEX));
    const got = await fetch(`${mirror.url}/v2/local/x/manifests/v1`, {
      headers: { authorization: token, accept: MEDIA.ociIndex },
    });
    assert.equal(got.status, 200);
    assert.deepEqual(Buffer.from(await got.arrayBuffer()), EMPTY_INDEX);
    const anonymous = await fetch(`${mirror.url}/v2/local/x/manifests/v1`);
    assert.equal(anonymous.status, 401, "without anonymousPull a pull needs a login too");
    assert.match(anonymous.headers.get("www-authenticate") ?? "", /,scope="repository:local\/x:pull"$/);
  });

  it("refuses a user who is not in hosted.pushers with 403 DENIED, and lets them pull", async () => {
    const token = await tokenByGet(mirror, "scope=repository:local/x:pull,push", basic("bob", "builder"));
    const res = await putIndex(mirror, "local/x", "bob", token);
    assert.equal(res.status, 403);
    assert.equal(await code(res), "DENIED");
    const byBasic = await putIndex(mirror, "local/x", "bob", basic("bob", "builder"));
    assert.equal(byBasic.status, 403, "Basic on the request itself is no way around it");
    const pull = await fetch(`${mirror.url}/v2/library/mirrored/manifests/1`, {
      headers: { authorization: token },
    });
    assert.equal(pull.status, 200);
  });

  it("issues tokens by POST with an OAuth2 form (containerd), and refuses what it does not issue", async () => {
    const form = new URLSearchParams({
      grant_type: "password",
      username: "alice",
      password: "wonderland",
      client_id: "containerd-client",
      service: "regmirror",
      scope: "repository:local/y:pull,push repository:library/mirrored:pull",
    });
    const res = await postToken(mirror, form.toString());
    assert.equal(res.status, 200);
    const { access_token } = (await res.json()) as { access_token: string };
    assert.equal((await putIndex(mirror, "local/y", "v1", `Bearer ${access_token}`)).status, 201);

    form.set("password", "wrong");
    assert.equal((await postToken(mirror, form.toString())).status, 401);
    // No refresh tokens are issued, so none is taken: containerd falls back to GET on a 400.
    const refresh = await postToken(mirror, "grant_type=refresh_token&refresh_token=x&service=regmirror");
    assert.equal(refresh.status, 400);
    assert.equal(
      (await postToken(mirror, JSON.stringify({ username: "alice" }), "application/json")).status,
      400,
    );
    const big = await postToken(mirror, `grant_type=password&username=alice&password=${"x".repeat(20_000)}`);
    assert.equal(big.status, 413);
  });

  it("gives docker login's offline_token request a token and no refresh token", async () => {
    await tokenByGet(
      mirror,
      "account=alice&client_id=docker&offline_token=true&service=regmirror",
      basic("alice", "wonderland"),
    );
    const wrong = await fetch(`${mirror.url}/auth/token?account=alice&client_id=docker&offline_token=true`, {
      headers: { authorization: basic("alice", "nope") },
    });
    assert.equal(wrong.status, 401);
    const none = await fetch(`${mirror.url}/auth/token?service=regmirror`);
    assert.equal(none.status, 401, "no anonymous tokens without anonymousPull");
  });

  it("anonymousPull: pulls without credentials, /v2/ still challenges, anonymous tokens pull and never push", async () => {
    const pull = await fetch(`${open.url}/v2/library/mirrored/manifests/1`);
    assert.equal(pull.status, 200, "a mirrored name");
    const base = await fetch(`${open.url}/v2/`);
    assert.equal(base.status, 401);
    assert.equal(
      base.headers.get("www-authenticate"),
      `Bearer realm="${open.url}/auth/token",service="regmirror"`,
    );
    // dockerd's registry-mirrors flow: the ping's challenge, a token without credentials, pulls.
    const anonymous = await tokenByGet(open, "scope=repository:library/mirrored:pull&service=regmirror");
    for (const path of ["/v2/", "/v2/library/mirrored/manifests/1", "/v2/_catalog"]) {
      const res = await fetch(open.url + path, { headers: { authorization: anonymous } });
      assert.equal(res.status, 200, path);
    }
    const push = await putIndex(open, "local/x", "anon", anonymous);
    assert.equal(push.status, 401, "an anonymous token is no login");
    assert.match(push.headers.get("www-authenticate") ?? "", /,scope="repository:local\/x:pull,push"$/);
    // Asking for push scope without credentials still gives only an anonymous token.
    const asked = await tokenByGet(open, "scope=repository:local/x:pull,push");
    assert.equal((await putIndex(open, "local/x", "anon", asked)).status, 401);
    // A Docker Hub login sent along with a pull-only request does not matter.
    await tokenByGet(open, "scope=repository:library/mirrored:pull", basic("hubuser", "hubpass"));

    const alice = await tokenByGet(open, "scope=repository:local/x:pull,push", basic("alice", "wonderland"));
    assert.equal((await putIndex(open, "local/x", "v1", alice)).status, 201);
    const hosted = await fetch(`${open.url}/v2/local/x/manifests/v1`, {
      headers: { accept: MEDIA.ociIndex },
    });
    assert.equal(hosted.status, 200, "a hosted name pulls without credentials too");
    const byAnonymous = await fetch(`${open.url}/v2/local/x/manifests/v1`, {
      headers: { authorization: anonymous, accept: MEDIA.ociIndex },
    });
    assert.equal(byAnonymous.status, 200);
    assert.equal(
      (await fetch(`${mirror.url}/v2/local/x/manifests/v1`, { headers: { authorization: anonymous } }))
        .status,
      401,
      "another mirror without anonymousPull does not take an anonymous token",
    );
    // A real client through the whole anonymous flow: ping, 401, token without credentials, pull.
    const raw = await skopeo("inspect", "--raw", "--tls-verify=false", `docker://${open.host}/local/x:v1`);
    assert.equal(raw, EMPTY_INDEX.toString());
  });

  it("lets skopeo log in through the token endpoint, and refuses it without a login or as a non-pusher", async () => {
    const ref = `docker://${mirror.host}/local/x:v1`;
    const raw = await skopeo("inspect", "--raw", "--tls-verify=false", "--creds", "alice:wonderland", ref);
    assert.equal(raw, EMPTY_INDEX.toString());
    await assert.rejects(
      skopeo("inspect", "--raw", "--tls-verify=false", ref),
      /unauthorized|authentication required/i,
    );
    await assert.rejects(
      skopeo("inspect", "--raw", "--tls-verify=false", "--creds", "alice:wrong", ref),
      /unauthorized|authentication required|incorrect username or password/i,
    );
    const src = join(work, "image");
    await dirImage(src);
    const copy = (...creds: string[]) =>
      skopeo(
        "copy",
        "--dest-tls-verify=false",
        ...creds,
        `dir:${src}`,
        `docker://${mirror.host}/local/skopeo:1`,
      );
    await assert.rejects(copy(), /unauthorized|authentication required/i);
    await assert.rejects(copy("--dest-creds", "bob:builder"), /denied/i);
  });
});

describe("hosted repositories without logins", () => {
  let fake: FakeUpstream;
  let closed: TestMirror;
  let trusted: TestMirror;
  before(async () => {
    fake = await startFakeUpstream();
    addImage(fake, "library/mirrored", "1", buildImage());
    closed = await startTestMirror(fake.url, { hosted: { repositories: ["local/*"] } });
    trusted = await startTestMirror(fake.url, { hosted: { repositories: ["local/*"], anonymousPush: true } });
  });
  after(async () => {
    await closed?.stop();
    await trusted?.stop();
    await fake?.stop();
  });

  it("refuses pushes with DENIED, and pulls stay open", async () => {
    const res = await putIndex(closed, "local/x", "v1");
    assert.equal(res.status, 403);
    assert.equal(await code(res), "DENIED");
    assert.equal((await fetch(`${closed.url}/v2/`)).status, 200);
    assert.equal((await fetch(`${closed.url}/v2/library/mirrored/manifests/1`)).status, 200);
    assert.equal((await fetch(`${closed.url}/auth/token`)).status, 404, "no token endpoint without logins");
  });

  it("takes pushes from anyone with hosted.anonymousPush", async () => {
    assert.equal((await putIndex(trusted, "local/x", "v1")).status, 201);
    const got = await fetch(`${trusted.url}/v2/local/x/manifests/v1`, {
      headers: { accept: MEDIA.ociIndex },
    });
    assert.equal(got.status, 200);
  });
});
