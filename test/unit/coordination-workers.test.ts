// The workers' coordinator against the shared conformance suite: two WorkerCoordinators and the
// primary's own member, on one CoordinationHub, over pipes that copy as cluster IPC does.
import assert from "node:assert/strict";
import { afterEach, beforeEach, describe, it } from "node:test";
import { CoordinationHub, MemberGoneError } from "../../src/coordination/hub.ts";
import { WorkerCoordinator } from "../../src/coordination/member.ts";
import { RegistryError } from "../../src/oci/errors.ts";
import { pipe, type Pipe } from "./coordination-channels.ts";
import { coordinationSuite } from "./coordination.suite.ts";

/** Two WorkerCoordinators and the primary's own member on one hub; `batched` as pipe() says. */
function harness(batched: boolean) {
  return async () => {
    let now = 1_000_000;
    const hub = new CoordinationHub({ now: () => now });
    const workers = ["1", "2"].map((id) => {
      const p = pipe({ batched });
      hub.attach(id, p.hub);
      return new WorkerCoordinator(p.worker);
    });
    return {
      members: [...workers, hub.local],
      advance: (ms: number) => void (now += ms),
      close: async () => {
        await Promise.all([...workers, hub.local].map((m) => m.close()));
        hub.close();
      },
    };
  };
}

coordinationSuite("workers", harness(false));

// Node's IPC hands a worker every message of one read in one go: an answer and the notice right
// behind it (the flight it joins has already failed) arrive with no microtask between them.
coordinationSuite("workers, messages arriving in batches", harness(true));

describe("workers coordination: an answer and a notice in one batch", () => {
  it("a joiner whose flight fails right after it joined gets the rejection, and the key is free", async () => {
    const hub = new CoordinationHub();
    const pipes = [pipe({ batched: true }), pipe({ batched: true })];
    const [a, b] = pipes.map((p, i) => {
      hub.attach(String(i + 1), p.hub);
      return new WorkerCoordinator(p.worker);
    });
    // A runs until told to fail. B asks to run the same key in the very turn A fails: the hub
    // takes B's "run" (B joins A's flight), then A's "fail", and answers B with both at once.
    let fail!: () => void;
    const told = new Promise<void>((r) => (fail = r));
    const owner = a!.flights<number>("f").run("k", async () => {
      await told;
      throw new RegistryError("MANIFEST_UNKNOWN", "not found upstream");
    });
    await new Promise((r) => setTimeout(r, 20)); // A owns the flight at the hub
    const joiner = b!.flights<number>("f").run("k", () => new Promise(() => undefined));
    fail();
    await owner.promise.catch(() => undefined);
    const outcome = await Promise.race([
      joiner.promise.then(
        () => "resolved",
        (err: Error) => `rejected: ${err.message}`,
      ),
      new Promise((r) => setTimeout(() => r("stuck"), 2000)),
    ]);
    assert.equal(outcome, "rejected: not found upstream");
    // And the key is free in B: the next run is B's own.
    const again = b!.flights<number>("f").run("k", async () => 7);
    assert.equal(await again.promise, 7);
    hub.close();
  });
});

describe("workers coordination: a worker that goes away", () => {
  let hub: CoordinationHub;
  let pipes: Pipe[];
  let workers: WorkerCoordinator[];
  beforeEach(() => {
    hub = new CoordinationHub();
    pipes = [pipe(), pipe()];
    workers = pipes.map((p, i) => {
      hub.attach(String(i + 1), p.hub);
      return new WorkerCoordinator(p.worker);
    });
  });
  afterEach(() => hub.close());

  /** Worker 1 dies: its pipe stops and the primary, told by cluster's "exit", detaches it. */
  const kill = () => {
    pipes[0]!.cut();
    hub.detach("1");
  };

  it("rejects the joiners still waiting with MemberGoneError; the next run starts afresh", async () => {
    const started = deferred();
    workers[0]!.flights<string>("t").run("k", async () => {
      started.resolve();
      return new Promise<string>(() => undefined); // never answers: the worker dies first
    });
    await started.promise;
    const waiting = workers[1]!.flights<string>("t").run("k", async () => assert.fail("joins"));
    const local = hub.local.flights<string>("t").run("k", async () => assert.fail("joins"));
    await settle(3); // both joins have reached the hub
    kill();
    for (const f of [waiting, local]) {
      await assert.rejects(f.promise, MemberGoneError);
      assert.equal(await f.ended, "failed");
    }
    const next = workers[1]!.flights<string>("t").run("k", async () => "fresh");
    assert.equal(await next.promise, "fresh");
    assert.equal(next.joined, false);
  });

  it("tells a joiner already holding the value that the flight failed", async () => {
    const ran = workers[0]!.flights<string>("t").run("k", async (run) => {
      run.holdUntil(new Promise(() => undefined)); // the fill is still landing when the worker dies
      return "fill";
    });
    assert.equal(await ran.promise, "fill");
    const late = await workers[1]!.flights<string>("t").join("k");
    assert.ok(late);
    assert.equal(await late.promise, "fill");
    kill();
    assert.equal(await late.ended, "failed");
    assert.equal(await workers[1]!.flights<string>("t").join("k"), undefined);
  });

  it("releases its leases at once", async () => {
    assert.ok(await workers[0]!.leases("l").acquire("k", 3_600_000));
    assert.equal(await workers[1]!.leases("l").acquire("k", 1_000), undefined);
    kill();
    assert.ok(await workers[1]!.leases("l").acquire("k", 1_000));
  });

  it("receives no more events", async () => {
    const seen: string[] = [];
    workers[0]!.events<string>("purge").subscribe((e) => seen.push(e));
    kill();
    const got = deferred<string>();
    workers[1]!.events<string>("purge").subscribe((e) => got.resolve(e));
    await workers[1]!.events<string>("purge").publish("x");
    assert.equal(await got.promise, "x");
    assert.deepEqual(seen, []);
    assert.equal(pipes[0]!.sent.toWorker, 0, "nothing was sent to it");
  });
});

