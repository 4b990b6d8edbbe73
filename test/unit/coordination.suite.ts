// The contract of src/coordination/coordinator.ts, as tests every implementation must pass (as
// distribution's storage driver testsuites): the in-process coordinator runs it now
// (coordination.test.ts), the workers' and Redis coordinators will run it the same way.
//
// A harness gives members of one scope (two workers, two hosts; in-process, the same
// coordinator twice) and the scope's clock. Calls alternate between members, so a flight
// started in one must be joined from the other. Values are structured-clonable, compared by
// value: a wider scope hands copies across. No assertion depends on time; lease expiry moves the clock by hand.
import { setTimeout as sleep } from "node:timers/promises";
import assert from "node:assert/strict";
import { afterEach, beforeEach, describe, it } from "node:test";
import type { Coordinator } from "../../src/coordination/coordinator.ts";

export interface CoordinationHarness {
  /** Members of one scope; at least one. */
  members: Coordinator[];
  /** Moves the scope's clock (the one leases expire by) on by `ms`. */
  advance(ms: number): void | Promise<void>;
  close(): Promise<void>;
}

interface Deferred<T> {
  promise: Promise<T>;
  resolve(value: T): void;
  reject(err: Error): void;
}

function deferred<T = void>(): Deferred<T> {
  let resolve!: (value: T) => void;
  let reject!: (err: Error) => void;
  const promise = new Promise<T>((res, rej) => ((resolve = res), (reject = rej)));
  return { promise, resolve, reject };
}

