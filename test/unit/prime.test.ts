// The start-up request that compiles undici's parser before the first miss (src/upstream/prime.ts):
// what it gains shows in the benchmark's coalescing figure; here, that it is harmless — it
// settles, and leaves nothing open that would keep a stopping process alive.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { primeHttpClient } from "../../src/upstream/prime.ts";

const open = () =>
  process.getActiveResourcesInfo().filter((r) => r === "TCPServerWrap" || r === "TCPSocketWrap");

describe("primeHttpClient", () => {
  it("settles and closes its server and connection", async () => {
    const before = open().length;
    await primeHttpClient();
    await primeHttpClient();
    // A socket's close completes a few turns of the loop after destroy().
    for (let i = 0; i < 100 && open().length > before; i++) await new Promise((r) => setTimeout(r, 10));
    assert.equal(open().length, before);
  });
});
