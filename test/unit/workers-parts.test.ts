// The small parts of workers mode that need no cluster: how many workers `auto` means, their
// node options, the relay of blob activity to the one eviction index, and the generation file
// purges bump.
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { availableParallelism, tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { describe, it } from "node:test";
import { deserialize, serialize } from "node:v8";
import { validateConfig } from "../../src/config/validate.ts";
import { cgroupCpus, resolveWorkers } from "../../src/cluster/cpus.ts";
import { workerExecArgv } from "../../src/cluster/primary.ts";
import { InProcessCoordinator } from "../../src/coordination/in-process.ts";
import { EvictionRelay, type BlobActivity } from "../../src/mirror/eviction-relay.ts";
import { bumpGeneration, watchGeneration } from "../../src/storage/generation.ts";
import { CachePaths } from "../../src/storage/paths.ts";
import { tempName, tempOwner } from "../../src/storage/atomic.ts";

describe("workers: auto", () => {
  it("reads the cgroup quota, and takes the smaller of it and the CPUs we may run on", () => {
    assert.equal(cgroupCpus("150000 100000\n"), 1.5);
    assert.equal(cgroupCpus("max 100000\n"), undefined);
    assert.equal(cgroupCpus(undefined), undefined);
    assert.equal(resolveWorkers("auto", "100000 100000"), 1);
    assert.equal(resolveWorkers("auto", "150000 100000"), Math.min(2, availableParallelism()));
    assert.equal(resolveWorkers("auto", "max 100000"), availableParallelism());
    assert.equal(resolveWorkers(3, "100000 100000"), 3, "a number is taken as it is");
  });
});

describe("workers' node options", () => {
  it("cap the young generation, unless the operator set it on the command line or in NODE_OPTIONS", () => {
    assert.deepEqual(workerExecArgv(["--import", "tsx"], undefined), [
      "--import",
      "tsx",
      "--max-semi-space-size=4",
    ]);
    assert.deepEqual(workerExecArgv(["--max-semi-space-size=16"], ""), ["--max-semi-space-size=16"]);
    assert.deepEqual(workerExecArgv([], "--max_semi_space_size=2 --trace-gc"), []);
  });
});

describe("the configuration handed to the workers", () => {
  it("crosses the IPC pipe (a structured clone) unchanged: the workers never validate it again", () => {
    const config = validateConfig({
      listen: "127.0.0.1:5555",
      upstream: { url: "https://registry-1.docker.io" },
      cache: { maxSize: "10GiB", blobTTL: "30d" },
      access: { allow: ["library/*"] },
      upstreams: [{ name: "ghcr.io", url: "https://ghcr.io" }],
    });
    assert.deepStrictEqual(deserialize(serialize(config)), config);
  });
});

describe("temp names", () => {
  it("start with the pid, so the primary removes exactly a dead worker's", () => {
    const name = tempName("/x/tmp").slice("/x/tmp/".length);
    assert.equal(tempOwner(name), process.pid);
    assert.equal(tempOwner("lz3k-0123abcd"), undefined);
  });
});

async function until(ok: () => boolean): Promise<void> {
  const deadline = Date.now() + 2000;
  while (!ok() && Date.now() < deadline) await sleep(5);
}

describe("EvictionRelay", () => {
  it("passes commits on at once and reads in batches, each digest once", async () => {
    const coordinator = new InProcessCoordinator();
    const events = coordinator.events<BlobActivity>("blob-activity");
    const seen: BlobActivity[] = [];
    events.subscribe((b) => seen.push(b));
    const relay = new EvictionRelay(events, (err) => assert.fail(err));
    relay.added("aa", 10);
    await until(() => seen.length > 0);
    assert.deepEqual(seen, [{ added: [["aa", 10]], read: [] }]);
    for (let i = 0; i < 100; i++) relay.read(i % 2 ? "bb" : "cc");
    await sleep(5);
    assert.equal(seen.length, 1, "reads wait for the batch");
    relay.flush();
    await until(() => seen.length > 1);
    assert.deepEqual(seen[1], { added: [], read: ["cc", "bb"] });
  });
});

describe("the cache generation", () => {
  it("tells a watcher (another process, in real life) that a maintenance command removed files", async () => {
    const dir = await mkdtemp(join(tmpdir(), "regmirror-gen-"));
    try {
      const paths = new CachePaths(dir);
      let changes = 0;
      const stop = watchGeneration(paths, () => changes++);
      await bumpGeneration(paths);
      await until(() => changes > 0);
      assert.ok(changes >= 1);
      stop();
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
