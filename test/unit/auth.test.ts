import { test } from "node:test";
import assert from "node:assert/strict";
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
