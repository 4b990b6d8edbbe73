// The Redis coordinator against the shared conformance suite (three members on one real
// redis-server, as three hosts would be), then what only Redis has: a member that dies without a
// word, values that cross as bytes, and Redis itself going away and coming back.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { MemberGoneError, RedisCoordinator, RedisUnavailableError } from "../../src/coordination/redis.ts";
import { RegistryError } from "../../src/oci/errors.ts";
import { startRedis, type RedisServer } from "../fixtures/redis.ts";
import { coordinationSuite } from "./coordination.suite.ts";

let server: RedisServer;
before(async () => {
  server = await startRedis();
});
after(() => server.stop());

let scopes = 0;

/** `n` members of a fresh scope (a prefix of their own), connected; leases expire by `now`. */
async function members(n: number, opts: { leaseTtlMs?: number; now?: () => number; url?: string } = {}) {
  const prefix = `test${++scopes}:`;
  const errors: unknown[] = [];
  const all = Array.from(
    { length: n },
    (_, i) =>
      new RedisCoordinator({
        url: opts.url ?? server.url,
        prefix,
        memberId: `m${i}`,
        now: opts.now,
        leaseTtlMs: opts.leaseTtlMs,
        onError: (err) => errors.push(err),
      }),
  );
  for (const m of all) assert.equal(await m.whenConnected(), true, "connected to Redis");
  return { all, errors, close: () => Promise.all(all.map((m) => m.close())) };
}

coordinationSuite("redis", async () => {
  let now = 1_000_000;
  const scope = await members(3, { now: () => now });
  return {
    members: scope.all,
    advance: (ms) => void (now += ms),
    close: async () => void (await scope.close()),
  };
});

describe("redis coordination: a member that dies", () => {
  const ttl = 300;

  it("rejects joiners still waiting with MemberGoneError within a few lease periods; the key runs again", async (t) => {
    const { all, close } = await members(2, { leaseTtlMs: ttl });
    const [a, b] = all as [RedisCoordinator, RedisCoordinator];
    const started = deferred();
    a.flights<string>("t").run("k", async () => {
      started.resolve();
      return new Promise<string>(() => undefined); // never answers: the member dies first
    });
    await started.promise;
    const waiting = b.flights<string>("t").run("k", async () => assert.fail("joins"));
    await until(() => waiting.joined);
    const t0 = Date.now();
    a.abandon();
    await assert.rejects(waiting.promise, MemberGoneError);
    const took = Date.now() - t0;
    assert.equal(await waiting.ended, "failed");
    assert.ok(took <= (ttl * 4) / 3 + 200, `noticed after ${took} ms (ttl ${ttl})`);
    t.diagnostic(`dead owner noticed after ${took} ms (ttl ${ttl} ms)`);
    const next = b.flights<string>("t").run("k", async () => "fresh");
    assert.equal(await next.promise, "fresh");
    assert.equal(next.joined, false);
    await close();
  });

  it("tells joiners already holding the value that the flight failed", async () => {
    const { all, close } = await members(2, { leaseTtlMs: ttl });
    const [a, b] = all as [RedisCoordinator, RedisCoordinator];
    const ran = a.flights<string>("t").run("k", async (run) => {
      run.holdUntil(new Promise(() => undefined)); // still landing when the member dies
      return "fill";
    });
    assert.equal(await ran.promise, "fill");
    const late = await b.flights<string>("t").join("k");
    assert.ok(late);
    assert.equal(await late.promise, "fill");
    a.abandon();
    assert.equal(await late.ended, "failed");
    assert.equal(await b.flights<string>("t").join("k"), undefined);
    await close();
  });

  it("keeps its leases until they expire (nobody releases them)", async () => {
    let now = 0;
    const { all, close } = await members(2, { now: () => now });
    const [a, b] = all as [RedisCoordinator, RedisCoordinator];
    assert.ok(await a.leases("l").acquire("k", 1_000));
    a.abandon();
    assert.equal(await b.leases("l").acquire("k", 1_000), undefined);
    now += 1_000;
    assert.ok(await b.leases("l").acquire("k", 1_000));
    await close();
  });
});

