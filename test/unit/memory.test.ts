// releaseAfterFills (src/memory.ts): dead fill chunks that reached V8's old generation are freed
// at once, not whenever V8 next decides to collect (it waits for ~64 MB more of ArrayBuffers).
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { releaseAfterFills } from "../../src/memory.ts";

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
