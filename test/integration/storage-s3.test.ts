// The storage-driver suite on the S3 driver against a real Ceph RADOS Gateway (a fresh bucket
// per driver, listed 7 keys a page so pagination is exercised), and what only S3 has: prefixes
// sharing a bucket, presigned redirects, an endpoint that is down and one that comes back.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { createServer as createHttpServer } from "node:http";
import { createServer, connect, type Server, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import {
  CreateMultipartUploadCommand,
  ListMultipartUploadsCommand,
  UploadPartCommand,
  type S3Client,
} from "@aws-sdk/client-s3";
import { StorageUnavailableError } from "../../src/storage/driver.ts";
import { CachePaths } from "../../src/storage/paths.ts";
import { S3Driver, type S3DriverOptions } from "../../src/storage/s3-driver.ts";
import { freePort } from "../fixtures/ports.ts";
import { startS3, type S3Server } from "../fixtures/s3.ts";
import { storageDriverSuite } from "../unit/storage-driver.suite.ts";

const PREFIX = "cache/";
const PART = 5 * 1024 * 1024;

let s3: S3Server;
let admin: S3Client;
const drivers: S3Driver[] = [];
const dirs: string[] = [];

function driverFor(opts: Partial<S3DriverOptions> & { bucket: string }): S3Driver {
  const d = new S3Driver({
    prefix: PREFIX,
    endpoint: s3.endpoint,
    region: s3.region,
    forcePathStyle: true,
    accessKeyId: s3.accessKeyId,
    secretAccessKey: s3.secretAccessKey,
    ...opts,
  });
  drivers.push(d);
  return d;
}

async function within<T>(ms: number, what: string, p: Promise<T>): Promise<T> {
  const started = Date.now();
  try {
    return await p;
  } finally {
    const took = Date.now() - started;
    assert.ok(took < ms, `${what} took ${took} ms, more than ${ms}`);
  }
}

// Starting the Ceph cluster takes ~10 s, more while other test files start theirs.
describe("S3 storage driver", { timeout: 180_000 }, () => {
  before(async () => {
    s3 = await startS3();
    admin = s3.client();
  });
  after(async () => {
    for (const d of drivers) d.destroy();
    admin?.destroy();
    await s3?.stop();
    await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
  });

  storageDriverSuite("s3", async () => {
    const bucket = await s3.newBucket();
    const dir = await mkdtemp(join(tmpdir(), "regmirror-s3-driver-"));
    dirs.push(dir);
    const paths = new CachePaths(dir);
    await mkdir(paths.tmpDir, { recursive: true });
    const driver = driverFor({ bucket, pageSize: 7 });
    return {
      driver,
      paths,
      // A process killed mid-publish leaves a multipart upload begun, with a part, never completed.
      crashDebris: async (key, bytes) => {
        const Key = PREFIX + key;
        const { UploadId } = await admin.send(new CreateMultipartUploadCommand({ Bucket: bucket, Key }));
        const part = bytes.subarray(0, PART);
        await admin.send(
          new UploadPartCommand({
            Bucket: bucket,
            Key,
            UploadId,
            PartNumber: 1,
            Body: part,
            ContentLength: part.length,
          }),
        );
        return async () => {
          const res = await admin.send(new ListMultipartUploadsCommand({ Bucket: bucket, Prefix: PREFIX }));
          return res.Uploads?.length ?? 0;
        };
      },
    };
  });

  it("keeps two prefixes in one bucket apart", async () => {
    const bucket = await s3.newBucket();
    const a = driverFor({ bucket, prefix: "a/" });
    const b = driverFor({ bucket, prefix: "b/" });
    await a.put("repos/x/_tags/1.json", "from a");
    await b.put("repos/y/_tags/2.json", "from b");
    assert.equal(await a.get("repos/y/_tags/2.json"), undefined);
    assert.equal(await b.get("repos/x/_tags/1.json"), undefined);
    const listed = async (d: S3Driver): Promise<string[]> => {
      const keys: string[] = [];
      for await (const o of d.list("repos/")) keys.push(o.key);
      return keys;
    };
    assert.deepEqual(await listed(a), ["repos/x/_tags/1.json"]);
    assert.deepEqual(await listed(b), ["repos/y/_tags/2.json"]);
  });

  it("gives a presigned URL that a plain GET, and a ranged one, read the object from", async () => {
    const driver = driverFor({ bucket: await s3.newBucket() });
    const bytes = randomBytes(300_000);
    await driver.put("blobs/sha256/ab/ab", bytes);
    const url = await driver.redirectURL("blobs/sha256/ab/ab");
    const whole = await fetch(url);
    assert.equal(whole.status, 200);
    assert.deepEqual(Buffer.from(await whole.arrayBuffer()), bytes);
    const part = await fetch(url, { headers: { range: "bytes=1000-1999" } });
    assert.equal(part.status, 206);
    assert.deepEqual(Buffer.from(await part.arrayBuffer()), bytes.subarray(1000, 2000));
  });

  it("creates its bucket at init, and a put then works", async () => {
    const bucket = `test-${randomBytes(6).toString("hex")}`;
    const driver = driverFor({ bucket });
    await assert.rejects(driver.put("state/x", "x"), StorageUnavailableError, "no bucket yet");
    await driver.init();
    await driver.init(); // again: the bucket is there now
    await driver.put("state/x", "x");
    assert.equal((await driver.get("state/x"))?.toString(), "x");
  });

  it("names the bucket and fails fast, as unavailable, when nothing listens", async () => {
    const port = await freePort();
    const driver = driverFor({ bucket: "regmirror-down", endpoint: `http://127.0.0.1:${port}` });
    const problem = await within(5000, "problem()", driver.problem());
    assert.match(problem ?? "", /regmirror-down/);
    assert.match(problem ?? "", new RegExp(`127\\.0\\.0\\.1:${port}`));
    const unavailable = (p: Promise<unknown>, what: string) =>
      within(10_000, what, assert.rejects(p, StorageUnavailableError));
    await unavailable(driver.get("state/x"), "get");
    await unavailable(driver.open("state/x"), "open");
    await unavailable(driver.put("state/x", "x"), "put");
    await unavailable(
      (async () => {
        for await (const o of driver.list("repos/")) assert.fail(`listed ${o.key}`);
      })(),
      "list",
    );
  });

  it("publishes a file of several parts, and leaves no upload and no local file behind", async () => {
    const driver = driverFor({ bucket: await s3.newBucket() });
    const dir = await mkdtemp(join(tmpdir(), "regmirror-s3-publish-"));
    dirs.push(dir);
    const bytes = randomBytes(17 * 1024 * 1024 + 5);
    const file = join(dir, "fill");
    await writeFile(file, bytes);
    await driver.publish(file, "blobs/sha256/cd/cd");
    await assert.rejects(writeFile(file, "", { flag: "r+" }), { code: "ENOENT" });
    assert.equal((await driver.stat("blobs/sha256/cd/cd"))?.size, bytes.length);
    assert.deepEqual(await driver.get("blobs/sha256/cd/cd"), bytes);
    assert.deepEqual(await driver.sweepDebris(0, true), []);
  });

  it("takes a 404 that is not S3's NoSuchKey for unavailable storage, not for a miss", async () => {
    // A proxy or a wrong endpoint answers 404 without S3's error code; a miss there would make
    // the mirror refetch everything and cache nothing.
    const srv = createHttpServer((_req, res) => res.writeHead(404).end());
    await new Promise<void>((resolve) => srv.listen(0, "127.0.0.1", resolve));
    const { port } = srv.address() as { port: number };
    try {
      const driver = driverFor({ bucket: "regmirror-elsewhere", endpoint: `http://127.0.0.1:${port}` });
      await assert.rejects(driver.get("state/x"), StorageUnavailableError);
      await assert.rejects(driver.put("state/x", "x"), StorageUnavailableError);
      assert.match((await driver.problem()) ?? "", /regmirror-elsewhere/);
    } finally {
      srv.closeAllConnections();
      srv.close();
    }
  });

  it("works again, with no restart, when an unreachable endpoint comes back", async () => {
    const bucket = await s3.newBucket();
    const rgw = new URL(s3.endpoint);
    const port = await freePort();
    const sockets = new Set<Socket>();
    // A TCP relay we can take down and bring back on the same port, as a flapping network.
    const relay = (): Promise<Server> =>
      new Promise((resolve, reject) => {
        const srv = createServer((c) => {
          const up = connect(Number(rgw.port), rgw.hostname);
          for (const s of [c, up]) {
            sockets.add(s);
            s.on("close", () => sockets.delete(s));
            s.on("error", () => undefined);
          }
          c.pipe(up).pipe(c);
        });
        srv.once("error", reject);
        srv.listen(port, "127.0.0.1", () => resolve(srv));
      });
    let srv = await relay();
    const driver = driverFor({ bucket, endpoint: `http://127.0.0.1:${port}` });
    try {
      await driver.put("state/x", "before");
      await new Promise<void>((resolve) => {
        srv.close(() => resolve());
        for (const s of sockets) s.destroy();
      });
      await assert.rejects(driver.get("state/x"), StorageUnavailableError);
      assert.match((await driver.problem()) ?? "", new RegExp(bucket));
      srv = await relay();
      assert.equal(await driver.problem(), undefined);
      assert.equal((await driver.get("state/x"))?.toString(), "before");
    } finally {
      srv.close();
      for (const s of sockets) s.destroy();
    }
  });
});