export function coordinationSuite(name: string, make: () => Promise<CoordinationHarness>): void {
  describe(`coordination conformance: ${name}`, () => {
    let h: CoordinationHarness;
    const member = (i: number) => h.members[i % h.members.length]!;
    beforeEach(async () => {
      h = await make();
    });
    afterEach(async () => {
      await h.close();
    });

    describe("Flights", () => {
      it("lets concurrent callers share one run, and says which of them joined", async () => {
        const gate = deferred();
        let runs = 0;
        const calls = [0, 1, 2, 3, 4].map((i) =>
          member(i)
            .flights<{ n: number }>("t")
            .run("k", async () => {
              runs++;
              await gate.promise;
              return { n: 42 };
            }),
        );
        gate.resolve();
        const values = await Promise.all(calls.map((c) => c.promise));
        assert.equal(runs, 1);
        assert.deepEqual(
          calls.map((c) => c.joined),
          [false, true, true, true, true],
        );
        for (const v of values) assert.deepEqual(v, { n: 42 });
      });

      it("gives a rejection to every caller that joined, and the next call runs afresh", async () => {
        const gate = deferred();
        let runs = 0;
        const fail = async () => {
          runs++;
          await gate.promise;
          throw new Error("upstream down");
        };
        const calls = [0, 1, 2].map((i) => member(i).flights<string>("t").run("k", fail));
        gate.resolve();
        for (const c of calls) await assert.rejects(c.promise, /upstream down/);
        assert.equal(runs, 1);
        const again = member(1)
          .flights<string>("t")
          .run("k", async () => (runs++, "ok"));
        assert.equal(again.joined, false);
        assert.equal(await again.promise, "ok");
        assert.equal(runs, 2);
      });

      it("lets a caller that retries from its rejection handler start a fresh run", async () => {
        const flights = member(0).flights<string>("t");
        const retried = flights
          .run("k", async () => {
            throw new Error("once");
          })
          .promise.then(
            () => assert.fail("the first run rejects"),
            () => flights.run("k", async () => "second"),
          );
        const second = await retried;
        assert.equal(second.joined, false);
        assert.equal(await second.promise, "second");
      });

      it("remembers nothing after a flight settles", async () => {
        const flights = member(0).flights<number>("t");
        let runs = 0;
        assert.equal(await flights.run("k", async () => ++runs).promise, 1);
        assert.equal(await flights.join("k"), undefined);
        const next = member(1)
          .flights<number>("t")
          .run("k", async () => ++runs);
        assert.equal(next.joined, false);
        assert.equal(await next.promise, 2);
      });

      it("has an unheld flight over, in a member that joined it, once the value is there", async () => {
        // The value and the end of an unheld flight must reach a joining member together: one
        // that asks again as soon as it has the value starts afresh, and is never handed the
        // old value (a CI flake over Redis, where they were two notices).
        for (let round = 0; round < 100; round++) {
          const [running, gate] = [deferred(), deferred()];
          const first = member(0)
            .flights<number>("t")
            .run("k", async () => (running.resolve(), await gate.promise, round));
          await running.promise; // the claim is made wherever claims are kept
          const joined = await member(1).flights<number>("t").join("k");
          assert.ok(joined, "a flight is in the air");
          gate.resolve();
          assert.equal(await joined.promise, round);
          const again = member(1)
            .flights<number>("t")
            .run("k", async () => -1);
          assert.equal(again.joined, false, `round ${round}`);
          assert.equal(await again.promise, -1);
          await first.promise;
        }
      });

      it("join() joins a flight in the air and never starts one", async () => {
        const gate = deferred();
        assert.equal(await member(0).flights<string>("t").join("k"), undefined);
        const first = member(0)
          .flights<string>("t")
          .run("k", async () => (await gate.promise, "v"));
        const joined = await member(1).flights<string>("t").join("k");
        assert.ok(joined, "a flight is in the air");
        assert.equal(joined.joined, true);
        gate.resolve();
        assert.equal(await joined.promise, "v");
        assert.equal(await first.promise, "v");
      });

      it("keeps a held flight joinable after its value is known, until the hold settles", async () => {
        for (const outcome of ["fulfilled", "rejected"] as const) {
          const landed = deferred();
          const first = member(0)
            .flights<string>("t")
            .run("k", async (run) => {
              run.holdUntil(landed.promise);
              return "fill";
            });
          assert.equal(await first.promise, "fill");
          const late = await member(1).flights<string>("t").join("k");
          assert.equal(await late?.promise, "fill", "joinable while held");
          if (outcome === "fulfilled") landed.resolve();
          else landed.reject(new Error("the fill failed"));
          // Across members an end travels: `ended` is when a member knows it.
          await late?.ended;
          assert.equal(await member(1).flights<string>("t").join("k"), undefined, `ended once ${outcome}`);
        }
      });

      it("ends a rejected flight at once, held or not", async () => {
        const never = new Promise<void>(() => undefined);
        const first = member(0)
          .flights<string>("t")
          .run("k", async (run) => {
            run.holdUntil(never);
            throw new Error("no answer");
          });
        await assert.rejects(first.promise, /no answer/);
        assert.equal(await member(1).flights<string>("t").join("k"), undefined);
      });

      it("says a flight ended done only after its value and every hold", async () => {
        const landed = deferred();
        const first = member(0)
          .flights<string>("t")
          .run("k", async (run) => {
            run.holdUntil(landed.promise);
            return "fill";
          });
        const other = member(1)
          .flights<string>("t")
          .run("k", async () => assert.fail("joins, never runs"));
        const late = await member(1).flights<string>("t").join("k");
        assert.ok(late);
        let ended: string | undefined;
        void Promise.all([first.ended, other.ended, late.ended]).then((all) => (ended = all.join()));
        assert.equal(await first.promise, "fill");
        assert.equal(await other.promise, "fill");
        await settle();
        assert.equal(ended, undefined, "held: not ended yet");
        landed.resolve();
        assert.deepEqual(await Promise.all([first.ended, other.ended, late.ended]), ["done", "done", "done"]);
      });

      it("says a flight failed when its run rejected, in every member", async () => {
        const gate = deferred();
        const calls = [0, 1, 2].map((i) =>
          member(i)
            .flights<string>("t")
            .run("k", async () => {
              await gate.promise;
              throw new Error("no answer");
            }),
        );
        gate.resolve();
        for (const c of calls) await assert.rejects(c.promise, /no answer/);
        assert.deepEqual(await Promise.all(calls.map((c) => c.ended)), ["failed", "failed", "failed"]);
      });

      it("says a flight failed when a hold rejected, to joiners from another member too", async () => {
        const landed = deferred();
        const first = member(0)
          .flights<string>("t")
          .run("k", async (run) => {
            run.holdUntil(Promise.resolve());
            run.holdUntil(landed.promise);
            return "fill";
          });
        assert.equal(await first.promise, "fill");
        const late = await member(1).flights<string>("t").join("k");
        assert.ok(late);
        assert.equal(await late.promise, "fill");
        landed.reject(new Error("the fill failed"));
        assert.equal(await first.ended, "failed");
        assert.equal(await late.ended, "failed");
        assert.equal(await member(1).flights<string>("t").join("k"), undefined);
      });

      it("gives joiners in other members the rejection's message, name and code", async () => {
        const first = member(0)
          .flights<string>("t")
          .run("k", async () => {
            await settle();
            throw Object.assign(new TypeError("bad answer"), { code: "E_BAD" });
          });
        const other = member(1)
          .flights<string>("t")
          .run("k", async () => "never");
        for (const c of [first, other]) {
          await assert.rejects(c.promise, (err: Error & { code?: string }) => {
            assert.equal(err.message, "bad answer");
            assert.equal(err.name, "TypeError");
            assert.equal(err.code, "E_BAD");
            return true;
          });
        }
      });

      it("keeps flights of different names apart", async () => {
        const gate = deferred();
        const a = member(0)
          .flights<string>("a")
          .run("k", async () => (await gate.promise, "a"));
        const b = member(1)
          .flights<string>("b")
          .run("k", async () => (await gate.promise, "b"));
        assert.equal(b.joined, false);
        gate.resolve();
        assert.deepEqual(await Promise.all([a.promise, b.promise]), ["a", "b"]);
      });

      it("runs each key once per wave with 1,000 callers on 10 keys", async () => {
        const runs = new Map<string, number>();
        for (let wave = 1; wave <= 3; wave++) {
          const gate = deferred();
          const started = new Set<number>();
          const calls = Array.from({ length: 1000 }, (_, i) => {
            const key = `k${i % 10}`;
            return member(i)
              .flights<string>("t")
              .run(key, async () => {
                started.add(i);
                runs.set(key, (runs.get(key) ?? 0) + 1);
                await gate.promise;
                return `${key}@${wave}`;
              });
          });
          // Every caller placed first: running, or joined to a run. Where a claim takes a round
          // trip (Redis), a flight that ended before another member's claim arrived would rightly
          // run the key again, a new flight, which is not what this counts.
          const placed = () => calls.every((c, i) => c.joined || started.has(i));
          for (let waited = 0; !placed() && waited < 10_000; waited += 5) await sleep(5);
          gate.resolve();
          const values = await Promise.all(calls.map((c) => c.promise));
          values.forEach((v, i) => assert.equal(v, `k${i % 10}@${wave}`));
          assert.equal(calls.filter((c) => !c.joined).length, 10);
          for (const [key, n] of runs) assert.equal(n, wave, `${key} in wave ${wave}`);
          await settle();
        }
      });
    });

    describe("Leases", () => {
      it("are exclusive until released", async () => {
        const lease = await member(0).leases("l").acquire("k", 10_000);
        assert.ok(lease);
        assert.equal(await member(1).leases("l").acquire("k", 10_000), undefined);
        assert.ok(await member(1).leases("other").acquire("k", 10_000), "names are apart");
        await lease.release();
        const next = await member(1).leases("l").acquire("k", 10_000);
        assert.ok(next, "free once released");
        await lease.release(); // a stale release must not free the new owner's lease
        assert.equal(await member(0).leases("l").acquire("k", 10_000), undefined);
      });

      it("expire by themselves unless renewed", async () => {
        const lease = await member(0).leases("l").acquire("k", 1_000);
        assert.ok(lease);
        await h.advance(900);
        assert.equal(await lease.renew(), true);
        await h.advance(900);
        assert.equal(await member(1).leases("l").acquire("k", 1_000), undefined, "renewed: still held");
        await h.advance(200);
        assert.equal(await lease.renew(), false, "expired: lost");
        const next = await member(1).leases("l").acquire("k", 1_000);
        assert.ok(next, "taken once expired");
        assert.equal(await lease.renew(), false, "the old owner cannot take it back");
        await lease.release();
        assert.equal(await member(0).leases("l").acquire("k", 1_000), undefined, "nor free it");
      });

      it("are given up when their member closes", async () => {
        assert.ok(await member(0).leases("l").acquire("k", 60_000));
        await member(0).close();
        assert.ok(await member(1).leases("l").acquire("k", 60_000));
      });
    });

    describe("Events", () => {
      it("reach every subscriber of every member, never during publish()", async () => {
        const got: Array<{ who: number; event: { digest: string } }> = [];
        const all = deferred();
        const subscribers = Math.max(h.members.length, 2);
        for (let who = 0; who < subscribers; who++) {
          member(who)
            .events<{ digest: string }>("purge")
            .subscribe((event) => {
              got.push({ who, event });
              if (got.length === subscribers) all.resolve();
            });
        }
        const published = member(0).events<{ digest: string }>("purge").publish({ digest: "sha256:ab" });
        assert.equal(got.length, 0, "not inside publish()");
        await published;
        await all.promise;
        assert.deepEqual(
          got.map((g) => g.who).sort(),
          Array.from({ length: subscribers }, (_, i) => i),
        );
        for (const g of got) assert.deepEqual(g.event, { digest: "sha256:ab" });
      });

      it("stop reaching a subscriber that left, and survive a handler that throws", async () => {
        const events = () => member(0).events<string>("gc");
        const seen: string[] = [];
        const leave = events().subscribe((e) => seen.push(`gone:${e}`));
        events().subscribe(() => {
          throw new Error("a broken handler");
        });
        const second = deferred<string>();
        events().subscribe((e) => second.resolve(e));
        member(0)
          .events<string>("other")
          .subscribe((e) => seen.push(`other:${e}`));
        leave();
        await events().publish("run");
        assert.equal(await second.promise, "run");
        assert.deepEqual(seen, []);
      });
    });
  });
}

/** Lets reactions already queued run (a flight's end is one). */
function settle(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}
