// The Evictor against an in-memory store, and the BlobStore's errors that must not pass as misses.
import assert from "node:assert/strict";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import type { Logger } from "winston";
import { Evictor } from "../../src/mirror/eviction.ts";
import { Metrics } from "../../src/metrics/metrics.ts";
import { parseDigest } from "../../src/oci/digest.ts";
import { BlobStore } from "../../src/storage/blob-store.ts";
import { CachePaths } from "../../src/storage/paths.ts";

const hex = (n: number) => n.toString(16).padStart(64, "0");

/** What the Evictor uses of a BlobStore, in memory; remove() of `failing` fails with EACCES. */
class MemStore {
  readonly removed: string[] = [];
  failing = new Set<string>();
  constructor(
    readonly files: Array<{ hex: string; size: number; lastRead: number }> = [],
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
        { hex: hex(1), size: 60, lastRead: Date.now() - 1000 },
        { hex: hex(2), size: 60, lastRead: Date.now() - 5000 },
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

describe("BlobStore errors", () => {
  it("touch: false for a blob that is gone, a rejection for any other failure", async () => {
    const root = await mkdtemp(join(tmpdir(), "regmirror-store-"));
    try {
      const store = new BlobStore(new CachePaths(root));
      await store.init();
      const gone = parseDigest(`sha256:${hex(1)}`)!;
      assert.equal(await store.touch(gone), false);
      // A file where the prefix folder should be: ENOTDIR, which is not "gone".
      const blocked = parseDigest(`sha256:ab${"0".repeat(62)}`)!;
      await writeFile(join(root, "blobs", "sha256", "ab"), "");
      await assert.rejects(store.touch(blocked), { code: "ENOTDIR" });
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  });

  it("list: an unreadable folder is reported and the rest still listed", async () => {
    const root = await mkdtemp(join(tmpdir(), "regmirror-store-"));
    try {
      const store = new BlobStore(new CachePaths(root));
      await store.init();
      const sha = join(root, "blobs", "sha256");
      await mkdir(join(sha, "cd"), { recursive: true });
      await writeFile(join(sha, "cd", `cd${"1".repeat(62)}`), "hello");
      await writeFile(join(sha, "ab"), ""); // readdir of it fails with ENOTDIR
      const errors: Error[] = [];
      const found: string[] = [];
      for await (const e of store.list((err) => errors.push(err))) found.push(e.hex);
      assert.deepEqual(found, [`cd${"1".repeat(62)}`]);
      assert.equal(errors.length, 1);
      assert.equal((errors[0] as NodeJS.ErrnoException).code, "ENOTDIR");
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  });
});
