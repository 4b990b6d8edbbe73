// Tokens: the upstream's, cached per realm and scope; and the mirror's own, for its clients.
import { test } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import type { IncomingMessage } from "node:http";
import bcrypt from "bcryptjs";
import { Gate } from "../../src/access/gate.ts";
import { Htpasswd } from "../../src/access/htpasswd.ts";
import { PushRights, scopeFor } from "../../src/access/push-rights.ts";
import { tokenRequest } from "../../src/access/token-request.ts";
import { ANONYMOUS, TokenIssuer } from "../../src/access/tokens.ts";
import { InProcessCoordinator } from "../../src/coordination/in-process.ts";
import { RegistryError } from "../../src/oci/errors.ts";
import { tokenKey } from "../../src/upstream/auth.ts";
import type { Challenge } from "../../src/upstream/challenge.ts";

const bearer = (params: Record<string, string>): Challenge => ({ scheme: "bearer", params });

test("one token key for the cache and the merging of negotiations, service or not", () => {
  const scope = "repository:library/alpine:pull";
  // A challenge without a service wants the same token as one with an empty service: the token
  // request carries no service either way (the client's key once spelled it "undefined").
  assert.equal(tokenKey(bearer({ realm: "https://r/token" }), scope), "https://r/token||" + scope);
  assert.equal(
    tokenKey(bearer({ realm: "https://r/token" }), scope),
    tokenKey(bearer({ realm: "https://r/token", service: "" }), scope),
  );
  assert.notEqual(
    tokenKey(bearer({ realm: "https://r/token", service: "a" }), scope),
    tokenKey(bearer({ realm: "https://r/token", service: "b" }), scope),
  );
  assert.notEqual(
    tokenKey(bearer({ realm: "https://r/token" }), scope),
    tokenKey(bearer({ realm: "https://r/token" }), "repository:library/other:pull"),
  );
});

// ---------------------------------------------------------------------------------------------
// Clients of the mirror: who may pull, push and delete (gate.ts, push-rights.ts)

const users = new Htpasswd(
  `alice:${bcrypt.hashSync("wonderland", 4)}\nbob:${bcrypt.hashSync("builder", 4)}\n`,
);
const key = randomBytes(32);

function gate(opts: { anonymousPull?: boolean } = {}): { gate: Gate; tokens: TokenIssuer } {
  const tokens = new TokenIssuer(60_000, key);
  return {
    gate: new Gate(users, tokens, new InProcessCoordinator().flights<boolean>("logins"), opts),
    tokens,
  };
}

const request = (authorization?: string): IncomingMessage =>
  ({
    headers: { host: "mirror:5555", ...(authorization === undefined ? {} : { authorization }) },
    socket: {},
  }) as unknown as IncomingMessage;
const basic = (user: string, password: string) =>
  "Basic " + Buffer.from(`${user}:${password}`).toString("base64");

/** The WWW-Authenticate of the 401 that `run` throws or rejects with. */
async function challengeOf(run: () => unknown): Promise<string> {
  try {
    await run();
  } catch (err) {
    assert.ok(err instanceof RegistryError, String(err));
    assert.equal(err.code, "UNAUTHORIZED");
    return err.headers["www-authenticate"] ?? "";
  }
  assert.fail("expected a 401");
}

const realm = 'Bearer realm="http://mirror:5555/auth/token",service="regmirror"';
const onlyAlice = new PushRights(["alice"], false);

test("logins on: a pull needs a login, a push or delete a pusher, and the challenge names the scope", async () => {
  const { gate: g, tokens } = gate();
  const alice = `Bearer ${tokens.issue("alice").token}`;
  const bob = `Bearer ${tokens.issue("bob").token}`;
  assert.equal(
    await challengeOf(() => g.authorize(request(), "local/x", "pull", "c")),
    `${realm},scope="repository:local/x:pull"`,
  );
  assert.equal(await challengeOf(() => g.authorize(request(), undefined, "pull", "c")), realm);
  assert.equal(
    await challengeOf(() => g.authorize(request(), "local/x", "push", "c", onlyAlice)),
    `${realm},scope="repository:local/x:pull,push"`,
    "a push challenge asks for pull,push, so the client comes back with a token for it",
  );
  assert.equal(
    await challengeOf(() => g.authorize(request(), "local/x", "delete", "c", onlyAlice)),
    `${realm},scope="repository:local/x:delete"`,
  );
  assert.equal(await g.authorize(request(basic("alice", "wonderland")), "library/a", "pull", "c"), "alice");
  await challengeOf(() => g.authorize(request(basic("alice", "wrong")), "library/a", "pull", "c"));
  // A token is checked without a promise: the hot path stays synchronous.
  assert.equal(g.authorize(request(alice), "local/x", "push", "c", onlyAlice), "alice");
  assert.equal(g.authorize(request(alice), "local/x", "delete", "c", onlyAlice), "alice");
  assert.equal(g.authorize(request(bob), "library/a", "pull", "c", onlyAlice), "bob");
  assert.throws(() => g.authorize(request(bob), "local/x", "push", "c", onlyAlice), { code: "DENIED" });
  assert.throws(() => g.authorize(request(bob), "local/x", "delete", "c", onlyAlice), { code: "DENIED" });
  await assert.rejects(
    async () => g.authorize(request(basic("bob", "builder")), "local/x", "push", "c", onlyAlice),
    { code: "DENIED" },
  );
  // hosted.pushers empty: every user of the file, and only those.
  const everyone = new PushRights([], false);
  assert.equal(g.authorize(request(bob), "local/x", "push", "c", everyone), "bob");
  const ghost = `Bearer ${tokens.issue("ghost").token}`;
  await challengeOf(() => g.authorize(request(ghost), "local/x", "push", "c", everyone));
  await challengeOf(() => g.authorize(request("Bearer forged.token"), "local/x", "pull", "c"));
});

