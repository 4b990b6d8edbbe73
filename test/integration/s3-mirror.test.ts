// The mirror with storage.driver s3, against a real S3 server (Ceph RADOS Gateway, started by the
// fixture) reached through a TCP gate the tests can shut: real pulls cold and warm, redirects,
// eviction, purge, and what a bucket that goes away does to clients and to the cache.
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { mkdtemp, readFile, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { after, before, describe, it } from "node:test";
import { HeadObjectCommand, ListObjectsV2Command } from "@aws-sdk/client-s3";
import { startS3, type S3Server } from "../fixtures/s3.ts";
import { startTcpGate, type TcpGate } from "../fixtures/tcp-gate.ts";
import { startUpstream, type Upstream } from "../fixtures/upstream.ts";
import { startFakeUpstream, type FakeUpstream } from "../fixtures/fake-upstream.ts";
import { pushImage } from "../fixtures/images.ts";
import { startTestMirror } from "../fixtures/mirror.ts";
import { get } from "../fixtures/http.ts";
import { value } from "../fixtures/metrics.ts";
import { skopeo } from "../fixtures/skopeo.ts";
import { cli } from "../fixtures/cli.ts";

const MiB = 1024 * 1024;

/** Waits for `ok` (a blob's upload ends after its client has the last byte), up to 30 s. */
async function until(ok: () => Promise<boolean>, what: string): Promise<void> {
  const deadline = Date.now() + 30_000;
  while (!(await ok())) {
    if (Date.now() > deadline) assert.fail(`never: ${what}`);
    await sleep(20);
  }
}

const sha256 = (b: Buffer) => "sha256:" + createHash("sha256").update(b).digest("hex");
const blobKey = (digest: string) => `blobs/sha256/${digest.slice(7, 9)}/${digest.slice(7)}`;

describe("the mirror on S3 (Ceph RADOS Gateway)", { timeout: 300_000 }, () => {
  let s3: S3Server;
  let gate: TcpGate;
  let work: string;

  before(async () => {
    s3 = await startS3();
    gate = await startTcpGate(s3.endpoint);
    work = await mkdtemp(join(tmpdir(), "regmirror-s3-"));
  });
  after(async () => {
    await gate?.stop();
    await s3?.stop();
    await rm(work, { recursive: true, force: true });
  });

  /** storage settings for a fresh bucket (created by the mirror at start) behind the gate. */
  const storage = (bucket: string, extra: Record<string, unknown> = {}) => ({
    driver: "s3",
    s3: {
      endpoint: gate.url,
      bucket,
      region: "us-east-1",
      prefix: "cache/",
      forcePathStyle: true,
      accessKeyId: s3.accessKeyId,
      secretAccessKey: s3.secretAccessKey,
      ...extra,
    },
  });
  const bucketName = () => `rm-${randomBytes(6).toString("hex")}`;
  const inBucket = async (bucket: string, key: string) => {
    try {
      await s3.client().send(new HeadObjectCommand({ Bucket: bucket, Key: `cache/${key}` }));
      return true;
    } catch (err) {
      if ((err as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode === 404)
        return false;
      throw err;
    }
  };
  const blobCount = async (bucket: string) =>
    (await s3.client().send(new ListObjectsV2Command({ Bucket: bucket, Prefix: "cache/blobs/" }))).KeyCount ??
    0;

  describe("with a real registry upstream", () => {
    let up: Upstream;
    before(async () => {
      up = await startUpstream({ auth: "token" });
    });
    after(() => up?.stop());

    it("skopeo pulls cold, then warm with no upstream request; the content is in the bucket", async () => {
      const image = await pushImage(up, "library/s3app", "1", { layers: 3, format: "docker" });
      const bucket = bucketName();
      const mirror = await startTestMirror(up.url, { storage: storage(bucket) });
      try {
        await up.resetRequests();
        const first = join(work, "first");
        await skopeo(
          "copy",
          "--src-tls-verify=false",
          `docker://${mirror.host}/library/s3app:1`,
          `dir:${first}`,
        );
        assert.equal(await up.count("GET", "/v2/library/s3app/blobs/"), image.layers.length + 1);
        for (const l of image.layers) await until(() => inBucket(bucket, blobKey(l.digest)), l.digest);
        assert.deepEqual(
          (await readdir(mirror.cacheDir)).filter((n) => n === "blobs" || n === "manifests"),
          [],
          "nothing of the content in cache.dir",
        );

        await up.resetRequests();
        const second = join(work, "second");
        await skopeo(
          "copy",
          "--src-tls-verify=false",
          `docker://${mirror.host}/library/s3app:1`,
          `dir:${second}`,
        );
        assert.deepEqual(await up.requests(), [], "the warm pull never reached the upstream");
        for (const l of image.layers) {
          const name = l.digest.slice(7);
          assert.equal(sha256(await readFile(join(second, name))), l.digest);
        }

        // The maintenance commands read the same bucket from a shell, with no cache.dir at all.
        const env = {
          REGMIRROR_CACHE_DIR: join(work, "no-such-dir"),
          REGMIRROR_STORAGE_DRIVER: "s3",
          REGMIRROR_STORAGE_S3_ENDPOINT: gate.url,
          REGMIRROR_STORAGE_S3_BUCKET: bucket,
          REGMIRROR_STORAGE_S3_PREFIX: "cache/",
          REGMIRROR_STORAGE_S3_FORCE_PATH_STYLE: "true",
          REGMIRROR_STORAGE_S3_ACCESS_KEY_ID: s3.accessKeyId,
          REGMIRROR_STORAGE_S3_SECRET_ACCESS_KEY: s3.secretAccessKey,
        };
        const ls = await cli(["ls", "--json"], env);
        assert.equal(ls.code, 0, ls.stderr);
        const listing = JSON.parse(ls.stdout) as {
          repositories: Array<{ name: string; cachedBlobs: number; blobs: number }>;
        };
        const repo = listing.repositories.find((r) => r.name === "library/s3app");
        assert.ok(repo, ls.stdout);
        assert.equal(repo.cachedBlobs, repo.blobs, "every blob of the image is in the bucket");
        const verify = await cli(["verify", "--json"], env);
        assert.equal(verify.code, 0, verify.stderr);
        assert.equal((JSON.parse(verify.stdout) as { corrupt: unknown[] }).corrupt.length, 0);
      } finally {
        await mirror.stop();
      }
    });
  });

  describe("with a fake upstream (faults)", () => {
    let fake: FakeUpstream;
    before(async () => {
      fake = await startFakeUpstream();
    });
    after(() => fake?.stop());

    it("an upstream cut mid-blob leaves nothing under the digest's key", async () => {
      const bucket = bucketName();
      const mirror = await startTestMirror(fake.url, { storage: storage(bucket) });
      try {
        const bytes = randomBytes(3 * MiB);
        const digest = fake.addBlob(bytes);
        fake.behave(digest, { cutAt: 0.5, times: 1 });
        const cut = await get(`${mirror.url}/v2/library/s3cut/blobs/${digest}`);
        assert.equal(cut.complete, false, "the client sees the transfer cut");
        await sleep(200);
        assert.equal(await inBucket(bucket, blobKey(digest)), false);
        const again = await get(`${mirror.url}/v2/library/s3cut/blobs/${digest}`);
        assert.equal(again.digest, digest);
        await until(() => inBucket(bucket, blobKey(digest)), "the second fill is uploaded");
      } finally {
        fake.clearBehaviours();
        await mirror.stop();
      }
    });

    it("redirect: a cached blob's GET is a 307 to the bucket, which serves its bytes and ranges", async () => {
      const bucket = bucketName();
      const mirror = await startTestMirror(fake.url, {
        storage: storage(bucket, { redirect: true }),
        cache: { blobMemory: 0 },
      });
      try {
        const bytes = randomBytes(2 * MiB);
        const digest = fake.addBlob(bytes);
        const url = `${mirror.url}/v2/library/s3r/blobs/${digest}`;
        assert.equal((await get(url)).digest, digest, "the miss is streamed through the mirror");
        // The last byte goes out before the upload ends; until then GETs follow the fill.
        await until(() => inBucket(bucket, blobKey(digest)), "the blob is uploaded");
        const res = await fetch(url, { redirect: "manual" });
        assert.equal(res.status, 307);
        const location = res.headers.get("location")!;
        assert.ok(location.startsWith(gate.url), location);
        assert.equal(sha256(Buffer.from(await (await fetch(location)).arrayBuffer())), digest);
        const part = await fetch(location, { headers: { range: "bytes=10-19" } });
        assert.equal(part.status, 206);
        assert.deepEqual(Buffer.from(await part.arrayBuffer()), bytes.subarray(10, 20));
        // A small blob is served from the mirror's memory: a 307 would cost more than its bytes.
        const small = randomBytes(64 * 1024);
        const smallDigest = fake.addBlob(small);
        const smallUrl = `${mirror.url}/v2/library/s3r/blobs/${smallDigest}`;
        await get(smallUrl);
        const direct = await fetch(smallUrl, { redirect: "manual" });
        assert.equal(direct.status, 200);
        assert.equal(sha256(Buffer.from(await direct.arrayBuffer())), smallDigest);
        const head = await fetch(url, { method: "HEAD" });
        assert.equal(head.status, 200, "a HEAD is answered by the mirror");
        assert.equal(head.headers.get("content-length"), String(bytes.length));
      } finally {
        await mirror.stop();
      }
    });

    it("evicts by size from the bucket, with an exact byte total", async () => {
      const bucket = bucketName();
      const mirror = await startTestMirror(fake.url, {
        storage: storage(bucket),
        cache: { maxSize: "2500KiB", blobMemory: 0 },
      });
      try {
        const blobs = [1, 2, 3].map(() => randomBytes(MiB));
        const digests: string[] = [];
        for (const b of blobs) {
          const d = fake.addBlob(b);
          digests.push(d);
          assert.equal((await get(`${mirror.url}/v2/library/s3e/blobs/${d}`)).digest, d);
          // Indexed once uploaded: the third one takes the total past maxSize.
          await until(() => inBucket(bucket, blobKey(d)), "uploaded");
        }
        await until(async () => !(await inBucket(bucket, blobKey(digests[0]!))), "the oldest evicted");
        await until(
          async () => value(await mirror.metrics(), "regmirror_cache_size_bytes") === 2 * MiB,
          "the index counts the two left",
        );
        assert.equal(await blobCount(bucket), 2, "the least recently read blob left the bucket");
      } finally {
        await mirror.stop();
      }
    });

    it("a bucket out of reach: 503 with a registry error and a /readyz reason; back, it all works again", async () => {
      const bucket = bucketName();
      const mirror = await startTestMirror(fake.url, { storage: storage(bucket) });
      try {
        const cached = randomBytes(2 * MiB);
        const d1 = fake.addBlob(cached);
        assert.equal((await get(`${mirror.url}/v2/library/s3d/blobs/${d1}`)).digest, d1);
        gate.shut();
        const fresh = randomBytes(MiB);
        const d2 = fake.addBlob(fresh);
        for (const d of [d1, d2]) {
          const res = await fetch(`${mirror.url}/v2/library/s3d/blobs/${d}`);
          assert.equal(res.status, 503, d);
          const body = (await res.json()) as { errors: Array<{ code: string }> };
          assert.equal(body.errors[0]!.code, "UNAVAILABLE");
        }
        const ready = await fetch(`${mirror.url}/readyz`);
        assert.equal(ready.status, 503);
        const checks = ((await ready.json()) as { checks: Record<string, { ok: boolean; detail?: string }> })
          .checks;
        assert.equal(checks.storage!.ok, false);
        assert.match(checks.storage!.detail!, new RegExp(bucket));
        gate.open();
        assert.equal((await get(`${mirror.url}/v2/library/s3d/blobs/${d1}`)).digest, d1);
        assert.equal((await get(`${mirror.url}/v2/library/s3d/blobs/${d2}`)).digest, d2);
        assert.equal((await fetch(`${mirror.url}/readyz`)).status, 200);
      } finally {
        gate.open();
        await mirror.stop();
      }
    });

    it("hosted push with the bucket out of reach: 503 registry errors, nothing half-stored; back, the push works", async () => {
      const bucket = bucketName();
      const mirror = await startTestMirror(fake.url, {
        storage: storage(bucket),
        hosted: { repositories: ["local/**"], anonymousPush: true },
      });
      try {
        const bytes = randomBytes(6 * MiB);
        const d = sha256(bytes);
        const OCI = "application/vnd.oci.image.manifest.v1+json";
        const manifest = JSON.stringify({
          schemaVersion: 2,
          mediaType: OCI,
          config: { mediaType: "application/vnd.oci.image.config.v1+json", digest: d, size: bytes.length },
          layers: [],
        });
        const push = () =>
          fetch(`${mirror.url}/v2/local/down/blobs/uploads/?digest=${d}`, {
            method: "POST",
            body: new Uint8Array(bytes),
          });
        const putManifest = () =>
          fetch(`${mirror.url}/v2/local/down/manifests/1`, {
            method: "PUT",
            body: manifest,
            headers: { "content-type": OCI },
          });
        gate.shut();
        for (const res of [await push(), await putManifest()]) {
          assert.equal(res.status, 503, await res.clone().text());
          assert.equal(
            ((await res.json()) as { errors: Array<{ code: string }> }).errors[0]!.code,
            "UNAVAILABLE",
          );
        }
        const pulled = await fetch(`${mirror.url}/v2/local/down/manifests/1`);
        assert.equal(pulled.status, 503, "a pull is an outage too, not a 404");
        gate.open();
        assert.equal(
          await inBucket(bucket, `hosted/${blobKey(d)}`),
          false,
          "no part of the blob under its key",
        );
        assert.deepEqual(await readdir(join(mirror.cacheDir, "uploads")), [], "no session left behind");
        assert.equal((await push()).status, 201);
        assert.equal((await putManifest()).status, 201);
        assert.equal((await get(`${mirror.url}/v2/local/down/blobs/${d}`)).digest, d);
      } finally {
        gate.open();
        await mirror.stop();
      }
    });

    it("a fill whose upload fails still completes for its client from the upstream, with nothing cached", async () => {
      const bucket = bucketName();
      const mirror = await startTestMirror(fake.url, { storage: storage(bucket) });
      try {
        const bytes = randomBytes(4 * MiB);
        const digest = fake.addBlob(bytes);
        // Slow enough that the gate shuts while the blob is still arriving, before its upload.
        fake.behave(digest, { slowBytesPerSec: 8 * MiB, times: 1 });
        const pending = get(`${mirror.url}/v2/library/s3u/blobs/${digest}`);
        await sleep(150);
        gate.shut();
        const got = await pending;
        assert.equal(got.status, 200);
        assert.ok(got.complete);
        assert.equal(got.digest, digest);
        // The upload comes after the last byte: the gate stays shut until it has failed.
        await until(
          async () =>
            value(await mirror.metrics(), "regmirror_fill_failures_total", { reason: "storage" }) === 1,
          "the upload failed",
        );
        gate.open();
        assert.equal(await inBucket(bucket, blobKey(digest)), false, "nothing cached");
      } finally {
        gate.open();
        fake.clearBehaviours();
        await mirror.stop();
      }
    });

    it("purge by digest through the admin API removes the blob from the bucket; the next GET fetches it again", async () => {
      const bucket = bucketName();
      const token = randomBytes(16).toString("hex");
      const mirror = await startTestMirror(fake.url, { storage: storage(bucket), admin: { token } });
      try {
        const bytes = randomBytes(MiB);
        const digest = fake.addBlob(bytes);
        await get(`${mirror.url}/v2/library/s3p/blobs/${digest}`);
        await until(() => inBucket(bucket, blobKey(digest)), "the blob is uploaded");
        const res = await fetch(`${mirror.url}/admin/purge`, {
          method: "POST",
          headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
          body: JSON.stringify({ ref: digest }),
        });
        assert.equal(res.status, 200, await res.clone().text());
        assert.equal(await inBucket(bucket, blobKey(digest)), false);
        fake.resetRequests();
        assert.equal((await get(`${mirror.url}/v2/library/s3p/blobs/${digest}`)).digest, digest);
        assert.equal(fake.count("GET", "/v2/library/s3p/blobs/"), 1, "fetched again");
      } finally {
        await mirror.stop();
      }
    });

    it("hosted repositories on S3: a push lands below hosted/ in the bucket, pulls back, and gc removes exactly what nothing names", async () => {
      const bucket = bucketName();
      const token = randomBytes(16).toString("hex");
      const mirror = await startTestMirror(fake.url, {
        storage: storage(bucket),
        admin: { token },
        hosted: { repositories: ["local/**"], anonymousPush: true, delete: true },
      });
      try {
        fake.resetRequests();
        const OCI = "application/vnd.oci.image.manifest.v1+json";
        const upload = async (bytes: Buffer) => {
          const d = sha256(bytes);
          const res = await fetch(`${mirror.url}/v2/local/s3/blobs/uploads/?digest=${d}`, {
            method: "POST",
            body: new Uint8Array(bytes),
          });
          assert.equal(res.status, 201, await res.text());
          return d;
        };
        // One blob big enough for a multipart upload of its own, one small, one never used.
        const config = await upload(Buffer.from('{"architecture":"amd64","os":"linux"}'));
        const layerBytes = randomBytes(6 * MiB);
        const layer = await upload(layerBytes);
        const unused = await upload(randomBytes(1000));
        const manifest = JSON.stringify({
          schemaVersion: 2,
          mediaType: OCI,
          config: { mediaType: "application/vnd.oci.image.config.v1+json", digest: config, size: 37 },
          layers: [
            { mediaType: "application/vnd.oci.image.layer.v1.tar", digest: layer, size: layerBytes.length },
          ],
        });
        const put = await fetch(`${mirror.url}/v2/local/s3/manifests/1`, {
          method: "PUT",
          body: manifest,
          headers: { "content-type": OCI },
        });
        assert.equal(put.status, 201, await put.text());
        assert.equal(await inBucket(bucket, `hosted/${blobKey(layer)}`), true, "below hosted/ in the bucket");
        assert.equal(await blobCount(bucket), 0, "nothing in the cache's blobs");
        const back = await get(`${mirror.url}/v2/local/s3/blobs/${layer}`);
        assert.equal(back.digest, layer);
        assert.equal(await (await fetch(`${mirror.url}/v2/local/s3/manifests/1`)).text(), manifest);
        const gc = await fetch(`${mirror.url}/admin/gc`, {
          method: "POST",
          headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
          body: JSON.stringify({ hostedGrace: "0s" }),
        });
        const body = (await gc.json()) as { hosted: { blobs: { removed: string[] } } };
        assert.equal(gc.status, 200);
        assert.deepEqual(body.hosted.blobs.removed, [unused], "exactly the blob nothing names");
        assert.equal(await inBucket(bucket, `hosted/${blobKey(unused)}`), false);
        assert.equal(await inBucket(bucket, `hosted/${blobKey(layer)}`), true);
        assert.equal((await get(`${mirror.url}/v2/local/s3/blobs/${layer}`)).digest, layer, "still pulls");
        assert.equal(fake.requests.length, 0, "a hosted name never goes upstream");
      } finally {
        await mirror.stop();
      }
    });
  });
});
