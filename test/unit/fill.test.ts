// BlobFill and FillWatch without a registry or a disk: the upstream body is a PassThrough, the
// cache file lives in memory.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { PassThrough } from "node:stream";
import { setTimeout as sleep } from "node:timers/promises";
import { describe, it } from "node:test";
import { BlobFill, type FillFile, type FillWriter } from "../../src/mirror/fill.ts";
import { FillAbortedError, FillWatch } from "../../src/mirror/fill-watch.ts";

/** The cache file in memory: what writev appends, read() reads back. */
class MemFile implements FillWriter, FillFile {
  private data = Buffer.alloc(0);
  committed = false;
  aborted = false;
  closed = false;
  get written(): number {
    return this.data.length;
  }
  async writev(chunks: Buffer[]): Promise<void> {
    this.data = Buffer.concat([this.data, ...chunks]);
  }
  verified = false;
  /** Resolves publish(); tests that hold it back replace it. */
  publishing: Promise<void> = Promise.resolve();
  async verify(): Promise<void> {
    this.verified = true;
  }
  async publish(): Promise<void> {
    await this.publishing;
    this.committed = true;
  }
  async abort(): Promise<void> {
    this.aborted = true;
  }
  async read(buffer: Buffer, offset: number, length: number, position: number) {
    if (this.closed) throw new Error("read after close");
    const bytesRead = this.data.copy(buffer, offset, position, position + length);
    return { bytesRead };
  }
  async close(): Promise<void> {
    this.closed = true;
  }
}

function newFill(file: MemFile, size: number, watch?: FillWatch, releaseBeforePublish = false): BlobFill {
  return new BlobFill({
    releaseBeforePublish,
    writer: file,
    file,
    size,
    openPublished: () => Promise.reject(new Error("never opened")),
    fallback: () => {
      throw new Error("no fallback in these tests");
    },
    watch,
  });
}

async function readAll(fill: BlobFill, start = 0, end?: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of fill.stream(start, end)) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

/** Writes `bytes` to `body` in `parts` pieces, `everyMs` apart; ends it unless `stallAfter` parts. */
async function feed(body: PassThrough, bytes: Buffer, parts: number, everyMs: number, stallAfter = parts) {
  const step = Math.ceil(bytes.length / parts);
  for (let i = 0; i < stallAfter; i++) {
    body.write(bytes.subarray(i * step, (i + 1) * step));
    await sleep(everyMs);
  }
  if (stallAfter === parts) body.end();
}

describe("BlobFill", () => {
  it("with releaseBeforePublish (S3), sends the last byte once verified, while the blob is still being published", async () => {
    const bytes = randomBytes(300_000);
    const file = new MemFile();
    let published!: () => void;
    file.publishing = new Promise((resolve) => (published = resolve));
    const fill = newFill(file, bytes.length, undefined, true);
    const leave = fill.join();
    const pumped = fill.pump(new PassThrough().end(bytes) as PassThrough);
    assert.deepEqual(await readAll(fill), bytes, "the whole blob, before the upload ended");
    assert.ok(file.verified);
    assert.equal(file.committed, false);
    assert.equal(fill.state, "running", "the fill is held until published");
    published();
    await pumped;
    assert.equal(fill.state, "done");
    leave();
  });

  it("takes at most 256 KiB from the upstream in one turn of the event loop, and all of it in the end", async () => {
    // Node accepts one connection a turn: a turn spent copying megabytes to every follower
    // left new clients of a burst waiting in the accept queue.
    const bytes = randomBytes(4 * 1024 * 1024);
    const body = new PassThrough({ highWaterMark: bytes.length });
    for (let at = 0; at < bytes.length; at += 64 * 1024) body.write(bytes.subarray(at, at + 64 * 1024));
    body.end();
    const file = new MemFile();
    const fill = newFill(file, bytes.length);
    const leave = fill.join();
    const pumped = fill.pump(body);
    let seen = 0;
    body.on("data", (c: Buffer) => (seen += c.length));
    await new Promise((resolve) => setImmediate(resolve));
    assert.ok(seen > 0, "the fill started");
    assert.ok(seen <= 256 * 1024, `${seen} bytes taken in the first turn`);
    assert.deepEqual(await readAll(fill), bytes);
    await pumped;
    leave();
  });

  it("keeps its shared file open until the fill is done and its last reader has left", async () => {
    const bytes = randomBytes(9 * 1024 * 1024); // more than the in-memory tail
    const file = new MemFile();
    const fill = newFill(file, bytes.length);
    const body = new PassThrough();
    const early = fill.join();
    const late = fill.join();
    const pumped = fill.pump(body);
    const first = readAll(fill);
    await feed(body, bytes, 18, 5);
    await pumped;
    assert.ok(file.committed);
    assert.deepEqual(await first, bytes);
    early();
    assert.ok(!file.closed, "a reader still holds the file after the commit");
    // This reader starts after the commit, when the tail is gone: only the file has the bytes.
    assert.deepEqual(await readAll(fill, 5, 2 * 1024 * 1024), bytes.subarray(5, 2 * 1024 * 1024 + 1));
    late();
    late(); // a second leave is a no-op
    assert.ok(file.closed, "the last one out closes it");
  });
});

