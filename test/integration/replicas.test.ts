// Three regmirror replicas acting as one mirror: one Redis (Debian's redis-server) for
// coordination, one S3 bucket (a real Ceph RADOS Gateway) for the cache, each replica its own
// process on loopback. The upstream is the in-process fake: it is made slow, so that latecomers
// are shown to get bytes while the fill runs.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { after, before, describe, it } from "node:test";
import { HeadObjectCommand, ListObjectsV2Command } from "@aws-sdk/client-s3";
import { startFakeUpstream, type FakeUpstream } from "../fixtures/fake-upstream.ts";
import { getFresh } from "../fixtures/http.ts";
import { value } from "../fixtures/metrics.ts";
import { spawnMirror, type MirrorProcess } from "../fixtures/mirror-process.ts";
import { startRedis } from "../fixtures/redis.ts";
import { startS3, type S3Server } from "../fixtures/s3.ts";
import { startTestMirror } from "../fixtures/mirror.ts";
import bcrypt from "bcryptjs";
import { cli } from "../fixtures/cli.ts";

const MiB = 1024 * 1024;

function redisInfo(port: number): Promise<string> {
  return new Promise((resolve, reject) =>
    execFile("redis-cli", ["-p", String(port), "info", "stats"], (err, out) =>
      err ? reject(err) : resolve(out),
    ),
  );
}

const ADMIN = "replicas-admin-token-0123456789";

async function until(ok: () => Promise<boolean> | boolean, what: string, ms = 30_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await ok())) {
    if (Date.now() > deadline) assert.fail(`never: ${what}`);
    await sleep(25);
  }
}

