// regmirror as a process: killed in the middle of fills it restarts clean; told to stop it lets
// responses finish first.
import assert from "node:assert/strict";
import { randomBytes, createHash } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { after, before, describe, it } from "node:test";
import { request } from "undici";
import { startFakeUpstream, type FakeUpstream } from "../fixtures/fake-upstream.ts";
import { spawnMirror } from "../fixtures/mirror-process.ts";
import { get } from "../fixtures/http.ts";

const MiB = 1024 * 1024;

async function cachedBlobs(dir: string): Promise<string[]> {
  const root = join(dir, "blobs", "sha256");
  const out: string[] = [];
  for (const p of await readdir(root))
    for (const n of await readdir(join(root, p))) out.push(join(root, p, n));
  return out;
}

describe("regmirror as a process", () => {
  let fake: FakeUpstream;
  let cacheDir: string;
  before(async () => {
    fake = await startFakeUpstream();
    cacheDir = await mkdtemp(join(tmpdir(), "regmirror-proc-"));
  });
  after(async () => {
    await fake.stop();
    await rm(cacheDir, { recursive: true, force: true });
  });

  it("restarts after SIGKILL mid-fill with no temp files and only verified blobs", async () => {
    const dir = join(cacheDir, "kill");
    const env = { REGMIRROR_UPSTREAM: fake.url, REGMIRROR_CACHE_DIR: dir };
    const m = await spawnMirror(env);
    const done = Array.from({ length: 2 }, () => fake.addBlob(randomBytes(MiB)));
    for (const d of done) assert.equal((await get(`${m.url}/v2/library/k/blobs/${d}`)).digest, d);
    const slow = Array.from({ length: 3 }, () => fake.addBlob(randomBytes(8 * MiB)));
    for (const d of slow) fake.behave(d, { slowBytesPerSec: 4 * MiB, times: 1 });
    // Killed mid-transfer, a request may fail before or after its headers: either way not whole.
    const pending = slow.map((d) => get(`${m.url}/v2/library/k/blobs/${d}`).catch(() => undefined));
    const deadline = Date.now() + 5000;
    while ((await readdir(join(dir, "tmp"))).length < slow.length && Date.now() < deadline) await sleep(20);
    assert.equal((await readdir(join(dir, "tmp"))).length, slow.length, "fills were under way");
    m.kill("SIGKILL");
    await m.exited;
    for (const r of await Promise.all(pending))
      assert.equal(r !== undefined && r.complete && r.length === 8 * MiB, false);

    const again = await spawnMirror(env);
    try {
      assert.deepEqual(await readdir(join(dir, "tmp")), [], "debris removed at start");
      const files = await cachedBlobs(dir);
      assert.equal(files.length, done.length, "only the completed blobs are cached");
      for (const f of files) {
        const hex = createHash("sha256")
          .update(await readFile(f))
          .digest("hex");
        assert.ok(f.endsWith(hex), `${f} re-hashes to its name`);
      }
      for (const d of slow) assert.equal((await get(`${again.url}/v2/library/k/blobs/${d}`)).digest, d);
    } finally {
      again.kill("SIGTERM");
      await again.exited;
    }
  });

  it("on SIGTERM stops accepting, finishes the response in flight, and leaves no temp files", async () => {
    const dir = join(cacheDir, "term");
    const m = await spawnMirror({ REGMIRROR_UPSTREAM: fake.url, REGMIRROR_CACHE_DIR: dir });
    const d = fake.addBlob(randomBytes(6 * MiB));
    fake.behave(d, { slowBytesPerSec: 6 * MiB, times: 1 });
    const inflight = get(`${m.url}/v2/library/t/blobs/${d}`);
    await sleep(300);
    m.kill("SIGTERM");
    await sleep(100);
    await assert.rejects(request(`${m.url}/v2/`), "no new connections once stopping");
    const r = await inflight;
    assert.ok(r.complete);
    assert.equal(r.digest, d, "the response in flight finished whole");
    assert.equal(await m.exited, 0);
    assert.deepEqual(await readdir(join(dir, "tmp")), []);
    assert.ok(
      existsSync(join(dir, "blobs", "sha256", d.slice(7, 9), d.slice(7))),
      "and its fill was committed",
    );
  });
});
