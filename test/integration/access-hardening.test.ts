// Hardening of client access: hostile names and headers never end the process, logins are
// checked off the event loop and limited per client, forwarded addresses count only from
// trusted proxies, and every answer carries nosniff.
import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import bcrypt from "bcryptjs";
import { request } from "undici";
import { startFakeUpstream, type FakeUpstream } from "../fixtures/fake-upstream.ts";
import { spawnMirror, type MirrorProcess } from "../fixtures/mirror-process.ts";
import { startMirror, type Running } from "../../src/start.ts";
import { validateConfig } from "../../src/config/validate.ts";

const HEX = "a".repeat(64);
const TYPE = "application/vnd.oci.image.manifest.v1+json";
const basic = (user: string, password: string) =>
  "Basic " + Buffer.from(`${user}:${password}`).toString("base64");
type Body = { errors: Array<{ code: string }> };

/** One request written byte for byte: fetch and undici refuse to send most of these. */
function raw(url: string, head: string): Promise<{ status: number; head: string; body: string }> {
  const port = Number(new URL(url).port);
  return new Promise((resolve, reject) => {
    const s = connect(port, "127.0.0.1", () => s.write(`${head}\r\nConnection: close\r\n\r\n`, "latin1"));
    const chunks: Buffer[] = [];
    s.on("data", (c: Buffer) => chunks.push(c));
    s.on("error", reject);
    s.on("close", () => {
      const text = Buffer.concat(chunks).toString("latin1");
      const end = text.indexOf("\r\n\r\n");
      resolve({
        status: Number(/^HTTP\/1\.1 (\d{3})/.exec(text)?.[1] ?? 0),
        head: text.slice(0, end),
        body: text.slice(end + 4),
      });
    });
  });
}

function addImage(fake: FakeUpstream, repo: string): void {
  fake.addManifest(
    repo,
    "1",
    Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: TYPE, layers: [] })),
    TYPE,
  );
}

/** An in-process mirror with the top-level and auth settings startTestMirror does not take. */
async function startWith(
  upstreamUrl: string,
  settings: { auth?: Record<string, unknown>; trustedProxies?: string[]; limits?: Record<string, unknown> },
): Promise<Running & { dir: string }> {
  const dir = await mkdtemp(join(tmpdir(), "regmirror-access-"));
  const config = validateConfig({
    listen: "127.0.0.1:0",
    upstream: { url: upstreamUrl },
    cache: { dir },
    auth: settings.auth ?? {},
    trustedProxies: settings.trustedProxies ?? [],
    limits: settings.limits ?? {},
    log: { level: "error", format: "text" },
    // Requests left hanging on purpose must not hold up close().
    shutdownTimeout: "1s",
  });
  return { ...(await startMirror(config, { processMetrics: false })), dir };
}

