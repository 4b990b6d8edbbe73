// Password checks: off the event loop, the same cost for unknown users, failed logins limited.
import { test } from "node:test";
import assert from "node:assert/strict";
import bcrypt from "bcryptjs";
import { BcryptPool } from "../../src/access/bcrypt-pool.ts";
import { dummyHash, Htpasswd } from "../../src/access/htpasswd.ts";
import { FailedLogins } from "../../src/access/login-limit.ts";

test("an unknown user costs a bcrypt check against a dummy hash of the file's cost", async () => {
  const seen: string[] = [];
  const spy = {
    compare: async (_password: string, hash: string) => {
      seen.push(hash);
      return false;
    },
  };
  const users = new Htpasswd(`alice:${bcrypt.hashSync("pw", 5)}\nbob:${bcrypt.hashSync("pw", 4)}\n`, spy);
  assert.equal(await users.check("mallory", "guess"), false);
  assert.equal(seen.length, 1, "one compare for the unknown user");
  assert.match(seen[0]!, /^\$2b\$05\$[./A-Za-z0-9]{53}$/, "a well-formed hash of the highest cost");
  assert.equal(await users.check("alice", "guess"), false);
  assert.equal(seen.length, 2, "a known user costs one compare too");
  assert.match(dummyHash(12), /^\$2b\$12\$/);
});

test("bcrypt runs on a worker thread: the event loop keeps turning while a check runs", async () => {
  const hash = bcrypt.hashSync("right", 10);
  const pool = new BcryptPool(1);
  const { compareSync, compare } = bcrypt;
  // The main thread's bcrypt is out of order for the test: only another thread can answer.
  bcrypt.compareSync = () => {
    throw new Error("compareSync on the main thread");
  };
  bcrypt.compare = (() => Promise.reject(new Error("compare on the main thread"))) as typeof compare;
  try {
    let turns = 0;
    let checking = true;
    const spin = (): void => {
      turns++;
      if (checking) setImmediate(spin);
    };
    setImmediate(spin);
    const [right, wrong] = await Promise.all([pool.compare("right", hash), pool.compare("wrong", hash)]);
    checking = false;
    assert.equal(right, true);
    assert.equal(wrong, false);
    assert.ok(turns > 3, `the event loop turned ${turns} times during two checks`);
    assert.equal(await pool.compare("x", "not a hash"), false, "a malformed hash is no match");
  } finally {
    bcrypt.compareSync = compareSync;
    bcrypt.compare = compare;
    await pool.close();
  }
});

test("the pool refuses past its queue bound with TOOMANYREQUESTS", async () => {
  const pool = new BcryptPool(1, 2);
  const hash = bcrypt.hashSync("x", 4);
  try {
    const running = [pool.compare("a", hash), pool.compare("b", hash), pool.compare("c", hash)];
    await assert.rejects(pool.compare("d", hash), { code: "TOOMANYREQUESTS" });
    await Promise.all(running);
  } finally {
    await pool.close();
  }
});

test("failed logins: past the limit within the window, wait until the oldest expires", () => {
  let now = 1_000_000;
  const limit = new FailedLogins(3, 60_000, () => now);
  for (let i = 0; i < 3; i++) {
    assert.equal(limit.begin("a"), undefined, `attempt ${i + 1} is checked`);
    limit.end("a", false);
    now += 1000;
  }
  assert.equal(limit.begin("a"), 57, "seconds until the first failure leaves the window");
  assert.equal(limit.begin("b"), undefined, "another address is not affected");
  limit.end("b", true);
  now += 57_500;
  assert.equal(limit.begin("a"), undefined, "the first failure has left the window");
  limit.end("a", false);
  assert.equal(limit.begin("a"), 1, "blocked again until the second one leaves it");
});

test("failed logins: checks in flight count, so a burst cannot outrun the limit", () => {
  const limit = new FailedLogins(2, 60_000);
  assert.equal(limit.begin("a"), undefined);
  assert.equal(limit.begin("a"), undefined);
  assert.equal(limit.begin("a"), 1);
  limit.end("a", true);
  limit.end("a", true);
  assert.equal(limit.begin("a"), undefined, "successes free their slots");
});