describe("redis coordination: what crosses", () => {
  it("carries Buffers and nested objects to joiners, waiting and late", async () => {
    const { all, close } = await members(2);
    const [a, b] = all as [RedisCoordinator, RedisCoordinator];
    const value = {
      bytes: Buffer.from(Array.from({ length: 256 }, (_, i) => i)),
      nested: { list: [1, "two", { three: [3n.toString(), null, true] }], empty: {}, when: 1.5 },
      headers: { "content-type": "application/vnd.oci.image.manifest.v1+json" },
    };
    const gate = deferred();
    const landed = deferred();
    const first = a.flights<typeof value>("t").run("k", async (run) => {
      run.holdUntil(landed.promise);
      await gate.promise;
      return value;
    });
    const waiting = b.flights<typeof value>("t").run("k", async () => assert.fail("joins"));
    await until(() => waiting.joined);
    gate.resolve();
    await first.promise;
    const late = await all[1]!.flights<typeof value>("t").join("k");
    assert.ok(late);
    for (const got of [await waiting.promise, await late.promise]) {
      assert.deepEqual(got, value);
      assert.ok(Buffer.isBuffer(got.bytes), "a Buffer stays a Buffer");
    }
    landed.resolve();
    assert.equal(await waiting.ended, "done");
    await close();
  });

  it("keeps a RegistryError a RegistryError for joiners in other members", async () => {
    const { all, close } = await members(2);
    const gate = deferred();
    const fail = async (): Promise<string> => {
      await gate.promise;
      throw new RegistryError("TOOMANYREQUESTS", "slow down", { headers: { "retry-after": "30" } });
    };
    const calls = all.map((m) => m.flights<string>("t").run("k", fail));
    await until(() => calls[1]!.joined);
    gate.resolve();
    for (const c of calls) {
      await assert.rejects(c.promise, (err) => {
        assert.ok(err instanceof RegistryError);
        assert.equal(err.status, 429);
        assert.equal(err.message, "slow down");
        assert.deepEqual(err.headers, { "retry-after": "30" });
        return true;
      });
    }
    await close();
  });

  it("keeps names apart even when a name holds the separator (a:b + c is not a + b:c)", async () => {
    const { all, close } = await members(2);
    const gate = deferred();
    const one = all[0]!.flights<string>("a:b").run("c", async () => (await gate.promise, "one"));
    const two = all[1]!.flights<string>("a").run("b:c", async () => (await gate.promise, "two"));
    await new Promise((r) => setTimeout(r, 20));
    gate.resolve();
    assert.deepEqual(await Promise.all([one.promise, two.promise]), ["one", "two"]);
    assert.equal(two.joined, false);
    await close();
  });

  it("fails a flight whose value cannot cross, in its own member too", async () => {
    const { all, close } = await members(2);
    const flight = all[0]!.flights<() => void>("t").run("k", async () => () => undefined);
    await assert.rejects(flight.promise, /could not be cloned/);
    assert.equal(await flight.ended, "failed");
    await close();
  });
});

describe("redis coordination: Redis goes away and comes back", () => {
  let own: RedisServer;
  before(async () => {
    own = await startRedis();
  });
  after(() => own.stop());

  it("runs flights locally while Redis is down, never hangs, and coordinates again once it is back", async (t) => {
    const ttl = 300;
    const { all, errors, close } = await members(2, { leaseTtlMs: ttl, url: own.url });
    const [a, b] = all as [RedisCoordinator, RedisCoordinator];
    const statuses: boolean[] = [];
    a.onStatus((up) => statuses.push(up));

    // A flight in the air when Redis goes: its follower cannot hear the end, and gives up.
    const started = deferred();
    const held = a
      .flights<string>("t")
      .run("inflight", async () => (started.resolve(), new Promise(() => undefined)));
    void held;
    await started.promise;
    const follower = b.flights<string>("t").run("inflight", async () => assert.fail("joins"));
    await until(() => follower.joined);

    let t0 = Date.now();
    await own.stop();
    await until(() => !a.connected && !b.connected);
    const noticed = Date.now() - t0;
    assert.deepEqual(statuses, [false]);
    assert.ok(
      errors.some((e) => e instanceof RedisUnavailableError),
      "told onError",
    );

    // Every call settles at once: flights run here, the rest reject or answer none.
    t0 = Date.now();
    let runs = 0;
    const flights = [a, a, b].map((m) => m.flights<string>("t").run("k", async () => (runs++, "local")));
    assert.deepEqual(await Promise.all(flights.map((f) => f.promise)), ["local", "local", "local"]);
    assert.equal(runs, 2, "coalesced within each member, not across");
    assert.equal(await a.flights<string>("t").join("other"), undefined);
    await assert.rejects(a.leases("l").acquire("k", 1_000), RedisUnavailableError);
    await assert.rejects(a.events<string>("e").publish("x"), RedisUnavailableError);
    const settled = Date.now() - t0;
    assert.ok(settled < 1_000, `settled in ${settled} ms`);

    await assert.rejects(follower.promise, MemberGoneError);
    const gaveUp = Date.now() - t0;

    // Back, on the same port, empty: the same coordinators coordinate again.
    t0 = Date.now();
    await own.restart();
    assert.equal(await a.whenConnected(5_000), true);
    assert.equal(await b.whenConnected(5_000), true);
    const back = Date.now() - t0;
    assert.deepEqual(statuses, [false, true]);
    const gate = deferred();
    runs = 0;
    const again = [a, b, a, b].map((m) =>
      m.flights<string>("t").run("k", async () => (runs++, await gate.promise, "shared")),
    );
    await until(() => again[1]!.joined && again[3]!.joined);
    gate.resolve();
    assert.deepEqual(await Promise.all(again.map((f) => f.promise)), [
      "shared",
      "shared",
      "shared",
      "shared",
    ]);
    assert.equal(runs, 1, "one run across members again");
    const got = deferred<string>();
    b.events<string>("e").subscribe((e) => got.resolve(e));
    await a.events<string>("e").publish("purged");
    assert.equal(await got.promise, "purged");
    assert.ok(await a.leases("l").acquire("k", 1_000));
    t.diagnostic(
      `redis outage: noticed ${noticed} ms, calls settled ${settled} ms, follower gave up ${gaveUp} ms, back ${back} ms`,
    );
    await close();
  });
});

function deferred<T = void>() {
  let resolve!: (value: T) => void;
  const promise = new Promise<T>((res) => (resolve = res));
  return { promise, resolve };
}

/** Polls `cond` every 5 ms, for at most 5 s. */
async function until(cond: () => boolean): Promise<void> {
  const deadline = Date.now() + 5_000;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error("timed out waiting");
    await new Promise((r) => setTimeout(r, 5));
  }
}
