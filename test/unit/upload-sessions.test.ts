// Upload sessions without HTTP: offsets from the file, ranges, limits, the remembered hash, the
// sweep, and a body cut half-way.
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdtemp, readFile, readdir, rm, stat, utimes, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PassThrough, Readable } from "node:stream";
import { after, describe, it } from "node:test";
import { parseDigest, type Digest } from "../../src/oci/digest.ts";
import { RegistryError } from "../../src/oci/errors.ts";
import { UploadSessions, type UploadLimits } from "../../src/hosted/uploads.ts";

const dirs: string[] = [];
after(() => Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true }))));

async function sessions(limits: Partial<UploadLimits> = {}, free = () => Promise.resolve(1e15)) {
  const dir = await mkdtemp(join(tmpdir(), "regmirror-uploads-"));
  dirs.push(dir);
  return new UploadSessions(
    { dir, maxBlobSize: 1 << 20, minFreeBytes: 0, idleTimeoutMs: 60_000, ...limits },
    free,
  );
}

const digestOf = (b: Buffer): Digest =>
  parseDigest("sha256:" + createHash("sha256").update(b).digest("hex"))!;

/** What publish was given: the file's bytes at that moment. */
function collector() {
  const got: Buffer[] = [];
  return { got, publish: async (file: string) => void got.push(await readFile(file)) };
}

async function rejectsWith(p: Promise<unknown>, code: string, status?: number): Promise<RegistryError> {
  try {
    await p;
  } catch (err) {
    assert.ok(err instanceof RegistryError, `expected a RegistryError, got ${String(err)}`);
    assert.equal(err.code, code);
    if (status !== undefined) assert.equal(err.status, status);
    return err;
  }
  assert.fail(`expected ${code}`);
}

