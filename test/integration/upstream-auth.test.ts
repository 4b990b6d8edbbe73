// The upstream client's token negotiation against a real registry behind a token service, as
// the workers of one mirror share it: what one of them learned from a challenge, the others use.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { InProcessCoordinator } from "../../src/coordination/in-process.ts";
import { Metrics } from "../../src/metrics/metrics.ts";
import type { Token } from "../../src/upstream/auth.ts";
import type { Challenge } from "../../src/upstream/challenge.ts";
import { UpstreamClient } from "../../src/upstream/client.ts";
import { pushImage } from "../fixtures/images.ts";
import { startUpstream, type Upstream } from "../fixtures/upstream.ts";

describe("upstream token negotiation across workers", () => {
  let upstream: Upstream;
  before(async () => {
    upstream = await startUpstream({ auth: "token" });
    await pushImage(upstream, "shared/challenge", "v1");
  });
  after(async () => {
    await upstream.stop();
  });

  /** Two workers' clients of one upstream, on one coordinator (the workers' own, in real life). */
  function twoWorkers(share: boolean): UpstreamClient[] {
    const coordinator = new InProcessCoordinator();
    return [1, 2].map(
      () =>
        new UpstreamClient({
          name: "default",
          url: upstream.url,
          concurrency: 4,
          timeoutMs: 10_000,
          privateRedirects: true,
          metrics: new Metrics(),
          tokenFlights: coordinator.flights<Token>("tokens/default"),
          ...(share ? { challenges: coordinator.events<Challenge>("challenges/default") } : {}),
        }),
    );
  }

  async function head(client: UpstreamClient): Promise<void> {
    const res = await client.fetch({
      method: "HEAD",
      repo: "shared/challenge",
      path: "/v2/shared/challenge/manifests/v1",
      headers: { accept: "application/vnd.docker.distribution.manifest.v2+json" },
    });
    res.body.resume();
    assert.equal(res.status, 200);
  }

  async function headFromEach(clients: UpstreamClient[]): Promise<number[]> {
    await upstream.resetRequests();
    for (const client of clients) await head(client);
    await Promise.all(clients.map((c) => c.close()));
    return (await upstream.requests()).filter((r) => r.method === "HEAD").map((r) => r.status);
  }

  it("a worker that never asked the upstream sends its first request with a token", async () => {
    // The first worker's request earns the challenge (401), then goes with a token; the
    // second's goes with a token at once.
    assert.deepEqual(await headFromEach(twoWorkers(true)), [401, 200, 200]);
  });

  it("(without sharing the challenge, each worker's first request earns a 401)", async () => {
    assert.deepEqual(await headFromEach(twoWorkers(false)), [401, 200, 401, 200]);
  });

  it("one token for both workers: the one that joined the other's negotiation keeps the token too", async () => {
    const clients = twoWorkers(true);
    const tokensBefore = upstream.token!.requests.length;
    // Together: both earn the challenge, and one negotiates the token for the two.
    await Promise.all(clients.map((c) => head(c)));
    assert.equal(upstream.token!.requests.length - tokensBefore, 1);
    // Then each again: both have the token.
    for (const client of clients) await head(client);
    assert.equal(upstream.token!.requests.length - tokensBefore, 1);
    await Promise.all(clients.map((c) => c.close()));
  });
});
