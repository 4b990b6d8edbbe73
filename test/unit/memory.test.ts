// releaseAfterFills (src/memory.ts): dead fill chunks that reached V8's old generation are freed
// at once, not whenever V8 next decides to collect (it waits for ~64 MB more of ArrayBuffers).
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { releaseAfterFills, releaseWhenIdle } from "../../src/memory.ts";

const MiB = 1024 * 1024;

describe("releaseAfterFills", () => {
  it("frees the backing stores of buffers that are no longer referenced", async () => {
    const base = process.memoryUsage().arrayBuffers;
    // Like a fill's chunks: 64 KiB buffers held for a while, long enough to be promoted.
    let held: Buffer[] = [];
    for (let i = 0; i < 640; i++) held.push(Buffer.alloc(64 * 1024, i));
    for (let i = 0; i < 20; i++) {
      void new Array(100_000).fill(i);
      await new Promise((r) => setImmediate(r));
    }
    assert.ok(process.memoryUsage().arrayBuffers - base > 30 * MiB);
    held = [];
    releaseAfterFills();
    assert.equal(held.length, 0);
    assert.ok(process.memoryUsage().arrayBuffers - base < 5 * MiB);
  });
});

describe("releaseWhenIdle", () => {
  it("releases once fills have stayed stopped, and not while a fill that started meanwhile runs", async () => {
    let busy = false;
    let released = 0;
    const trim = releaseWhenIdle(
      () => !busy,
      20,
      () => released++,
    );
    trim.fillsIdle();
    await new Promise((r) => setTimeout(r, 40));
    assert.equal(released, 1);
    trim.fillsIdle();
    busy = true; // the next burst's fill started: its first bytes must not wait for a collection
    await new Promise((r) => setTimeout(r, 40));
    assert.equal(released, 1);
    busy = false;
    trim.fillsIdle(); // ... and ended
    await new Promise((r) => setTimeout(r, 40));
    assert.equal(released, 2);
    trim.fillsIdle();
    trim.stop();
    await new Promise((r) => setTimeout(r, 40));
    assert.equal(released, 2, "nothing after stop");
  });
});
