// Password checks: off the event loop, the same cost for unknown users, failed logins limited;
// token requests in both forms clients send.
import { test } from "node:test";
import assert from "node:assert/strict";
import bcrypt from "bcryptjs";
import { BcryptPool } from "../../src/access/bcrypt-pool.ts";
import { dummyHash, Htpasswd } from "../../src/access/htpasswd.ts";
import { FailedLogins } from "../../src/access/login-limit.ts";
import { Gate } from "../../src/access/gate.ts";
import { tokenRequest } from "../../src/access/token-request.ts";
import { TokenIssuer } from "../../src/access/tokens.ts";
import { InProcessCoordinator } from "../../src/coordination/in-process.ts";
import { RegistryError } from "../../src/oci/errors.ts";

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

test("token requests: GET with Basic, POST with an OAuth2 form, one scope or several", () => {
  const basic = "Basic " + Buffer.from("alice:pw:with:colons").toString("base64");
  const q = (s: string) => new URLSearchParams(s);
  assert.deepEqual(
    tokenRequest(basic, q("service=regmirror&scope=repository:a/b:pull&scope=repository:c:pull")),
    { credentials: { username: "alice", password: "pw:with:colons" }, pullOnly: true },
  );
  // docker push asks for several repositories in one request; docker login asks for none.
  assert.equal(
    tokenRequest(basic, q("scope=repository:a:push,pull&scope=repository:b:pull")).pullOnly,
    false,
  );
  assert.equal(tokenRequest(basic, q("account=alice&client_id=docker&offline_token=true")).pullOnly, false);
  assert.equal(tokenRequest(basic, q("scope=registry:catalog:*")).pullOnly, false);
  assert.equal(tokenRequest(basic, q("scope=%00%ff&scope=")).pullOnly, false, "odd scopes are no trouble");
  assert.deepEqual(tokenRequest(undefined, q("scope=repository:a:pull")), { pullOnly: true });
  assert.deepEqual(tokenRequest("Bearer x", q("")), { pullOnly: false });

  const form = (s: string) => ({ form: q(s) });
  assert.deepEqual(
    tokenRequest(
      undefined,
      q(""),
      form(
        "grant_type=password&username=alice&password=p%26w&client_id=containerd-client&service=regmirror&scope=repository%3Aa%3Apull+repository%3Ab%3Apull",
      ),
    ),
    { credentials: { username: "alice", password: "p&w" }, pullOnly: true },
    "OAuth2 puts several scopes in one value, separated by spaces",
  );
  assert.equal(
    tokenRequest(
      undefined,
      q(""),
      form("grant_type=password&username=a&password=b&scope=repository:a:pull,push"),
    ).pullOnly,
    false,
  );
  const refused = (post: { form: URLSearchParams | undefined }) =>
    assert.throws(() => tokenRequest(basic, q(""), post), { code: "UNSUPPORTED", status: 400 });
  refused(form("grant_type=refresh_token&refresh_token=abc&service=regmirror"));
  refused(form("username=alice&password=pw"));
  refused(form("grant_type=password&username=alice"));
  refused(form("grant_type=password&username=a:b&password=c"));
  refused({ form: undefined });
});

test("failed logins are limited on POST token requests as on GET, together", async () => {
  const users = new Htpasswd(`alice:${bcrypt.hashSync("wonderland", 4)}\n`);
  const gate = new Gate(
    users,
    new TokenIssuer(60_000),
    new InProcessCoordinator().flights<boolean>("logins"),
    {
      limits: { maxFailedLogins: 2, failedLoginWindowMs: 60_000 },
    },
  );
  const post = (password: string) => ({
    form: new URLSearchParams({ grant_type: "password", username: "alice", password }),
  });
  const none = new URLSearchParams();
  const wrongGet = tokenRequest("Basic " + Buffer.from("alice:x").toString("base64"), none);
  await assert.rejects(gate.issue(wrongGet, "10.0.0.1"), { code: "UNAUTHORIZED" });
  await assert.rejects(gate.issue(tokenRequest(undefined, none, post("y")), "10.0.0.1"), {
    code: "UNAUTHORIZED",
  });
  await assert.rejects(gate.issue(tokenRequest(undefined, none, post("wonderland")), "10.0.0.1"), (err) => {
    assert.ok(err instanceof RegistryError);
    assert.equal(err.code, "TOOMANYREQUESTS");
    assert.match(err.headers["retry-after"] ?? "", /^\d+$/);
    return true;
  });
  const ok = await gate.issue(tokenRequest(undefined, none, post("wonderland")), "10.0.0.2");
  assert.equal(typeof ok.access_token, "string", "another address logs in by POST");
});
