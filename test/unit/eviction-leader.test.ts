// One eviction index per cluster: the replica holding the lease runs it, fed by everyone's
// activity; when it lets go (or dies, and its lease runs out), another takes over.
import assert from "node:assert/strict";
import { setTimeout as sleep } from "node:timers/promises";
import { describe, it } from "node:test";
import type { Logger } from "winston";
import { EvictionLeader } from "../../src/cluster/eviction-leader.ts";
import { InProcessCoordinator } from "../../src/coordination/in-process.ts";
import type { Evictor } from "../../src/mirror/eviction.ts";
import { BLOB_ACTIVITY, type BlobActivity } from "../../src/mirror/eviction-relay.ts";

const quiet = { info() {}, warn() {}, error() {}, debug() {} } as unknown as Logger;

/** An Evictor that records what it is told. */
function recorder() {
  const seen = { started: 0, closed: 0, added: [] as string[], read: [] as string[] };
  const evictor = {
    start: async () => void seen.started++,
    close: async () => void seen.closed++,
    added: (hex: string) => void seen.added.push(hex),
    read: (hex: string) => void seen.read.push(hex),
  } as unknown as Evictor;
  return { seen, evictor };
}

async function until(ok: () => boolean): Promise<void> {
  const deadline = Date.now() + 5000;
  while (!ok()) {
    if (Date.now() > deadline) assert.fail("timed out");
    await sleep(5);
  }
}

describe("EvictionLeader", () => {
  it("lets one replica lead, feeds it every replica's activity, and hands over when it stops", async () => {
    const scope = new InProcessCoordinator();
    const activity = scope.events<BlobActivity>(BLOB_ACTIVITY);
    const a = recorder();
    const b = recorder();
    const leaderA = new EvictionLeader(scope.leases("cluster"), activity, () => a.evictor, quiet, 90);
    const leaderB = new EvictionLeader(scope.leases("cluster"), activity, () => b.evictor, quiet, 90);
    leaderA.start();
    await until(() => leaderA.current !== undefined);
    leaderB.start();
    await sleep(100); // B tries at least once more: the lease is A's
    assert.equal(leaderB.current, undefined);
    await activity.publish({ added: [["aa", 1]], read: ["bb"] });
    await until(() => a.seen.read.length === 1);
    assert.deepEqual(a.seen.added, ["aa"]);
    assert.deepEqual(b.seen.read, [], "only the leader indexes");

    await leaderA.stop();
    assert.equal(a.seen.closed, 1);
    await until(() => leaderB.current !== undefined);
    assert.equal(b.seen.started, 1);
    await activity.publish({ added: [], read: ["cc"] });
    await until(() => b.seen.read.length === 1);
    assert.deepEqual(a.seen.read, ["bb"], "the old leader is fed no more");
    await leaderB.stop();
    await scope.close();
  });

  it("lets go of the index when the lease was lost (it ran out while this replica stalled)", async () => {
    let now = 1_000_000;
    const scope = new InProcessCoordinator({ now: () => now });
    const activity = scope.events<BlobActivity>(BLOB_ACTIVITY);
    const a = recorder();
    const leader = new EvictionLeader(scope.leases("cluster"), activity, () => a.evictor, quiet, 90);
    leader.start();
    await until(() => leader.current !== undefined);
    // Another replica takes the lease once it has run out (this one did not renew in time).
    now += 1000;
    const other = await scope.leases("cluster").acquire("eviction", 60_000);
    assert.ok(other);
    await until(() => leader.current === undefined);
    assert.equal(a.seen.closed, 1);
    await leader.stop();
    await scope.close();
  });
});
