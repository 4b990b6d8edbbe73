// FillFollower: a fill in another worker, followed through its temp file on a real disk (the
// file is what crosses between workers), with the flight's end played by hand.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { appendFile, mkdtemp, rename, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { after, before, describe, it } from "node:test";
import { FillFollower, FillFollowerError } from "../../src/mirror/fill-follower.ts";
import { filesystemCache } from "../../src/storage/cache.ts";

/** As a client's answer does: joined for as long as it reads. */
async function readAll(f: FillFollower, start = 0, end?: number): Promise<Buffer> {
  const leave = f.join();
  try {
    const chunks: Buffer[] = [];
    for await (const c of f.stream(start, end)) chunks.push(c as Buffer);
    return Buffer.concat(chunks);
  } finally {
    leave();
  }
}

function ending() {
  let end!: (how: "done" | "failed") => void;
  const ended = new Promise<"done" | "failed">((r) => (end = r));
  return { ended, end };
}

describe("FillFollower", () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "regmirror-follower-"));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });
  /** The published blob, as the storage driver would open it. */
  const published = (path: string) => async () => await filesystemCache(dir).driver.open(relative(dir, path));
  const noFallback = () => {
    throw new Error("no fallback expected");
  };

  it("follows the file as it grows and holds the last byte until the flight ends done", async () => {
    const temp = join(dir, "a.tmp");
    const final = join(dir, "a");
    const body = randomBytes(300_000);
    await writeFile(temp, body.subarray(0, 1000));
    const { ended, end } = ending();
    const f = new FillFollower({ temp, size: body.length }, ended, published(final), noFallback);
    const got = readAll(f);
    await sleep(10);
    await appendFile(temp, body.subarray(1000));
    let settled = false;
    void got.then(() => (settled = true));
    await sleep(30);
    assert.equal(settled, false, "the whole file is there, but not verified yet");
    await rename(temp, final); // the owner's commit
    end("done");
    assert.deepEqual(await got, body);
  });

  it("serves many readers of one worker from one descriptor, each from its own offset", async () => {
    const temp = join(dir, "m.tmp");
    const body = randomBytes(1_000_000);
    await writeFile(temp, body.subarray(0, 10));
    const { ended, end } = ending();
    const f = new FillFollower({ temp, size: body.length }, ended, published(join(dir, "m")), noFallback);
    const reads = [0, 1, 500_000, 999_999].map((start) => readAll(f, start));
    for (let at = 10; at < body.length; at += 100_000) {
      await sleep(3);
      await appendFile(temp, body.subarray(at, Math.min(body.length, at + 100_000)));
    }
    end("done");
    const got = await Promise.all(reads);
    assert.deepEqual(
      got,
      [0, 1, 500_000, 999_999].map((start) => body.subarray(start)),
    );
  });

  it("starts each reader with small reads, so a burst of clients all get a first byte soon", async () => {
    const temp = join(dir, "s.tmp");
    const final = join(dir, "s");
    const body = randomBytes(3 * 1024 * 1024);
    await writeFile(temp, body);
    await rename(temp, final);
    const { ended, end } = ending();
    end("done");
    const f = new FillFollower({ temp, size: body.length }, ended, published(final), noFallback);
    const sizes: number[] = [];
    const leave = f.join();
    for await (const c of f.stream(0, undefined)) sizes.push((c as Buffer).length);
    leave();
    assert.equal(
      sizes[0],
      64 * 1024,
      "a megabyte read and copied for each client first would hold the last one back",
    );
    assert.equal(Math.max(...sizes), 1024 * 1024, "then reads grow to a megabyte");
    assert.equal(
      sizes.reduce((a, b) => a + b),
      body.length,
    );
  });

  it("tells the owner once that this worker follows and once that it stopped, however many clients", async () => {
    const temp = join(dir, "t.tmp");
    await writeFile(temp, Buffer.alloc(10));
    const { ended, end } = ending();
    const told: number[] = [];
    const f = new FillFollower({ temp, size: 100 }, ended, published(join(dir, "t")), noFallback, (d) =>
      told.push(d),
    );
    const leaves = [f.join(), f.join(), f.join()];
    leaves[0]!();
    leaves[0]!(); // a second call does nothing
    leaves[1]!();
    assert.deepEqual(told, [1], "one message through the primary for the burst, not one a client");
    leaves[2]!();
    assert.deepEqual(told, [1, -1]);
    f.join()();
    assert.deepEqual(told, [1, -1, 1, -1]);
    end("failed");
    await sleep(1);
    f.join()();
    assert.deepEqual(told, [1, -1, 1, -1], "after the fill, nobody keeps it alive");
  });

  it("opens the published blob when the owner committed before the follower opened", async () => {
    const final = join(dir, "b");
    const body = randomBytes(5000);
    await writeFile(final, body);
    const f = new FillFollower(
      { temp: join(dir, "b.gone"), size: body.length },
      Promise.resolve("done"),
      published(final),
      noFallback,
    );
    assert.deepEqual(await readAll(f, 100, 199), body.subarray(100, 200));
  });

  it("cuts every reader when the flight ends failed (a bad digest, or its worker died)", async () => {
    const temp = join(dir, "c.tmp");
    await writeFile(temp, randomBytes(4000));
    const { ended, end } = ending();
    const f = new FillFollower({ temp, size: 10_000 }, ended, published(join(dir, "c")), noFallback);
    const got = readAll(f);
    await sleep(10);
    end("failed");
    await assert.rejects(got, FillFollowerError);
    assert.equal(f.state, "failed");
  });

  it("goes straight to the upstream when the owner could not start a cache file", async () => {
    const body = randomBytes(1000);
    const f = new FillFollower(
      { temp: "", size: body.length },
      Promise.resolve("done"),
      published(join(dir, "d")),
      (start, end) =>
        (async function* () {
          yield body.subarray(start, (end ?? body.length - 1) + 1);
        })(),
    );
    assert.deepEqual(await readAll(f, 10), body.subarray(10));
  });
});