describe("FillWatch", () => {
  it("lets a fill that never stalls run longer than the stall limit", async () => {
    const bytes = randomBytes(64 * 1024);
    const file = new MemFile();
    const watch = new FillWatch({ stallMs: 300, abandonedMs: 60_000 });
    const fill = newFill(file, bytes.length, watch);
    const leave = fill.join();
    const body = new PassThrough();
    const pumped = fill.pump(body);
    const got = readAll(fill);
    await feed(body, bytes, 12, 100); // ~1.2 s, never 300 ms without a byte
    await pumped;
    assert.deepEqual(await got, bytes);
    leave();
  });

  it("gives up a fill whose upstream stops sending, and its readers see an error", async () => {
    const bytes = randomBytes(64 * 1024);
    const file = new MemFile();
    const watch = new FillWatch({ stallMs: 300, abandonedMs: 60_000 });
    const fill = newFill(file, bytes.length, watch);
    const leave = fill.join();
    const body = new PassThrough();
    const pumped = fill.pump(body);
    const got = readAll(fill);
    void feed(body, bytes, 4, 10, 2);
    await assert.rejects(pumped, FillAbortedError);
    await assert.rejects(got, FillAbortedError);
    assert.ok(file.aborted && !file.committed, "nothing cached");
    assert.ok(body.destroyed);
    leave();
    assert.ok(file.closed);
  });

  it("gives up a fill nobody follows for abandonedMs, and not while someone does", async () => {
    const bytes = randomBytes(64 * 1024);
    const file = new MemFile();
    const watch = new FillWatch({ stallMs: 60_000, abandonedMs: 300 });
    const fill = newFill(file, bytes.length, watch);
    const leave = fill.join();
    const body = new PassThrough();
    const pumped = fill.pump(body);
    let settled = false;
    pumped.catch(() => undefined).finally(() => (settled = true));
    void feed(body, bytes, 100, 10, 80); // ~0.8 s of bytes, then a stall (past stallMs only later)
    await sleep(600);
    assert.ok(!settled, "followed: the fill goes on");
    leave();
    await assert.rejects(pumped, /no client followed the fill/);
    assert.ok(file.aborted);
  });

  it("counts nobody as gone while the clients still wait for the upstream's headers", async () => {
    const watch = new FillWatch({ stallMs: 60_000, abandonedMs: 100 });
    await sleep(300);
    assert.ok(!watch.signal.aborted, "before the answer, only the stall limit applies");
    watch.answer();
    await sleep(300);
    assert.match(String((watch.signal.reason as Error).message), /no client followed/);
  });

  it("stops a fill at shutdown", async () => {
    const shutdown = new AbortController();
    const file = new MemFile();
    const watch = new FillWatch({ stallMs: 60_000, abandonedMs: 60_000, shutdown: shutdown.signal });
    const fill = newFill(file, 10, watch);
    const pumped = fill.pump(new PassThrough());
    shutdown.abort();
    await assert.rejects(pumped, /shutting down/);
  });
});