describe("a mirror process with logins on", () => {
  let fake: FakeUpstream;
  let mirror: MirrorProcess;
  let work: string;
  before(async () => {
    work = await mkdtemp(join(tmpdir(), "regmirror-access-"));
    fake = await startFakeUpstream();
    addImage(fake, "library/good");
    await writeFile(join(work, "htpasswd"), `alice:${bcrypt.hashSync("wonderland", 10)}\n`);
    mirror = await spawnMirror({
      REGMIRROR_UPSTREAM: fake.url,
      REGMIRROR_CACHE_DIR: join(work, "cache"),
      REGMIRROR_AUTH_HTPASSWD: join(work, "htpasswd"),
      // The failed-login limit is tested below; here bad logins must all be checked.
      REGMIRROR_AUTH_MAX_FAILED_LOGINS: "1000",
    });
  });
  after(async () => {
    mirror?.kill("SIGKILL");
    await mirror?.exited;
    await fake?.stop();
    await rm(work, { recursive: true, force: true });
  });

  it("answers hostile names and Host headers with registry errors and stays up", async () => {
    const names = [
      "a%01b",
      "%C4%80",
      "a%C4%80b/c",
      'a"b',
      "a%22b",
      "a%22%2C%20scope%3D%22x",
      "a%0D%0Ab",
      "a%7Fb",
    ];
    const kinds = ["manifests/latest", `blobs/sha256:${HEX}`, "tags/list"];
    const requests: string[] = [];
    for (const name of names) {
      for (const kind of kinds) {
        for (const method of ["GET", "HEAD"])
          requests.push(`${method} /v2/${name}/${kind} HTTP/1.1\r\nHost: x`);
      }
    }
    // Written as Latin-1, as Node reads header bytes: "\u00c4\u0080" is the UTF-8 of "\u0100".
    const hosts = ['a"b', 'h", scope="repository:x:push', "\u00c4\u0080", "h\u00e9st", "h\tst", ""];
    for (const host of hosts) {
      for (const method of ["GET", "HEAD"]) {
        requests.push(`${method} /v2/ HTTP/1.1\r\nHost: ${host}`);
        requests.push(`${method} /v2/library/good/manifests/1 HTTP/1.1\r\nHost: ${host}`);
      }
    }
    for (const head of requests) {
      const res = await raw(mirror.url, head);
      assert.ok(res.status >= 400 && res.status < 500, `${JSON.stringify(head)} → ${res.status}`);
      if (head.startsWith("GET")) {
        const body = JSON.parse(res.body) as Body;
        assert.ok(body.errors[0]!.code, `${JSON.stringify(head)}: a registry error body`);
      }
      const challenge = /^www-authenticate: (.*)$/im.exec(res.head)?.[1];
      if (challenge !== undefined) {
        assert.match(challenge, /^Bearer realm="http:\/\/[A-Za-z0-9.:-]+\/auth\/token",service="regmirror"/);
      }
    }
    assert.equal(mirror.child.exitCode, null, `the process is up: ${mirror.stderr()}`);
    const good = await fetch(`${mirror.url}/v2/library/good/manifests/1`, {
      headers: { authorization: basic("alice", "wonderland") },
    });
    assert.equal(good.status, 200);
    assert.equal(good.headers.get("x-content-type-options"), "nosniff");
  });

  it("answers /healthz while failed logins are being checked", async () => {
    const n = 12;
    let settled = 0;
    const logins = Array.from({ length: n }, (_, i) =>
      request(`${mirror.url}/auth/token`, { headers: { authorization: basic("alice", `wrong-${i}`) } }).then(
        async (res) => {
          await res.body.dump();
          settled++;
          return res.statusCode;
        },
      ),
    );
    // Once one answer is back, the others are surely in the server: checked on its event loop,
    // they would all be answered before /healthz is even read.
    while (settled === 0) await new Promise((r) => setTimeout(r, 5));
    const health = await fetch(`${mirror.url}/healthz`);
    const settledAtHealth = settled;
    assert.equal(health.status, 200);
    assert.deepEqual(await Promise.all(logins), Array(n).fill(401));
    assert.ok(settledAtHealth < n / 2, `/healthz answered after ${settledAtHealth} of ${n} logins`);
  });

  it("sends X-Content-Type-Options: nosniff on every response", async () => {
    const auth = { authorization: basic("alice", "wonderland") };
    const blob = fake.addBlob(Buffer.from("a blob, served from the upstream and then the cache"));
    const samples: Array<[string, Record<string, string>]> = [
      [`/v2/library/good/blobs/${blob}`, auth],
      [`/v2/library/good/blobs/${blob}`, auth],
      ["/v2/", {}],
      ["/v2/", auth],
      ["/v2/library/good/manifests/1", auth],
      [`/v2/library/good/blobs/sha256:${HEX}`, auth],
      ["/v2/Bad/manifests/1", auth],
      ["/auth/token", auth],
      ["/auth/token", {}],
      ["/", auth],
      ["/", {}],
      ["/healthz", {}],
      ["/readyz", {}],
      ["/metrics", {}],
      ["/stats", {}],
      ["/admin/gc", {}],
      ["/nowhere", {}],
    ];
    for (const [path, headers] of samples) {
      for (const method of ["GET", "HEAD"]) {
        const res = await fetch(mirror.url + path, { method, headers });
        await res.arrayBuffer();
        assert.equal(
          res.headers.get("x-content-type-options"),
          "nosniff",
          `${method} ${path} → ${res.status}`,
        );
      }
    }
  });
});

