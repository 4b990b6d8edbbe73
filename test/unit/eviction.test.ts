// The Evictor against an in-memory store, and the BlobStore's errors that must not pass as misses.
import assert from "node:assert/strict";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import type { Logger } from "winston";
import { Evictor } from "../../src/mirror/eviction.ts";
import { Metrics } from "../../src/metrics/metrics.ts";
import { BlobStore } from "../../src/storage/blob-store.ts";
import { filesystemCache } from "../../src/storage/cache.ts";
import type { ObjectInfo, StorageDriver } from "../../src/storage/driver.ts";
import { LAST_READ } from "../../src/storage/keys.ts";

const hex = (n: number) => n.toString(16).padStart(64, "0");

/**
 * What the Evictor uses of a BlobStore, in memory; remove() of `failing` fails with EACCES. Its
 * driver keeps only what the index saves (the last reads).
 */
class MemStore {
  readonly removed: string[] = [];
  failing = new Set<string>();
  readonly saved = new Map<string, Buffer>();
  readonly driver = {
    get: (key: string) => Promise.resolve(this.saved.get(key)),
    put: (key: string, data: Buffer | string) => {
      this.saved.set(key, Buffer.from(data));
      return Promise.resolve();
    },
  } as unknown as StorageDriver;
  constructor(
    readonly files: Array<{ hex: string; size: number; modifiedMs: number }> = [],
    readonly listErrors: Error[] = [],
  ) {}
  async *list(onError: (err: Error) => void) {
    for (const e of this.listErrors) onError(e);
    yield* this.files;
  }
  async remove(d: { hex: string }): Promise<void> {
    if (this.failing.has(d.hex))
      throw Object.assign(new Error("EACCES: permission denied"), { code: "EACCES" });
    this.removed.push(d.hex);
  }
}

/** A logger that keeps what it is told. */
function memLog() {
  const lines: Array<{ level: string; message: string }> = [];
  const at = (level: string) => (message: string) => void lines.push({ level, message });
  const log = { info: at("info"), warn: at("warn"), error: at("error"), debug: at("debug") };
  return { lines, log: log as unknown as Logger };
}

function evictor(store: MemStore, maxSizeBytes: number, log = memLog().log): Evictor {
  return new Evictor({
    store: store as unknown as BlobStore,
    metrics: new Metrics({ processMetrics: false }),
    log,
    maxSizeBytes,
    blobTtlMs: 0,
  });
}

const settle = () => new Promise((r) => setImmediate(r));

describe("Evictor", () => {
  it("removes the least recently read blobs past maxSize, and one larger than it at once", async () => {
    const store = new MemStore();
    const ev = evictor(store, 100);
    ev.added(hex(1), 40);
    ev.added(hex(2), 40);
    ev.read(hex(1)); // 2 is now the least recently read
    ev.added(hex(3), 40);
    await settle();
    assert.deepEqual(store.removed, [hex(2)]);
    ev.added(hex(4), 500);
    await ev.close();
    assert.deepEqual(store.removed, [hex(2), hex(4)]);
  });

  it("indexes what is on disk oldest read first, and reports folders it cannot read", async () => {
    const store = new MemStore(
      [
        { hex: hex(1), size: 60, modifiedMs: Date.now() - 1000 },
        { hex: hex(2), size: 60, modifiedMs: Date.now() - 5000 },
      ],
      [Object.assign(new Error("EACCES: permission denied, scandir"), { code: "EACCES" })],
    );
    const { lines, log } = memLog();
    const ev = evictor(store, 100, log);
    await ev.start();
    await ev.close();
    assert.deepEqual(store.removed, [hex(2)], "the older read goes");
    assert.ok(lines.some((l) => l.level === "error" && /cannot index/.test(l.message)));
  });

  it("saves the last reads, and the next index orders by them, not by when blobs were written", async () => {
    const store = new MemStore([
      { hex: hex(1), size: 40, modifiedMs: Date.now() - 9000 },
      { hex: hex(2), size: 40, modifiedMs: Date.now() - 5000 },
    ]);
    const first = evictor(store, 100);
    await first.start();
    first.read(hex(1)); // the older blob is the more recently read one now
    await first.close();
    assert.ok(store.saved.has(LAST_READ));
    store.files.push({ hex: hex(3), size: 40, modifiedMs: Date.now() });
    const second = evictor(store, 100);
    await second.start(); // 120 bytes of 100: one goes
    await second.close();
    assert.deepEqual(store.removed, [hex(2)]);
  });

  it("logs a removal that fails instead of dropping it silently", async () => {
    const store = new MemStore();
    store.failing.add(hex(9));
    const { lines, log } = memLog();
    const ev = evictor(store, 10, log);
    ev.added(hex(9), 50);
    await ev.close();
    assert.ok(lines.some((l) => l.level === "warn" && /could not remove/.test(l.message)));
  });
});

describe("BlobStore listing", () => {
  it("lists blobs only: a stray file where a folder should be is no blob", async () => {
    const root = await mkdtemp(join(tmpdir(), "regmirror-store-"));
    try {
      const cache = filesystemCache(root);
      const store = new BlobStore(cache.driver, cache.paths);
      await store.init();
      const sha = join(root, "blobs", "sha256");
      await mkdir(join(sha, "cd"), { recursive: true });
      await writeFile(join(sha, "cd", `cd${"1".repeat(62)}`), "hello");
      await writeFile(join(sha, "ab"), "");
      const found: string[] = [];
      for await (const e of store.list()) found.push(e.hex);
      assert.deepEqual(found, [`cd${"1".repeat(62)}`]);
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  });

  it("a listing that fails part-way is reported, and what it listed is kept", async () => {
    const failing = {
      async *list(): AsyncGenerator<ObjectInfo> {
        yield { key: `blobs/sha256/cd/cd${"1".repeat(62)}`, size: 5, modifiedMs: 1 };
        throw Object.assign(new Error("EACCES: permission denied, scandir"), { code: "EACCES" });
      },
    } as unknown as StorageDriver;
    const store = new BlobStore(failing, filesystemCache("/nonexistent").paths);
    const errors: Error[] = [];
    const found: string[] = [];
    for await (const e of store.list((err) => errors.push(err))) found.push(e.hex);
    assert.deepEqual(found, [`cd${"1".repeat(62)}`]);
    assert.equal((errors[0] as NodeJS.ErrnoException).code, "EACCES");
  });
});
