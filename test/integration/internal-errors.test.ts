// A bug of ours (an exception that is not a RegistryError) answers 500 UNKNOWN in the registry's
// JSON shape, on the registry handler and on the express side alike, and is logged with its stack.
import assert from "node:assert/strict";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { describe, it } from "node:test";
import type { Logger } from "winston";
import { createHandler, type HandlerDeps } from "../../src/http/app.ts";
import { RepoPolicy } from "../../src/access/policy.ts";
import { Metrics } from "../../src/metrics/metrics.ts";
import { PullLog } from "../../src/metrics/pull-log.ts";
import type { Mirror } from "../../src/mirror/mirror.ts";

type Body = { errors: Array<{ code: string }> };

describe("internal errors", () => {
  it("answers an exception that is not a RegistryError with 500 UNKNOWN, and logs its stack", async () => {
    const logged: Array<Record<string, unknown>> = [];
    const log = {
      isInfoEnabled: () => false,
      info: () => undefined,
      warn: () => undefined,
      error: (message: string, meta: Record<string, unknown>) => logged.push({ message, ...meta }),
    } as unknown as Logger;
    const bug = (): never => {
      throw new TypeError("a bug");
    };
    const handler = createHandler({
      mirror: {
        route: (_ns: string | undefined, repo: string) => ({ upstream: "docker.io", repo }),
        manifest: async () => bug(),
      } as unknown as Mirror,
      policy: new RepoPolicy([], []),
      perClient: 10,
      metrics: new Metrics({ processMetrics: false }),
      log,
      pulls: new PullLog(),
      ops: { stats: async () => bug(), history: {}, ready: async () => bug(), listCache: async () => bug() },
    } as unknown as HandlerDeps);
    const server = createServer(handler);
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    try {
      for (const path of ["/v2/library/x/manifests/1", "/stats", "/readyz"]) {
        const res = await fetch(url + path);
        assert.equal(res.status, 500, path);
        assert.equal(res.headers.get("content-type"), "application/json; charset=utf-8", path);
        assert.equal(((await res.json()) as Body).errors[0]!.code, "UNKNOWN", path);
      }
      assert.equal(logged.length, 3);
      assert.match(String(logged[0]!.stack), /TypeError: a bug\n\s+at /);
    } finally {
      await new Promise((r) => server.close(r));
    }
  });
});