describe("upload sessions", () => {
  it("appends chunks in order and publishes the verified bytes", async () => {
    const s = await sessions();
    const blob = randomBytes(3000);
    const id = await s.start("local/a");
    assert.equal(await s.size("local/a", id), 0);
    assert.equal(await s.append("local/a", id, Readable.from([blob.subarray(0, 1000)])), 1000);
    assert.equal(
      await s.append("local/a", id, Readable.from([blob.subarray(1000)]), {
        range: { start: 1000, end: 2999 },
      }),
      3000,
    );
    const c = collector();
    assert.equal(await s.finish("local/a", id, digestOf(blob), c.publish), 3000);
    assert.deepEqual(c.got, [blob]);
    await rejectsWith(s.size("local/a", id), "BLOB_UPLOAD_UNKNOWN");
  });

  it("what is published is dated when it was finished, not when its bytes came (gc's grace)", async () => {
    const s = await sessions();
    const blob = randomBytes(100);
    const id = await s.start("local/a");
    await s.append("local/a", id, Readable.from([blob]));
    const past = new Date(Date.now() - 3_600_000);
    await utimes(join(s.limits.dir, id, "data"), past, past);
    const finishing = Date.now();
    let mtime = 0;
    await s.finish("local/a", id, digestOf(blob), async (file) => {
      mtime = (await stat(file)).mtimeMs;
    });
    assert.ok(mtime >= finishing - 1000, `published with mtime ${new Date(mtime).toISOString()}`);
  });

  it("an out-of-order range is 416 with the current range, and leaves the session as it was", async () => {
    const s = await sessions();
    const id = await s.start("local/a");
    await s.append("local/a", id, Readable.from([Buffer.alloc(10, 1)]));
    const e = await rejectsWith(
      s.append("local/a", id, Readable.from([Buffer.alloc(5)]), { range: { start: 20, end: 24 } }),
      "RANGE_INVALID",
      416,
    );
    assert.equal(e.headers.range, "0-9");
    assert.equal(await s.size("local/a", id), 10);
  });

  it("a session of one repository is unknown to another, and a malformed id to all", async () => {
    const s = await sessions();
    const id = await s.start("local/a");
    await rejectsWith(s.size("local/b", id), "BLOB_UPLOAD_UNKNOWN", 404);
    await rejectsWith(s.size("local/a", "../../etc"), "BLOB_UPLOAD_UNKNOWN", 404);
    await rejectsWith(s.cancel("local/b", id), "BLOB_UPLOAD_UNKNOWN");
    assert.equal(await s.size("local/a", id), 0);
  });

  it("a wrong digest publishes nothing and ends the session", async () => {
    const s = await sessions();
    const id = await s.start("local/a");
    await s.append("local/a", id, Readable.from([Buffer.from("hello")]));
    const c = collector();
    await rejectsWith(
      s.finish("local/a", id, digestOf(Buffer.from("other")), c.publish),
      "DIGEST_INVALID",
      400,
    );
    assert.deepEqual(c.got, []);
    await rejectsWith(s.size("local/a", id), "BLOB_UPLOAD_UNKNOWN");
  });

  it("another process's session (no remembered hash) is hashed from the file", async () => {
    const a = await sessions();
    const b = new UploadSessions(a.limits, () => Promise.resolve(1e15));
    const blob = randomBytes(5000);
    const id = await a.start("local/a");
    await a.append("local/a", id, Readable.from([blob.subarray(0, 2000)]));
    await b.append("local/a", id, Readable.from([blob.subarray(2000)]), {
      range: { start: 2000, end: 4999 },
    });
    // a's hash covers 2000 bytes of a 5000-byte file: it must not be used.
    const c = collector();
    await a.finish("local/a", id, digestOf(blob), c.publish);
    assert.deepEqual(c.got, [blob]);
  });

  it("a blob over maxBlobSize is refused and the session keeps its previous size", async () => {
    const s = await sessions({ maxBlobSize: 100 });
    const id = await s.start("local/a");
    await s.append("local/a", id, Readable.from([Buffer.alloc(60)]));
    // No length announced (chunked): found while reading.
    const e = await rejectsWith(
      s.append("local/a", id, Readable.from([Buffer.alloc(30), Buffer.alloc(30)])),
      "SIZE_INVALID",
      413,
    );
    assert.deepEqual(e.detail, { maxBlobSize: 100 });
    assert.equal(await s.size("local/a", id), 60);
    // Announced: refused before reading.
    await rejectsWith(s.append("local/a", id, Readable.from([]), { length: 41 }), "SIZE_INVALID", 413);
    assert.equal(await s.size("local/a", id), 60);
  });

  it("no new bytes while free space is below the minimum (507)", async () => {
    let free = 1e15;
    const s = await sessions({ minFreeBytes: 1000 }, () => Promise.resolve(free));
    const id = await s.start("local/a");
    free = 10;
    await rejectsWith(s.append("local/a", id, Readable.from([Buffer.alloc(5)])), "UNAVAILABLE", 507);
    await rejectsWith(s.start("local/a"), "UNAVAILABLE", 507);
    assert.equal(await s.size("local/a", id), 0);
  });

  it("a body cut half-way keeps what landed, and the upload goes on from there", async () => {
    const s = await sessions();
    const blob = randomBytes(4000);
    const id = await s.start("local/a");
    const body = new PassThrough();
    const appending = s.append("local/a", id, body);
    body.write(blob.subarray(0, 1500));
    // Once the bytes are in the file, the client goes away.
    while ((await s.size("local/a", id)) < 1500) await new Promise((r) => setImmediate(r));
    body.destroy(new Error("aborted"));
    await rejectsWith(appending, "BLOB_UPLOAD_INVALID");
    const size = await s.size("local/a", id);
    assert.equal(size, 1500);
    await s.append("local/a", id, Readable.from([blob.subarray(size)]), {
      range: { start: size, end: 3999 },
    });
    const c = collector();
    await s.finish("local/a", id, digestOf(blob), c.publish);
    assert.deepEqual(c.got, [blob]);
  });

  it("a second request on a busy session is refused, not interleaved", async () => {
    const s = await sessions();
    const id = await s.start("local/a");
    const body = new PassThrough();
    const first = s.append("local/a", id, body);
    // The first has the session once its lock is there.
    while (!existsSync(join(s.limits.dir, id, "lock"))) await new Promise((r) => setImmediate(r));
    await rejectsWith(s.append("local/a", id, Readable.from([Buffer.alloc(1)])), "BLOB_UPLOAD_INVALID", 409);
    body.end(Buffer.alloc(3));
    assert.equal(await first, 3);
  });

  it("a lock of a live process refuses (409); one of a dead process is taken over", async () => {
    const s = await sessions();
    const id = await s.start("local/a");
    const lock = join(s.limits.dir, id, "lock");
    // Another worker of this host, alive, writing to it.
    await writeFile(lock, String(process.ppid));
    await rejectsWith(s.append("local/a", id, Readable.from([Buffer.alloc(1)])), "BLOB_UPLOAD_INVALID", 409);
    await rejectsWith(s.cancel("local/a", id), "BLOB_UPLOAD_INVALID", 409);
    // Above Linux's largest pid: no such process, so a crash's leftover.
    await writeFile(lock, "4194305");
    assert.equal(await s.append("local/a", id, Readable.from([Buffer.alloc(2)])), 2);
    assert.ok(!existsSync(lock));
    // Torn (a crash while it was written): taken over too.
    await writeFile(lock, "");
    assert.equal(await s.append("local/a", id, Readable.from([Buffer.alloc(1)])), 3);
  });

  it("the sweep removes idle sessions and leaves the others", async () => {
    const s = await sessions({ idleTimeoutMs: 60_000 });
    const idle = await s.start("local/a");
    const fresh = await s.start("local/a");
    const past = new Date(Date.now() - 120_000);
    for (const f of ["data", "info", ""]) await utimes(join(s.limits.dir, idle, f), past, past);
    assert.equal(await s.sweep(), 1);
    assert.deepEqual(await readdir(s.limits.dir), [fresh]);
    await rejectsWith(s.size("local/a", idle), "BLOB_UPLOAD_UNKNOWN");
  });
});
