import { test } from "node:test";
import assert from "node:assert/strict";
import { isTrustedRealm, parseChallenges } from "../../src/upstream/challenge.ts";

test("parses Docker Hub's bearer challenge", () => {
  const [c] = parseChallenges(
    'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull"',
  );
  assert.deepEqual(c, {
    scheme: "bearer",
    params: {
      realm: "https://auth.docker.io/token",
      service: "registry.docker.io",
      scope: "repository:library/alpine:pull",
    },
  });
});

test("parses Basic, unquoted values, escapes and several challenges", () => {
  const cs = parseChallenges([
    'Basic realm="Registry \\"Realm\\""',
    "Bearer realm=http://x/token, service=svc",
  ]);
  assert.equal(cs.length, 2);
  assert.deepEqual(cs[0], { scheme: "basic", params: { realm: 'Registry "Realm"' } });
  assert.deepEqual(cs[1]!.params, { realm: "http://x/token", service: "svc" });
  assert.deepEqual(
    parseChallenges('Bearer realm="a",scope="x y", Basic realm="b"').map((c) => c.scheme),
    ["bearer", "basic"],
  );
});

test("survives garbage", () => {
  assert.deepEqual(parseChallenges(undefined), []);
  for (const s of ["", "=", '"', 'Bearer realm="unterminated', ",,,", "Bearer ="]) parseChallenges(s);
});

test("trusts a realm only on the upstream's own domain", () => {
  assert.ok(isTrustedRealm("https://auth.docker.io/token", "https://registry-1.docker.io"));
  assert.ok(isTrustedRealm("http://127.0.0.1:9999/token", "http://127.0.0.1:5000"));
  assert.ok(!isTrustedRealm("https://evil.example.com/token", "https://registry-1.docker.io"));
  assert.ok(
    !isTrustedRealm("http://auth.docker.io/token", "https://registry-1.docker.io"),
    "no https downgrade",
  );
  assert.ok(!isTrustedRealm("http://127.0.0.2/token", "http://127.0.0.1:5000"));
  assert.ok(!isTrustedRealm("file:///etc/passwd", "http://127.0.0.1:5000"));
  assert.ok(!isTrustedRealm("not a url", "http://127.0.0.1:5000"));
});
