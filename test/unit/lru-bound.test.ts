// atMost (src/lru-bound.ts): the same bound on entries as lru-cache's `max`, without the index
// that `max` allocates up front.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { LRUCache } from "lru-cache";
import { atMost } from "../../src/lru-bound.ts";

describe("atMost", () => {
  it("keeps at most that many entries, forgetting the least recently used", () => {
    const cache = new LRUCache<string, number>(atMost(3));
    for (const [i, k] of ["a", "b", "c"].entries()) cache.set(k, i);
    cache.get("a");
    cache.set("d", 3);
    assert.equal(cache.size, 3);
    assert.deepEqual([...cache.keys()].sort(), ["a", "c", "d"]);
  });

  it("allocates nothing for the bound until entries come", () => {
    const before = process.memoryUsage().arrayBuffers;
    const caches = Array.from({ length: 10 }, () => new LRUCache<string, number>(atMost(1_000_000)));
    // With { max: 1_000_000 } each of these would hold 8 MB of typed arrays.
    assert.ok(process.memoryUsage().arrayBuffers - before < 1024 * 1024);
    assert.equal(caches.length, 10);
  });
});