describe("failed-login limit", () => {
  let fake: FakeUpstream;
  let mirror: Running & { dir: string };
  before(async () => {
    fake = await startFakeUpstream();
    addImage(fake, "library/good");
    const dir = await mkdtemp(join(tmpdir(), "regmirror-access-"));
    await writeFile(join(dir, "htpasswd"), `alice:${bcrypt.hashSync("wonderland", 4)}\n`);
    // The test client is 127.0.0.1, a trusted proxy: X-Forwarded-For plays other addresses.
    mirror = await startWith(fake.url, {
      auth: { htpasswd: join(dir, "htpasswd"), maxFailedLogins: 3, failedLoginWindow: "1m" },
      trustedProxies: ["127.0.0.1"],
    });
  });
  after(async () => {
    await mirror?.close();
    await fake?.stop();
  });

  it("answers 429 with Retry-After past auth.maxFailedLogins, on /auth/token and on /v2/", async () => {
    const from = (ip: string, authorization: string) => ({ "x-forwarded-for": ip, authorization });
    for (let i = 0; i < 3; i++) {
      const res = await fetch(`${mirror.url}/auth/token`, {
        headers: from("192.0.2.1", basic("alice", `no${i}`)),
      });
      assert.equal(res.status, 401, `failure ${i + 1} is checked`);
    }
    for (const path of ["/auth/token", "/v2/library/good/manifests/1", "/v2/", "/"]) {
      // The right password too: the address is blocked, not the guess.
      const res = await fetch(mirror.url + path, {
        headers: from("192.0.2.1", basic("alice", "wonderland")),
      });
      assert.equal(res.status, 429, path);
      const wait = Number(res.headers.get("retry-after"));
      assert.ok(wait >= 1 && wait <= 60, `Retry-After: ${wait}`);
      assert.equal(((await res.json()) as Body).errors[0]!.code, "TOOMANYREQUESTS");
    }
    const other = await fetch(`${mirror.url}/auth/token`, {
      headers: from("192.0.2.2", basic("alice", "wonderland")),
    });
    assert.equal(other.status, 200, "a good login from another address still works");
    const { token } = (await other.json()) as { token: string };
    const pull = await fetch(`${mirror.url}/v2/library/good/manifests/1`, {
      headers: { "x-forwarded-for": "192.0.2.1", authorization: `Bearer ${token}` },
    });
    assert.equal(pull.status, 200, "a token is not a login: it works from a blocked address");
    const again = await fetch(`${mirror.url}/auth/token`, {
      headers: from("192.0.2.1", basic("alice", "wonderland")),
    });
    assert.equal(again.status, 429, "a password verified a moment ago is no way around the block");
  });
});

describe("trustedProxies and limits.perClient", () => {
  let fake: FakeUpstream;
  before(async () => {
    fake = await startFakeUpstream();
  });
  after(async () => {
    await fake?.stop();
  });

  /** Hangs `perClient` requests from `xff`, then returns the status of one more from each of `then`. */
  async function budget(trusted: string[], xff: string, then: string[]): Promise<number[]> {
    const mirror = await startWith(fake.url, { trustedProxies: trusted, limits: { perClient: 2 } });
    fake.behave("*", { hang: true });
    const hanging = [1, 2].map(() =>
      request(`${mirror.url}/v2/library/h/manifests/1`, { headers: { "x-forwarded-for": xff } }).catch(
        () => undefined,
      ),
    );
    try {
      await new Promise((r) => setTimeout(r, 200));
      const statuses: number[] = [];
      for (const ip of then) {
        const res = await fetch(`${mirror.url}/v2/`, { headers: { "x-forwarded-for": ip } });
        await res.arrayBuffer();
        statuses.push(res.status);
      }
      return statuses;
    } finally {
      fake.clearBehaviours();
      await mirror.close();
      await Promise.all(hanging);
    }
  }

  it("gives each forwarded client its own budget behind a trusted proxy", async () => {
    assert.deepEqual(
      await budget(["127.0.0.1"], "198.51.100.1", ["198.51.100.2", "198.51.100.1"]),
      [200, 429],
    );
  });

  it("ignores X-Forwarded-For from a peer that is not a trusted proxy", async () => {
    assert.deepEqual(await budget([], "198.51.100.1", ["198.51.100.2"]), [429]);
    assert.deepEqual(await budget(["10.0.0.0/8"], "198.51.100.1", ["198.51.100.2"]), [429]);
  });
});
