// regmirror with workers=2, as a real process tree: what one process guarantees holds across
// the workers (one upstream GET per blob, one HEAD per tag TTL, purge seen by all, exact
// metrics), and a worker killed mid-fill costs its followers a connection, never a wrong blob.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { get as httpGet } from "node:http";
import { mkdtemp, readdir, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { after, before, describe, it } from "node:test";
import { startUpstream, type Upstream } from "../fixtures/upstream.ts";
import { startFakeUpstream, type FakeUpstream } from "../fixtures/fake-upstream.ts";
import { addImage, buildImage, pushImage, pushRandomBlob } from "../fixtures/images.ts";
import { spawnMirror, type MirrorProcess } from "../fixtures/mirror-process.ts";
import { getFresh } from "../fixtures/http.ts";
import { makeCert, peerCommonName } from "../fixtures/tls.ts";
import { freePort } from "../fixtures/ports.ts";
import { rename, writeFile } from "node:fs/promises";
import bcrypt from "bcryptjs";
import { cli } from "../fixtures/cli.ts";

const MiB = 1024 * 1024;

/** The worker ids that logged a request line for a path containing `needle` (waits for the log). */
async function workersServing(m: MirrorProcess, needle: string, want = 2): Promise<Set<string>> {
  const deadline = Date.now() + 3000;
  let ids = loggedBy(m, needle);
  while (ids.size < want && Date.now() < deadline) {
    await sleep(50);
    ids = loggedBy(m, needle);
  }
  return ids;
}

function loggedBy(m: MirrorProcess, needle: string): Set<string> {
  const ids = new Set<string>();
  for (const line of m.stdout().split("\n")) {
    if (!line.includes(needle)) continue;
    try {
      const e = JSON.parse(line) as { message?: string; worker?: unknown };
      if (e.message === "request") ids.add(String(e.worker));
    } catch {
      // a line cut by the buffer: not a request line we need
    }
  }
  return ids;
}

/**
 * Spawned with workers=2 at log level info, once every worker listens: /healthz answers as soon
 * as the first one does, and until the second listens the first gets every connection.
 */
/**
 * A mirror with two workers. Connections are dealt out to them in turn (node's round robin,
 * NODE_CLUSTER_SCHED_POLICY=rr), so that a test can put two clients on different workers by
 * connecting one after the other. `accept: "workers"` keeps the default instead, where the
 * workers accept for themselves and the kernel decides (cluster/primary.ts).
 */
async function spawnWorkers(
  env: Record<string, string>,
  accept: "in turn" | "workers" = "in turn",
): Promise<MirrorProcess> {
  const placement: Record<string, string> = accept === "in turn" ? { NODE_CLUSTER_SCHED_POLICY: "rr" } : {};
  const m = await spawnMirror({ REGMIRROR_WORKERS: "2", REGMIRROR_LOG_LEVEL: "info", ...placement, ...env });
  const deadline = Date.now() + 20_000;
  while (!m.stdout().includes('"regmirror workers started"') && Date.now() < deadline) await sleep(50);
  return m;
}

async function metric(url: string, name: string, labels: string): Promise<number> {
  const text = await (await fetch(`${url}/metrics`)).text();
  let sum = 0;
  for (const line of text.split("\n"))
    if ((line.startsWith(name + "{") || line.startsWith(name + " ")) && line.includes(labels))
      sum += Number(line.split(" ").pop());
  return sum;
}

async function blobBytes(cacheDir: string): Promise<number> {
  const root = join(cacheDir, "blobs", "sha256");
  let total = 0;
  for (const p of await readdir(root))
    for (const n of await readdir(join(root, p))) total += (await stat(join(root, p, n))).size;
  return total;
}

describe("workers=2 against distribution 2.8 with token auth", { timeout: 180_000 }, () => {
  let upstream: Upstream;
  let cacheDir: string;
  let m: MirrorProcess;
  before(async () => {
    upstream = await startUpstream({ auth: "token" });
    cacheDir = await mkdtemp(join(tmpdir(), "regmirror-workers-"));
    m = await spawnWorkers(
      {
        REGMIRROR_UPSTREAM: upstream.url,
        REGMIRROR_UPSTREAM_PRIVATE_REDIRECTS: "true",
        REGMIRROR_CACHE_DIR: cacheDir,
        REGMIRROR_WORKERS: "2",
        REGMIRROR_LOG_LEVEL: "info",
        REGMIRROR_TAG_TTL: "2s",
      },
      "workers",
    );
  });
  after(async () => {
    m.kill("SIGTERM");
    assert.equal(await m.exited, 0, "SIGTERM drains every worker and the primary exits 0");
    await upstream.stop();
    await rm(cacheDir, { recursive: true, force: true });
  });

  it("32 concurrent GETs of one cold blob, on both workers: 1 upstream GET, 32 whole bodies", async () => {
    const blob = await pushRandomBlob(upstream, "w/cold", 24 * MiB);
    await upstream.resetRequests();
    const got = await Promise.all(
      Array.from({ length: 32 }, () => getFresh(`${m.url}/v2/w/cold/blobs/${blob.digest}`)),
    );
    for (const g of got) {
      assert.equal(g.status, 200);
      assert.equal(g.digest, blob.digest);
    }
    // The body once; the 401 before it is the token challenge.
    const gets = (await upstream.requests()).filter(
      (r) => r.method === "GET" && r.path.startsWith("/v2/w/cold/blobs/") && r.status === 200,
    );
    assert.equal(gets.length, 1, JSON.stringify(gets));
    assert.equal((await workersServing(m, blob.digest)).size, 2, "the requests reached both workers");
  });

  it("a tag past its TTL, asked through both workers, is revalidated with one HEAD", async () => {
    await pushImage(upstream, "w/tagged", "v1");
    const url = `${m.url}/v2/w/tagged/manifests/v1`;
    const accept = { accept: "application/vnd.docker.distribution.manifest.v2+json" };
    for (const g of await Promise.all(Array.from({ length: 16 }, () => getFresh(url, accept))))
      assert.equal(g.status, 200);
    await sleep(2200); // past tag.ttl
    await upstream.resetRequests();
    for (const g of await Promise.all(Array.from({ length: 16 }, () => getFresh(url, accept))))
      assert.equal(g.status, 200);
    // And again, one at a time: a worker whose copy in memory is old reads the other's record.
    for (let i = 0; i < 8; i++) assert.equal((await getFresh(url, accept)).status, 200);
    assert.equal(await upstream.count("HEAD", "/v2/w/tagged/manifests/"), 1);
    assert.equal(await upstream.count("GET", "/v2/w/tagged/manifests/"), 0);
  });

  it("/metrics sums every worker: blob hits and misses equal the requests sent", async () => {
    const blob = await pushRandomBlob(upstream, "w/count", 64 * 1024);
    const before = await metric(m.url, "regmirror_cache_hits_total", 'kind="blob"');
    const beforeMiss = await metric(m.url, "regmirror_cache_misses_total", 'kind="blob"');
    assert.equal((await getFresh(`${m.url}/v2/w/count/blobs/${blob.digest}`)).status, 200);
    const got = await Promise.all(
      Array.from({ length: 39 }, () => getFresh(`${m.url}/v2/w/count/blobs/${blob.digest}`)),
    );
    for (const g of got) assert.equal(g.digest, blob.digest);
    const hits = (await metric(m.url, "regmirror_cache_hits_total", 'kind="blob"')) - before;
    const misses = (await metric(m.url, "regmirror_cache_misses_total", 'kind="blob"')) - beforeMiss;
    assert.equal(hits + misses, 40);
    assert.equal(misses, 1);
    // One eviction index for both workers: its byte total is exactly what is on disk.
    const onDisk = await blobBytes(cacheDir);
    const deadline = Date.now() + 3000;
    let counted = await metric(m.url, "regmirror_cache_size_bytes", "");
    while (counted !== onDisk && Date.now() < deadline) {
      await sleep(50);
      counted = await metric(m.url, "regmirror_cache_size_bytes", "");
    }
    assert.equal(counted, onDisk);
    // Process metrics are not summed: each worker's keep its label.
    const text = await (await fetch(`${m.url}/metrics`)).text();
    for (const worker of ["primary", "1", "2"])
      assert.match(text, new RegExp(`regmirror_process_resident_memory_bytes\\{worker="${worker}"\\}`));
    assert.equal((await workersServing(m, blob.digest)).size, 2);
  });
});

describe("workers=2 with faults (fake upstream)", { timeout: 180_000 }, () => {
  let fake: FakeUpstream;
  let root: string;
  before(async () => {
    fake = await startFakeUpstream();
    root = await mkdtemp(join(tmpdir(), "regmirror-workers-f-"));
  });
  after(async () => {
    await fake.stop();
    await rm(root, { recursive: true, force: true });
  });

  it("latecomers in the other worker follow a slow fill as it lands", async () => {
    const dir = join(root, "follow");
    const m = await spawnWorkers({
      REGMIRROR_UPSTREAM: fake.url,
      REGMIRROR_CACHE_DIR: dir,
      REGMIRROR_WORKERS: "2",
      REGMIRROR_LOG_LEVEL: "info",
    });
    try {
      const d = fake.addBlob(randomBytes(8 * MiB));
      fake.behave(d, { slowBytesPerSec: 8 * MiB, times: 1 });
      const got = await Promise.all(
        Array.from({ length: 16 }, (_, i) =>
          sleep(i * 20).then(() => getFresh(`${m.url}/v2/library/f/blobs/${d}`)),
        ),
      );
      for (const g of got) assert.equal(g.digest, d);
      assert.equal(fake.count("GET", "/v2/library/f/blobs/"), 1);
      assert.equal((await workersServing(m, d)).size, 2);
      // Bytes as they land, in either worker: every client had its first byte before any client
      // had its last (the last byte waits for the digest check at the end of the fill).
      const firstBytes = Math.max(...got.map((g) => g.firstByteAt));
      assert.ok(firstBytes < Math.min(...got.map((g) => g.doneAt)), "no client waited for the fill to end");
      assert.ok((await metric(m.url, "regmirror_coalesced_requests_total", 'kind="blob"')) >= 15);
    } finally {
      m.kill("SIGTERM");
      await m.exited;
    }
  });

  it("a follower in another worker keeps a fill going after the owner's own client hung up", async () => {
    const dir = join(root, "abandon");
    const m = await spawnWorkers({
      REGMIRROR_UPSTREAM: fake.url,
      REGMIRROR_CACHE_DIR: dir,
      REGMIRROR_CACHE_ABANDONED_FILL_TIMEOUT: "1s",
    });
    try {
      const d = fake.addBlob(randomBytes(6 * MiB));
      fake.behave(d, { slowBytesPerSec: 2 * MiB, times: 1 });
      const url = `${m.url}/v2/library/a/blobs/${d}`;
      // The first client starts the fill and hangs up; the second, on the other worker (connections
      // are dealt out in turn), follows it to the end, 3 s later: three times the abandoned limit.
      const first = new AbortController();
      const started = new Promise<void>((resolve, reject) => {
        const req = httpGet(url, { agent: false, signal: first.signal }, (res) => {
          res.once("data", () => resolve());
          res.on("error", () => undefined);
        });
        req.on("error", (err) => (first.signal.aborted ? undefined : reject(err)));
      });
      await started;
      const follower = getFresh(url);
      await sleep(300);
      first.abort();
      const got = await follower;
      assert.equal(got.digest, d, "the follower got the whole blob");
      assert.equal(fake.count("GET", "/v2/library/a/blobs/"), 1);
      assert.equal((await workersServing(m, d)).size, 2, "the two clients were on different workers");
    } finally {
      m.kill("SIGTERM");
      await m.exited;
    }
  });

  for (const [what, behaviour] of [
    ["sends wrong bytes", { wrongDigest: true }],
    ["cuts the transfer halfway", { cutAt: 0.5 }],
  ] as const) {
    it(`an upstream that ${what}: no client in either worker gets a whole body, nothing is cached`, async () => {
      const dir = join(root, `fault-${what.split(" ")[0]}`);
      const m = await spawnWorkers({ REGMIRROR_UPSTREAM: fake.url, REGMIRROR_CACHE_DIR: dir });
      try {
        const d = fake.addBlob(randomBytes(4 * MiB));
        fake.behave(d, { ...behaviour, slowBytesPerSec: 8 * MiB, times: 1 });
        const url = `${m.url}/v2/library/w/blobs/${d}`;
        const got = await Promise.all(
          Array.from({ length: 8 }, (_, i) => sleep(i * 20).then(() => getFresh(url))),
        );
        for (const g of got) assert.ok(!(g.complete && g.length === 4 * MiB), "every transfer was cut short");
        assert.equal((await workersServing(m, d)).size, 2);
        assert.deepEqual(await readdir(join(dir, "blobs", "sha256")).catch(() => []), [], "nothing cached");
        const again = await getFresh(url);
        assert.equal(again.digest, d, "the next request fetches again, and right");
      } finally {
        m.kill("SIGTERM");
        await m.exited;
      }
    });
  }

  it("limits.perClient holds for the mirror as a whole, not per worker", async () => {
    const dir = join(root, "per-client");
    const m = await spawnWorkers({
      REGMIRROR_UPSTREAM: fake.url,
      REGMIRROR_CACHE_DIR: dir,
      REGMIRROR_LIMITS_PER_CLIENT: "4",
    });
    try {
      const d = fake.addBlob(randomBytes(4 * MiB));
      fake.behave(d, { slowBytesPerSec: 4 * MiB, times: 1 });
      // Eight at once from one address, each in flight for about a second: on both workers.
      const got = await Promise.all(
        Array.from({ length: 8 }, () => getFresh(`${m.url}/v2/library/l/blobs/${d}`)),
      );
      const ok = got.filter((g) => g.status === 200);
      for (const g of ok) assert.equal(g.digest, d);
      assert.ok(ok.length <= 4, `at most perClient in flight: ${got.map((g) => g.status).join(",")}`);
      assert.ok(got.every((g) => g.status === 200 || g.status === 429));
    } finally {
      m.kill("SIGTERM");
      await m.exited;
    }
  });

  it("SIGKILL of the worker running a fill: followers are cut, temp files go, the cache verifies, the next pull works", async () => {
    const dir = join(root, "kill");
    const env = { REGMIRROR_UPSTREAM: fake.url, REGMIRROR_CACHE_DIR: dir, REGMIRROR_WORKERS: "2" };
    const m = await spawnWorkers(env);
    try {
      const d = fake.addBlob(randomBytes(16 * MiB));
      fake.behave(d, { slowBytesPerSec: 4 * MiB, times: 1 });
      const pending = Array.from({ length: 8 }, () => getFresh(`${m.url}/v2/library/k/blobs/${d}`));
      let owner: number | undefined;
      const deadline = Date.now() + 5000;
      while (owner === undefined && Date.now() < deadline) {
        const [name] = await readdir(join(dir, "tmp"));
        owner = name ? Number(name.split(".")[0]) : undefined;
        if (owner === undefined) await sleep(20);
      }
      assert.ok(owner, "a fill was under way");
      await sleep(500);
      process.kill(owner, "SIGKILL");
      // Killed a quarter of the way in: every client, in either worker, sees its transfer cut.
      for (const g of await Promise.all(pending)) assert.equal(g.complete && g.length === 16 * MiB, false);
      const clean = Date.now() + 2000;
      while ((await readdir(join(dir, "tmp"))).length > 0 && Date.now() < clean) await sleep(20);
      assert.deepEqual(await readdir(join(dir, "tmp")), [], "the dead worker's temp files are gone");
      const verify = await cli(["verify", "--json"], { REGMIRROR_CACHE_DIR: dir });
      assert.equal(verify.code, 0, verify.stdout);
      assert.deepEqual((JSON.parse(verify.stdout) as { corrupt: unknown[] }).corrupt, []);
      const again = await getFresh(`${m.url}/v2/library/k/blobs/${d}`);
      assert.equal(again.digest, d, "the next pull works");
      // The primary forked a replacement (worker 3), which serves: requests reach two workers again.
      assert.match(m.stdout(), /a worker died; starting another/);
      const replaced = Date.now() + 20_000;
      let served = new Set<string>();
      while (!served.has("3") && Date.now() < replaced) {
        await Promise.all(Array.from({ length: 4 }, () => getFresh(`${m.url}/v2/library/k/blobs/${d}`)));
        served = loggedBy(m, d);
        if (!served.has("3")) await sleep(100);
      }
      assert.ok(served.has("3"), `the replacement serves: ${[...served].join(",")}`);
    } finally {
      m.kill("SIGTERM");
      await m.exited;
    }
  });

  it("after `regmirror purge` from a shell, no worker serves what it held in memory", async () => {
    const dir = join(root, "purge");
    const env = { REGMIRROR_UPSTREAM: fake.url, REGMIRROR_CACHE_DIR: dir, REGMIRROR_WORKERS: "2" };
    const m = await spawnWorkers(env);
    try {
      const img = buildImage();
      addImage(fake, "library/p", "v1", img);
      const url = `${m.url}/v2/library/p/manifests/v1`;
      const blobUrl = `${m.url}/v2/library/p/blobs/${img.config.digest}`;
      // Both workers hold the manifest, the tag and the small config blob in memory.
      for (const g of await Promise.all(Array.from({ length: 16 }, () => getFresh(url))))
        assert.equal(g.status, 200);
      for (const g of await Promise.all(Array.from({ length: 16 }, () => getFresh(blobUrl))))
        assert.equal(g.status, 200);
      assert.equal((await workersServing(m, "/library/p/manifests/v1")).size, 2);
      assert.equal((await workersServing(m, img.config.digest)).size, 2);
      // Gone upstream too: a worker that still answers 200 answered from memory.
      fake.removeTag("library/p", "v1");
      fake.behave(img.config.digest, { status: 503 });
      assert.equal((await cli(["purge", "p:v1"], env)).code, 0);
      assert.equal((await cli(["purge", "--older-than", "0s"], env)).code, 0);
      await sleep(300);
      for (const g of await Promise.all(Array.from({ length: 16 }, () => getFresh(url))))
        assert.equal(g.status, 404);
      for (const g of await Promise.all(Array.from({ length: 16 }, () => getFresh(blobUrl))))
        assert.notEqual(g.status, 200);
    } finally {
      fake.clearBehaviours();
      m.kill("SIGTERM");
      await m.exited;
    }
  });
});

const basic = (user: string, pw: string) => `Basic ${Buffer.from(`${user}:${pw}`).toString("base64")}`;

describe("workers=2 with logins and TLS", { timeout: 180_000 }, () => {
  let fake: FakeUpstream;
  let root: string;
  let m: MirrorProcess;
  let tlsPort: number;
  before(async () => {
    fake = await startFakeUpstream();
    root = await mkdtemp(join(tmpdir(), "regmirror-workers-a-"));
    await writeFile(join(root, "htpasswd"), `alice:${bcrypt.hashSync("pw", 4)}\n`);
    const cert = makeCert(root, "first");
    tlsPort = await freePort();
    m = await spawnWorkers({
      REGMIRROR_UPSTREAM: fake.url,
      REGMIRROR_CACHE_DIR: join(root, "cache"),
      REGMIRROR_AUTH_HTPASSWD: join(root, "htpasswd"),
      REGMIRROR_AUTH_MAX_FAILED_LOGINS: "4",
      REGMIRROR_TLS_CERT: cert.cert,
      REGMIRROR_TLS_KEY: cert.key,
      REGMIRROR_TLS_LISTEN: `127.0.0.1:${tlsPort}`,
    });
  });
  after(async () => {
    m.kill("SIGTERM");
    await m.exited;
    await fake.stop();
    await rm(root, { recursive: true, force: true });
  });

  it("a token one worker issued is good in every worker", async () => {
    const d = fake.addBlob(randomBytes(1000));
    const tok = await fetch(`${m.url}/auth/token`, { headers: { authorization: basic("alice", "pw") } });
    const { token } = (await tok.json()) as { token: string };
    const got = await Promise.all(
      Array.from({ length: 16 }, () =>
        getFresh(`${m.url}/v2/library/t/blobs/${d}`, { authorization: `Bearer ${token}` }),
      ),
    );
    for (const g of got) assert.equal(g.status, 200);
    assert.equal((await workersServing(m, d)).size, 2);
  });

  it("failed logins count against the limit in every worker", async () => {
    const statuses: number[] = [];
    for (let i = 0; i < 8; i++)
      statuses.push(
        (await getFresh(`${m.url}/auth/token`, { authorization: basic("alice", `wrong-${i}`) })).status,
      );
    // Four failures, spread over both workers, use up the limit of four for the address.
    assert.deepEqual(statuses.slice(0, 4), [401, 401, 401, 401]);
    // Round robin hands the connections to the workers in turn: alone, each would have seen
    // four failures only by the eighth request.
    assert.ok(
      statuses.slice(5).every((s) => s === 429),
      JSON.stringify(statuses),
    );
  });

  it("SIGHUP to the primary reloads the certificate in every worker", async () => {
    assert.equal(await peerCommonName(`https://127.0.0.1:${tlsPort}`), "first");
    const second = makeCert(root, "second");
    await rename(second.cert, join(root, "first.crt"));
    await rename(second.key, join(root, "first.key"));
    m.kill("SIGHUP");
    await sleep(500);
    // Connections spread over both workers: none may still present the old certificate.
    const names = await Promise.all(
      Array.from({ length: 8 }, () => peerCommonName(`https://127.0.0.1:${tlsPort}`)),
    );
    assert.deepEqual(new Set(names), new Set(["second"]));
  });
});
