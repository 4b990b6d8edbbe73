import { test } from "node:test";
import assert from "node:assert/strict";
import { isTrustedRealm, parseChallenges, registrableDomain } from "../../src/upstream/challenge.ts";

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

test("a realm must share the upstream's registrable domain by the Public Suffix List", () => {
  const trusted = (realm: string, upstream: string) =>
    isTrustedRealm(`https://${realm}/token`, `https://${upstream}`);
  // Other customers of a multi-tenant suffix are other domains.
  assert.ok(!trusted("attacker.azurecr.io", "mycompany.azurecr.io"));
  assert.ok(!trusted("evil.co.uk", "registry.good.co.uk"));
  assert.ok(!trusted("someone.github.io", "me.github.io"));
  assert.ok(!trusted("x.me.github.io.evil.com", "me.github.io"));
  // The upstream's own host and its own domain are.
  assert.ok(trusted("mycompany.azurecr.io", "mycompany.azurecr.io"));
  assert.ok(trusted("auth.mycompany.azurecr.io", "mycompany.azurecr.io"));
  assert.ok(trusted("auth.docker.io", "registry-1.docker.io"));
  assert.ok(trusted("auth.good.co.uk", "registry.good.co.uk"));
  assert.ok(trusted("gitlab.com", "registry.gitlab.com"));
  assert.ok(trusted("me.github.io", "me.github.io"));
  // A public suffix or a single label is nobody's domain: same host only.
  assert.ok(!trusted("co.uk", "a.co.uk"));
  assert.ok(!trusted("other", "localhost"));
  assert.ok(!trusted("localhost", "other"));
});

test("an IP-literal realm or upstream matches its own host only", () => {
  assert.ok(isTrustedRealm("http://[::1]:9/token", "http://[::1]:5000"));
  assert.ok(!isTrustedRealm("http://[::2]/token", "http://[::1]:5000"));
  assert.ok(!isTrustedRealm("http://10.0.0.2/token", "http://10.0.0.1"));
  assert.ok(!isTrustedRealm("https://auth.docker.io/token", "https://203.0.113.7"));
  assert.ok(!isTrustedRealm("https://203.0.113.7/token", "https://registry-1.docker.io"));
  assert.equal(registrableDomain("127.0.0.1"), null);
  assert.equal(registrableDomain("[::1]"), null);
});