describe("three replicas, one Redis, one bucket", { timeout: 300_000 }, () => {
  let s3: S3Server;
  let redis: Awaited<ReturnType<typeof startRedis>>;
  let fake: FakeUpstream;
  let work: string;
  let bucket: string;
  let replicas: MirrorProcess[];

  const blobKey = (digest: string) => `blobs/sha256/${digest.slice(7, 9)}/${digest.slice(7)}`;
  const headIn = async (b: string, digest: string) => {
    try {
      await s3.client().send(new HeadObjectCommand({ Bucket: b, Key: blobKey(digest) }));
      return true;
    } catch (err) {
      if ((err as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode === 404)
        return false;
      throw err;
    }
  };
  const inBucket = (digest: string) => headIn(bucket, digest);
  /** Two more replicas of the cluster, in this process, on `onBucket`, with `extra` settings. */
  const twoInProcess = (onBucket: string, extra: Record<string, Record<string, unknown>>) => {
    const settings = {
      ...extra,
      cluster: { redis: redis.url },
      storage: {
        driver: "s3",
        s3: {
          endpoint: s3.endpoint,
          bucket: onBucket,
          forcePathStyle: true,
          accessKeyId: s3.accessKeyId,
          secretAccessKey: s3.secretAccessKey,
        },
      },
    };
    return Promise.all([startTestMirror(fake.url, settings), startTestMirror(fake.url, settings)]);
  };
  /** /readyz of a replica says whether it reaches Redis. */
  const coordinated = async (m: MirrorProcess) => {
    const res = await fetch(`${m.url}/readyz`).catch(() => undefined);
    if (!res) return false;
    const body = (await res.json()) as { checks: Record<string, { ok: boolean; detail?: string }> };
    return body.checks.cluster !== undefined && body.checks.cluster.detail === undefined;
  };

  const spawnReplica = async (): Promise<MirrorProcess> =>
    spawnMirror({
      REGMIRROR_UPSTREAM: fake.url,
      REGMIRROR_CACHE_DIR: await mkdtemp(join(work, "replica-")),
      REGMIRROR_WORKERS: "1",
      REGMIRROR_CLUSTER_REDIS: redis.url,
      REGMIRROR_STORAGE_DRIVER: "s3",
      REGMIRROR_STORAGE_S3_ENDPOINT: s3.endpoint,
      REGMIRROR_STORAGE_S3_BUCKET: bucket,
      REGMIRROR_STORAGE_S3_REGION: s3.region,
      REGMIRROR_STORAGE_S3_FORCE_PATH_STYLE: "true",
      REGMIRROR_STORAGE_S3_ACCESS_KEY_ID: s3.accessKeyId,
      REGMIRROR_STORAGE_S3_SECRET_ACCESS_KEY: s3.secretAccessKey,
      REGMIRROR_TAG_TTL: "2s",
      REGMIRROR_ADMIN_TOKEN: ADMIN,
      REGMIRROR_HOSTED_REPOSITORIES: '["local/**"]',
      REGMIRROR_HOSTED_ANONYMOUS_PUSH: "true",
      REGMIRROR_HOSTED_DELETE: "true",
    });

  before(async () => {
    work = await mkdtemp(join(tmpdir(), "regmirror-replicas-"));
    [s3, redis, fake] = await Promise.all([startS3(), startRedis(), startFakeUpstream()]);
    bucket = await s3.newBucket();
    replicas = await Promise.all([spawnReplica(), spawnReplica(), spawnReplica()]);
    for (const m of replicas) await until(() => coordinated(m), "every replica reaches Redis");
  });
  after(async () => {
    for (const m of replicas ?? []) m.kill("SIGKILL");
    await Promise.all([fake?.stop(), redis?.stop(), s3?.stop()]);
    await rm(work, { recursive: true, force: true });
  });

  it("30 clients over 3 replicas, one cold 64 MiB blob: 1 upstream GET, 30 whole bodies, latecomers stream before it lands", async () => {
    const bytes = randomBytes(64 * MiB);
    const digest = fake.addBlob(bytes);
    fake.behave(digest, { slowBytesPerSec: 32 * MiB, method: "GET" });
    fake.resetRequests();
    const url = (i: number) => `${replicas[i % 3]!.url}/v2/library/big/blobs/${digest}`;
    const first = Array.from({ length: 3 }, (_, i) => getFresh(url(i)));
    await sleep(600);
    const late = Array.from({ length: 27 }, (_, i) => getFresh(url(i)));
    const all = await Promise.all([...first, ...late]);
    fake.clearBehaviours();
    for (const g of all) {
      assert.equal(g.status, 200);
      assert.ok(g.complete);
      assert.equal(g.digest, digest);
    }
    assert.equal(fake.count("GET", "/v2/library/big/blobs/"), 1, "one upstream GET for the cluster");
    const landed = Math.min(...all.map((g) => g.doneAt));
    for (const g of await Promise.all(late))
      assert.ok(g.firstByteAt < landed, "a latecomer's first byte came before the fill landed");
    await until(() => inBucket(digest), "the blob is in the bucket");
  });

  it("a blob filled through one replica is served by another with no upstream request", async () => {
    const bytes = randomBytes(3 * MiB);
    const digest = fake.addBlob(bytes);
    const a = await getFresh(`${replicas[0]!.url}/v2/library/shared/blobs/${digest}`);
    assert.equal(a.digest, digest);
    await until(() => inBucket(digest), "uploaded");
    fake.resetRequests();
    const c = await getFresh(`${replicas[2]!.url}/v2/library/shared/blobs/${digest}`);
    assert.equal(c.digest, digest);
    assert.equal(fake.requests.length, 0);
  });

  it("hosted repositories: a push through one replica is pulled through the others at once; an upload stays with its replica", async () => {
    fake.resetRequests();
    const [a, b, c] = replicas as [MirrorProcess, MirrorProcess, MirrorProcess];
    const bytes = randomBytes(2 * MiB);
    const blob = `sha256:${createHash("sha256").update(bytes).digest("hex")}`;
    const up = await fetch(`${a.url}/v2/local/shared/blobs/uploads/?digest=${blob}`, {
      method: "POST",
      body: new Uint8Array(bytes),
    });
    assert.equal(up.status, 201, await up.text());
    const OCI = "application/vnd.oci.image.manifest.v1+json";
    const manifest = JSON.stringify({
      schemaVersion: 2,
      mediaType: OCI,
      config: { mediaType: "application/vnd.oci.image.config.v1+json", digest: blob, size: bytes.length },
      layers: [],
    });
    const put = await fetch(`${a.url}/v2/local/shared/manifests/1`, {
      method: "PUT",
      body: manifest,
      headers: { "content-type": OCI },
    });
    assert.equal(put.status, 201, await put.text());
    for (const m of [b, c]) {
      assert.equal(await (await fetch(`${m.url}/v2/local/shared/manifests/1`)).text(), manifest);
      assert.equal((await getFresh(`${m.url}/v2/local/shared/blobs/${blob}`)).digest, blob);
      const tags = (await (await fetch(`${m.url}/v2/local/shared/tags/list`)).json()) as { tags: string[] };
      assert.deepEqual(tags.tags, ["1"]);
    }
    // Deleted through C: gone for A at once (nothing hosted is held in memory).
    assert.equal((await fetch(`${c.url}/v2/local/shared/manifests/1`, { method: "DELETE" })).status, 202);
    assert.equal((await fetch(`${a.url}/v2/local/shared/manifests/1`)).status, 404);
    // An upload session lives on the disk of the replica that started it (docs/hosted.md).
    const started = await fetch(`${a.url}/v2/local/shared/blobs/uploads/`, { method: "POST" });
    assert.equal(started.status, 202);
    const location = started.headers.get("location")!;
    const elsewhere = await fetch(`${b.url}${location}`, { method: "PATCH", body: "x" });
    assert.equal(elsewhere.status, 404);
    assert.equal(
      ((await elsewhere.json()) as { errors: Array<{ code: string }> }).errors[0]!.code,
      "BLOB_UPLOAD_UNKNOWN",
    );
    assert.equal((await fetch(`${a.url}${location}`, { method: "DELETE" })).status, 204);
    assert.equal(fake.requests.length, 0, "a hosted name never goes upstream");
  });

  it("/stats on any replica shows the cluster: every replica, and which one fills what", async () => {
    type Cluster = { cluster: { replicas: Array<{ url: string; filling: string[]; version: string }> } };
    const view = async (m: MirrorProcess) =>
      ((await (await fetch(`${m.url}/stats`)).json()) as Cluster).cluster;
    await until(async () => (await view(replicas[1]!)).replicas.length === 3, "three replicas registered");
    assert.deepEqual(
      (await view(replicas[2]!)).replicas.map((r) => r.url),
      replicas.map((m) => m.url).sort(),
    );
    const bytes = randomBytes(8 * MiB);
    const digest = fake.addBlob(bytes);
    fake.behave(digest, { slowBytesPerSec: 2 * MiB, method: "GET", times: 1 });
    const pending = getFresh(`${replicas[0]!.url}/v2/library/seen/blobs/${digest}`);
    await until(
      async () =>
        (await view(replicas[2]!)).replicas.some(
          (r) => r.url === replicas[0]!.url && r.filling.includes(digest),
        ),
      "replica C sees that A fills the blob",
      15_000,
    );
    assert.equal((await pending).digest, digest);
  });

  it("a tag past its TTL, asked through all three replicas, is revalidated with one HEAD", async () => {
    const manifest = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: "application/vnd.oci.image.manifest.v1+json",
        layers: [],
        config: {
          mediaType: "application/vnd.oci.image.config.v1+json",
          digest: `sha256:${"0".repeat(64)}`,
          size: 2,
        },
      }),
    );
    fake.addManifest("library/tagged", "v1", manifest, "application/vnd.oci.image.manifest.v1+json");
    const accept = { accept: "application/vnd.oci.image.manifest.v1+json" };
    const url = (i: number) => `${replicas[i % 3]!.url}/v2/library/tagged/manifests/v1`;
    for (const g of await Promise.all(Array.from({ length: 9 }, (_, i) => getFresh(url(i), accept))))
      assert.equal(g.status, 200);
    await sleep(2200); // past tag.ttl
    fake.resetRequests();
    for (const g of await Promise.all(Array.from({ length: 9 }, (_, i) => getFresh(url(i), accept))))
      assert.equal(g.status, 200);
    assert.equal(fake.count("HEAD", "/v2/library/tagged/manifests/"), 1);
    assert.equal(fake.count("GET", "/v2/library/tagged/manifests/"), 0);
  });

  it("a purge through one replica's admin API reaches them all: each fetches again", async () => {
    const bytes = randomBytes(200_000); // small: every replica keeps it in memory
    const digest = fake.addBlob(bytes);
    await getFresh(`${replicas[0]!.url}/v2/library/p/blobs/${digest}`);
    await until(() => inBucket(digest), "uploaded");
    for (const m of replicas)
      assert.equal((await getFresh(`${m.url}/v2/library/p/blobs/${digest}`)).digest, digest);
    const res = await fetch(`${replicas[0]!.url}/admin/purge`, {
      method: "POST",
      headers: { authorization: `Bearer ${ADMIN}`, "content-type": "application/json" },
      body: JSON.stringify({ ref: digest }),
    });
    assert.equal(res.status, 200, await res.clone().text());
    assert.equal(await inBucket(digest), false);
    await sleep(300); // the announcement travels through Redis
    fake.resetRequests();
    const b = await getFresh(`${replicas[1]!.url}/v2/library/p/blobs/${digest}`);
    assert.equal(b.digest, digest);
    assert.equal(
      fake.count("GET", "/v2/library/p/blobs/"),
      1,
      "replica B forgot its copy in memory and fetched again",
    );
  });

  it("hits do not touch Redis: warm blobs and manifests by digest, through every replica", async () => {
    const bytes = randomBytes(2 * MiB);
    const digest = fake.addBlob(bytes);
    const manifest = Buffer.from(
      JSON.stringify({ schemaVersion: 2, layers: [{ digest, size: bytes.length }] }),
    );
    const mDigest = fake.addManifest(
      "library/warm",
      undefined,
      manifest,
      "application/vnd.oci.image.manifest.v1+json",
    );
    const blobUrl = (i: number) => `${replicas[i % 3]!.url}/v2/library/warm/blobs/${digest}`;
    const manifestUrl = (i: number) => `${replicas[i % 3]!.url}/v2/library/warm/manifests/${mDigest}`;
    await getFresh(blobUrl(0));
    await until(() => inBucket(digest), "uploaded");
    for (let i = 0; i < 3; i++) await getFresh(manifestUrl(i));
    const commands = async () =>
      Number(/total_commands_processed:(\d+)/.exec(await redisInfo(redis.port))![1]);
    const before = await commands();
    for (let i = 0; i < 60; i++) {
      assert.equal((await getFresh(blobUrl(i))).digest, digest);
      assert.equal((await getFresh(manifestUrl(i))).status, 200);
    }
    const spent = (await commands()) - before - 1; // the INFO itself
    // Leases, renewals and replica records go on in the background, more of them the longer the
    // 120 requests take on a loaded machine (35 were seen): a hit that asked Redis would add at
    // least one each, so the bound is well below one per request, not a count of the background.
    assert.ok(spent < 60, `${spent} Redis commands during 120 warm requests`);
  });

  it("regmirror purge from a shell, with cluster.redis set, reaches every replica", async () => {
    const bytes = randomBytes(100_000);
    const digest = fake.addBlob(bytes);
    await getFresh(`${replicas[2]!.url}/v2/library/shell/blobs/${digest}`);
    await until(() => inBucket(digest), "uploaded");
    for (const m of replicas) await getFresh(`${m.url}/v2/library/shell/blobs/${digest}`); // in memory on each
    const purge = await cli(["purge", digest], {
      REGMIRROR_CACHE_DIR: await mkdtemp(join(work, "shell-")),
      REGMIRROR_CLUSTER_REDIS: redis.url,
      REGMIRROR_STORAGE_DRIVER: "s3",
      REGMIRROR_STORAGE_S3_ENDPOINT: s3.endpoint,
      REGMIRROR_STORAGE_S3_BUCKET: bucket,
      REGMIRROR_STORAGE_S3_FORCE_PATH_STYLE: "true",
      REGMIRROR_STORAGE_S3_ACCESS_KEY_ID: s3.accessKeyId,
      REGMIRROR_STORAGE_S3_SECRET_ACCESS_KEY: s3.secretAccessKey,
    });
    assert.equal(purge.code, 0, purge.stderr);
    await sleep(300);
    fake.resetRequests();
    assert.equal((await getFresh(`${replicas[0]!.url}/v2/library/shell/blobs/${digest}`)).digest, digest);
    assert.equal(
      fake.count("GET", "/v2/library/shell/blobs/"),
      1,
      "replica A forgot its copy and fetched again",
    );
  });

  it("Redis stopped: pulls still succeed on every replica; Redis back: one upstream GET per blob again", async () => {
    await redis.stop();
    for (const m of replicas)
      await until(async () => !(await coordinated(m)), "a replica notices Redis is gone");
    const ready = await fetch(`${replicas[0]!.url}/readyz`);
    assert.equal(ready.status, 200, "still ready without Redis");
    for (const m of replicas) {
      const bytes = randomBytes(MiB);
      const digest = fake.addBlob(bytes);
      assert.equal((await getFresh(`${m.url}/v2/library/alone/blobs/${digest}`)).digest, digest);
    }
    await redis.restart();
    for (const m of replicas) await until(() => coordinated(m), "a replica is back with Redis");
    const bytes = randomBytes(8 * MiB);
    const digest = fake.addBlob(bytes);
    fake.behave(digest, { slowBytesPerSec: 16 * MiB, method: "GET" });
    fake.resetRequests();
    const got = await Promise.all(
      Array.from({ length: 12 }, (_, i) =>
        getFresh(`${replicas[i % 3]!.url}/v2/library/back/blobs/${digest}`),
      ),
    );
    fake.clearBehaviours();
    for (const g of got) assert.equal(g.digest, digest);
    assert.equal(fake.count("GET", "/v2/library/back/blobs/"), 1);
  });

  it("with logins on, a token one replica issued is good at the others", async () => {
    const htpasswd = join(work, "htpasswd");
    await writeFile(htpasswd, `user:${bcrypt.hashSync("pw", 4)}\n`);
    const [a, b] = await twoInProcess(bucket, { auth: { htpasswd } });
    try {
      const basic = `Basic ${Buffer.from("user:pw").toString("base64")}`;
      const issued = await fetch(`${a.url}/auth/token?service=regmirror`, {
        headers: { authorization: basic },
      });
      assert.equal(issued.status, 200);
      const { token } = (await issued.json()) as { token: string };
      const atB = await fetch(`${b.url}/v2/`, { headers: { authorization: `Bearer ${token}` } });
      assert.equal(atB.status, 200, "B accepts A's token");
    } finally {
      await Promise.all([a.stop(), b.stop()]);
    }
  });

  it("eviction by size is done once for the cluster, whichever replica filled the blobs", async () => {
    const own = await s3.newBucket();
    const [a, b] = await twoInProcess(own, { cache: { maxSize: "2500KiB", blobMemory: 0 } });
    try {
      const count = async () =>
        (await s3.client().send(new ListObjectsV2Command({ Bucket: own, Prefix: "blobs/" }))).KeyCount ?? 0;
      const sizes = async () =>
        Promise.all([a, b].map(async (m) => value(await m.metrics(), "regmirror_cache_size_bytes")));
      const digests: string[] = [];
      for (let i = 0; i < 4; i++) {
        const d = fake.addBlob(randomBytes(MiB));
        digests.push(d);
        const via = i % 2 === 0 ? a : b;
        assert.equal((await getFresh(`${via.url}/v2/library/ev/blobs/${d}`)).digest, d);
        await sleep(100); // each is read last in the order it came
      }
      await until(async () => (await count()) === 2, "two of the four blobs left in the bucket");
      await until(async () => (await sizes()).includes(2 * MiB), "the holder counts exactly the two left");
      await sleep(500);
      assert.equal(await count(), 2);
      const left = await Promise.all(digests.map((d) => headIn(own, d)));
      assert.deepEqual(
        left,
        [false, false, true, true],
        "the least recently read went, wherever they came from",
      );
    } finally {
      await Promise.all([a.stop(), b.stop()]);
    }
  });

  it("SIGKILL of the filling replica mid-fill: nothing under the digest's key; a retry elsewhere fetches once more", async () => {
    const bytes = randomBytes(32 * MiB);
    const digest = fake.addBlob(bytes);
    fake.behave(digest, { slowBytesPerSec: 8 * MiB, method: "GET", times: 1 });
    fake.resetRequests();
    const owner = replicas[0]!;
    const doomed = getFresh(`${owner.url}/v2/library/killed/blobs/${digest}`);
    await sleep(300); // the owner's fill is under way: the next client follows it
    const follower = getFresh(`${replicas[1]!.url}/v2/library/killed/blobs/${digest}`);
    await sleep(500);
    owner.kill("SIGKILL");
    const [d, f] = await Promise.all([doomed, follower]);
    assert.equal(d.complete, false, "the owner's own client is cut");
    assert.equal(
      f.complete,
      false,
      "the follower on another replica is cut, never finished with wrong bytes",
    );
    assert.equal(await inBucket(digest), false, "nothing under the digest's key");
    const retry = await getFresh(`${replicas[2]!.url}/v2/library/killed/blobs/${digest}`);
    assert.equal(retry.digest, digest);
    assert.equal(fake.count("GET", "/v2/library/killed/blobs/"), 2, "one more upstream GET");
  });
});