describe("workers coordination: the pipe", () => {
  it("carries one round trip for 50 callers of one key in one worker", async () => {
    const hub = new CoordinationHub();
    const p = pipe();
    hub.attach("1", p.hub);
    const worker = new WorkerCoordinator(p.worker);
    const gate = deferred();
    const calls = Array.from({ length: 50 }, () =>
      worker.flights<string>("t").run("k", async () => (await gate.promise, "v")),
    );
    await settle(3);
    assert.deepEqual(p.sent, { toHub: 1, toWorker: 1 }, "one run, one answer");
    gate.resolve();
    for (const c of calls) assert.equal(await c.promise, "v");
    assert.equal(calls.filter((c) => !c.joined).length, 1);
    // The owner then reports the value and the end; nobody joined from elsewhere, so no notices.
    assert.deepEqual(p.sent, { toHub: 3, toWorker: 1 });
    hub.close();
  });

  it("ignores traffic on the pipe that is not its own", async () => {
    const errors: unknown[] = [];
    const hub = new CoordinationHub({ onError: (err) => errors.push(err) });
    const p = pipe();
    hub.attach("1", p.hub);
    const worker = new WorkerCoordinator(p.worker);
    p.worker.send({ cmd: "NODE_CLUSTER", act: "online" });
    p.hub.send({ metrics: [1, 2, 3] });
    assert.equal(await worker.flights<number>("t").run("k", async () => 7).promise, 7);
    assert.deepEqual(errors, []);
    hub.close();
  });

  it("keeps a RegistryError a RegistryError for joiners in other workers", async () => {
    const hub = new CoordinationHub();
    const workers = ["1", "2"].map((id) => {
      const p = pipe();
      hub.attach(id, p.hub);
      return new WorkerCoordinator(p.worker);
    });
    const gate = deferred();
    const fail = async (): Promise<string> => {
      await gate.promise;
      throw new RegistryError("TOOMANYREQUESTS", "slow down", { headers: { "retry-after": "30" } });
    };
    const calls = workers.map((w) => w.flights<string>("t").run("k", fail));
    await settle(3);
    gate.resolve();
    for (const c of calls) {
      await assert.rejects(c.promise, (err) => {
        assert.ok(err instanceof RegistryError);
        assert.equal(err.code, "TOOMANYREQUESTS");
        assert.equal(err.status, 429);
        assert.equal(err.message, "slow down");
        assert.deepEqual(err.headers, { "retry-after": "30" });
        return true;
      });
    }
    hub.close();
  });

  it("fails a flight whose value cannot cross the pipe, in its own worker too", async () => {
    const hub = new CoordinationHub();
    const p = pipe();
    hub.attach("1", p.hub);
    const worker = new WorkerCoordinator(p.worker);
    const flight = worker.flights<() => void>("t").run("k", async () => () => undefined);
    await assert.rejects(flight.promise, /could not be cloned/);
    assert.equal(await flight.ended, "failed");
    hub.close();
  });
});

function deferred<T = void>() {
  let resolve!: (value: T) => void;
  const promise = new Promise<T>((res) => (resolve = res));
  return { promise, resolve };
}

/** Lets `n` hops of the pipes happen. */
async function settle(n: number): Promise<void> {
  for (let i = 0; i < n; i++) await new Promise((resolve) => setImmediate(resolve));
}
