// The S3 fixture itself: a real Ceph RADOS Gateway answers what an S3 storage driver will need
// (streamed PUT, ranged GET, multipart upload, paginated listing), and stop() leaves no daemon behind.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { Readable } from "node:stream";
import { after, before, describe, it } from "node:test";
import { GetObjectCommand, ListObjectsV2Command, PutObjectCommand, type S3Client } from "@aws-sdk/client-s3";
import { Upload } from "@aws-sdk/lib-storage";
import { startS3, type S3Server } from "../fixtures/s3.ts";

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

// Starting a Ceph cluster takes several seconds, more when two test files start one at once.
describe("S3 fixture (Ceph RADOS Gateway)", { timeout: 120_000 }, () => {
  let s3: S3Server;
  let client: S3Client;
  let bucket: string;

  before(async () => {
    s3 = await startS3();
    client = s3.client();
    bucket = await s3.newBucket();
  });

  after(async () => {
    client?.destroy();
    await s3?.stop();
  });

  it("stores a streamed PutObject and serves a ranged GetObject as 206", async () => {
    const body = randomBytes(256 * 1024);
    const chunks = [body.subarray(0, 100_000), body.subarray(100_000)];
    await client.send(
      new PutObjectCommand({
        Bucket: bucket,
        Key: "streamed/blob",
        Body: Readable.from(chunks),
        ContentLength: body.length,
      }),
    );

    const res = await client.send(
      new GetObjectCommand({ Bucket: bucket, Key: "streamed/blob", Range: "bytes=1000-1999" }),
    );
    assert.equal(res.$metadata.httpStatusCode, 206);
    assert.equal(res.ContentRange, `bytes 1000-1999/${body.length}`);
    assert.ok(res.Body !== undefined);
    const got = Buffer.from(await res.Body.transformToByteArray());
    assert.deepEqual(got, body.subarray(1000, 2000));
  });

  it("completes a multipart Upload of ~12 MiB", async () => {
    const body = randomBytes(12 * 1024 * 1024 + 12345);
    const upload = new Upload({
      client,
      params: { Bucket: bucket, Key: "multipart/blob", Body: Readable.from([body]) },
      partSize: 5 * 1024 * 1024,
      queueSize: 2,
    });
    let parts = 0;
    upload.on("httpUploadProgress", () => parts++);
    await upload.done();
    assert.ok(parts >= 3, `expected at least 3 parts, saw ${parts} progress events`);

    const res = await client.send(new GetObjectCommand({ Bucket: bucket, Key: "multipart/blob" }));
    assert.equal(res.ContentLength, body.length);
    // A multipart ETag is "<md5 of the part md5s>-<part count>".
    assert.match(res.ETag ?? "", /-3"$/);
    assert.ok(res.Body !== undefined);
    assert.ok(Buffer.from(await res.Body.transformToByteArray()).equals(body));
  });

  it("pages through ListObjectsV2 two keys at a time", async () => {
    const keys = ["list/a", "list/b", "list/c", "list/d", "list/e"];
    await Promise.all(
      keys.map((Key) => client.send(new PutObjectCommand({ Bucket: bucket, Key, Body: Key }))),
    );

    const seen: string[] = [];
    let pages = 0;
    let token: string | undefined;
    do {
      const page = await client.send(
        new ListObjectsV2Command({ Bucket: bucket, Prefix: "list/", MaxKeys: 2, ContinuationToken: token }),
      );
      pages++;
      assert.ok((page.KeyCount ?? 0) <= 2);
      seen.push(...(page.Contents ?? []).map((o) => o.Key ?? ""));
      token = page.IsTruncated === true ? page.NextContinuationToken : undefined;
    } while (token !== undefined);
    assert.equal(pages, 3);
    assert.deepEqual(seen, keys);
  });

  it("stops every daemon it started", async () => {
    const pids = [...s3.pids];
    assert.equal(pids.length, 3);
    assert.ok(pids.every(isAlive));
    client.destroy();
    await s3.stop();
    assert.deepEqual(pids.filter(isAlive), [], "mon, osd and rgw should all be gone after stop()");
  });
});