test("logins off for pulls (anonymousPull): no credentials pull, the base still challenges, anonymous tokens never push", async () => {
  const { gate: g, tokens } = gate({ anonymousPull: true });
  assert.equal(g.authorize(request(), "library/a", "pull", "c"), ANONYMOUS);
  assert.equal(
    await challengeOf(() => g.authorize(request(), undefined, "pull", "c")),
    realm,
    "GET /v2/ without credentials answers the challenge, so that clients learn the realm",
  );
  const anonymous = `Bearer ${tokens.issue(ANONYMOUS).token}`;
  assert.equal(g.authorize(request(anonymous), undefined, "pull", "c"), ANONYMOUS);
  assert.equal(g.authorize(request(anonymous), "library/a", "pull", "c"), ANONYMOUS);
  for (const action of ["push", "delete"] as const) {
    assert.match(
      await challengeOf(() => g.authorize(request(anonymous), "local/x", action, "c", onlyAlice)),
      /,scope="repository:local\/x:(pull,push|delete)"$/,
    );
    await challengeOf(() => g.authorize(request(), "local/x", action, "c", onlyAlice));
  }
  // The body names the access needed, as distribution's does: dockerd takes an UNAUTHORIZED
  // without a detail for a passing fault and retried a push without a login for 50 s.
  assert.throws(
    () => g.authorize(request(anonymous), "local/x", "push", "c", onlyAlice),
    (err: RegistryError) => {
      assert.deepEqual(JSON.parse(err.body()), {
        errors: [
          {
            code: "UNAUTHORIZED",
            message: "authentication required",
            detail: [
              { Type: "repository", Class: "", Name: "local/x", Action: "pull" },
              { Type: "repository", Class: "", Name: "local/x", Action: "push" },
            ],
          },
        ],
      });
      return true;
    },
  );
  // Users still log in, for pushes and for pulls.
  assert.equal(
    g.authorize(request(`Bearer ${tokens.issue("alice").token}`), "local/x", "push", "c", onlyAlice),
    "alice",
  );
  // The same key without anonymousPull (a replica configured otherwise): the token is no login.
  const strict = gate().gate;
  await challengeOf(() => strict.authorize(request(anonymous), "library/a", "pull", "c"));
  await challengeOf(() => strict.authenticate(request(anonymous), undefined, "c"));
  await challengeOf(() => g.authenticate(request(anonymous), undefined, "c"));
});

test("the token endpoint: Basic or nothing, and anonymous tokens only with anonymousPull", async () => {
  const strict = gate();
  const open = gate({ anonymousPull: true });
  const pull = new URLSearchParams("service=regmirror&scope=repository:library/a:pull");
  const push = new URLSearchParams("service=regmirror&scope=repository:local/x:pull,push");
  const none = new URLSearchParams("account=alice&client_id=docker&offline_token=true&service=regmirror");
  const subject = async (g: { gate: Gate; tokens: TokenIssuer }, asked: ReturnType<typeof tokenRequest>) => {
    const answer = await g.gate.issue(asked, "c");
    assert.equal(answer.token, answer.access_token);
    assert.ok(answer.expires_in > 0 && !Number.isNaN(Date.parse(answer.issued_at)));
    assert.equal("refresh_token" in answer, false, "no refresh token: docker login keeps to GET and Basic");
    return g.tokens.verify(answer.token);
  };
  assert.equal(await subject(strict, tokenRequest(basic("alice", "wonderland"), none)), "alice");
  await assert.rejects(strict.gate.issue(tokenRequest(undefined, pull), "c"), { code: "UNAUTHORIZED" });
  await assert.rejects(strict.gate.issue(tokenRequest(basic("alice", "no"), pull), "c"), {
    code: "UNAUTHORIZED",
  });
  assert.equal(await subject(open, tokenRequest(undefined, pull)), ANONYMOUS);
  assert.equal(
    await subject(open, tokenRequest(undefined, push)),
    ANONYMOUS,
    "a push then gets the challenge",
  );
  assert.equal(await subject(open, tokenRequest(basic("alice", "wonderland"), push)), "alice");
  await assert.rejects(open.gate.issue(tokenRequest(basic("alice", "no"), push), "c"), {
    code: "UNAUTHORIZED",
  });
  await assert.rejects(
    open.gate.issue(tokenRequest(basic("alice", "no"), none), "c"),
    {
      code: "UNAUTHORIZED",
    },
    "docker login with a wrong password fails",
  );
  // dockerd sends its Docker Hub login to a mirror's realm: for pulls it does not matter.
  assert.equal(await subject(open, tokenRequest(basic("hubuser", "hubpass"), pull)), ANONYMOUS);
});

test("hosted repositories without logins: pushes and deletes DENIED unless hosted.anonymousPush", () => {
  assert.throws(() => new PushRights([], false).checkAnonymous("push", "local/x"), { code: "DENIED" });
  assert.throws(() => new PushRights(["alice"], false).checkAnonymous("delete", "local/x"), {
    code: "DENIED",
  });
  new PushRights([], true).checkAnonymous("push", "local/x");
  new PushRights([], true).checkAnonymous("delete", "local/x");
  assert.equal(scopeFor("local/x", "push"), "repository:local/x:pull,push");
});
