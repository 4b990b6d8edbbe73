// Where the mirror follows an upstream's blob redirect, on loopback only. The upstream here lives
// on 127.0.0.1, a non-public address, so redirects to other loopback hosts are followed; the one
// refusal that can be shown without leaving loopback is the unspecified address (0.0.0.0, which
// Linux would connect to this machine). Refusals of private, link-local and other classes for a
// public upstream are unit-tested with addresses as data (test/unit/redirect-policy.test.ts).
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { after, before, describe, it } from "node:test";
import { startTestMirror, type TestMirror } from "../fixtures/mirror.ts";

const bytes = randomBytes(20_000);
const digest = "sha256:" + createHash("sha256").update(bytes).digest("hex");

async function listen(server: Server, host: string): Promise<number> {
  await new Promise<void>((resolve) => server.listen(0, host, resolve));
  return (server.address() as AddressInfo).port;
}

describe("blob redirects from an upstream on a loopback address", () => {
  let storageHits = 0;
  let storagePort = 0;
  /** Where the front door sends the next blob GET. */
  let location = "";
  const storage = createServer((_req, res) => {
    storageHits++;
    res.writeHead(200, { "content-length": bytes.length, "docker-content-digest": digest }).end(bytes);
  });
  const front = createServer((_req, res) => void res.writeHead(307, { location }).end());
  let frontPort = 0;
  let mirror: TestMirror;
  let byName: TestMirror;

  before(async () => {
    // 127.0.0.2 is another loopback host (Linux answers all of 127/8 on lo).
    storagePort = await listen(storage, "127.0.0.2");
    frontPort = await listen(front, "127.0.0.1");
    mirror = await startTestMirror(`http://127.0.0.1:${frontPort}`);
    // The same upstream by a name: it is private by what the name resolves to.
    byName = await startTestMirror(`http://localhost:${frontPort}`, { upstream: { name: "by-name.test" } });
  });
  after(async () => {
    await mirror.stop();
    await byName.stop();
    await new Promise((r) => storage.close(r));
    await new Promise((r) => front.close(r));
  });

  const pull = async (m: TestMirror) => {
    const res = await fetch(`${m.url}/v2/library/r/blobs/${digest}`);
    return { status: res.status, body: Buffer.from(await res.arrayBuffer()) };
  };

  it("follows a redirect to another loopback address, as the upstream is on one itself", async () => {
    location = `http://127.0.0.2:${storagePort}/blob?sig=1`;
    const got = await pull(mirror);
    assert.equal(got.status, 200);
    assert.ok(got.body.equals(bytes));
    assert.equal(storageHits, 1);
  });

  it("counts an upstream addressed by name as private by what the name resolves to", async () => {
    location = `http://127.0.0.2:${storagePort}/blob?sig=2`;
    const got = await pull(byName);
    assert.equal(got.status, 200);
    assert.ok(got.body.equals(bytes));
    assert.equal(storageHits, 2);
  });

  it("follows a redirect to a host name that resolves to loopback, checked at connect time", async () => {
    const named = createServer((_req, res) => {
      res.writeHead(200, { "content-length": other.length }).end(other);
    });
    const other = randomBytes(5000);
    const otherDigest = "sha256:" + createHash("sha256").update(other).digest("hex");
    const port = await listen(named, "127.0.0.1");
    try {
      location = `http://localhost:${port}/blob?sig=4`;
      const res = await fetch(`${mirror.url}/v2/library/r/blobs/${otherDigest}`);
      assert.equal(res.status, 200);
      assert.ok(Buffer.from(await res.arrayBuffer()).equals(other));
    } finally {
      await new Promise((r) => named.close(r));
    }
  });

  it("refuses a redirect to the unspecified address with UPSTREAM_ERROR, sending nothing there", async () => {
    const target = createServer((_req, res) => {
      storageHits++;
      res.writeHead(200, { "content-length": bytes.length }).end(bytes);
    });
    // 0.0.0.0 would reach a server on 127.0.0.1 of this machine, if the mirror dialled it.
    const port = await listen(target, "127.0.0.1");
    try {
      location = `http://0.0.0.0:${port}/blob?sig=3`;
      const before = storageHits;
      const res = await fetch(`${mirror.url}/v2/library/r/blobs/sha256:${"e".repeat(64)}`);
      assert.equal(res.status, 502);
      const body = (await res.json()) as { errors: Array<{ code: string }> };
      assert.equal(body.errors[0]!.code, "UPSTREAM_ERROR");
      assert.equal(storageHits, before, "the redirect target was never contacted");
    } finally {
      await new Promise((r) => target.close(r));
    }
  });
});
