// Which address a request comes from: forwarding headers count only from trusted proxies.
import { test } from "node:test";
import assert from "node:assert/strict";
import { ClientAddresses, forwardedChain, normalize } from "../../src/access/client-address.ts";

test("without trustedProxies the socket peer is the client, whatever the headers say", () => {
  const none = new ClientAddresses([]);
  const spoof = { "x-forwarded-for": "1.2.3.4", forwarded: "for=5.6.7.8" };
  assert.equal(none.of("10.0.0.9", spoof), "10.0.0.9");
  assert.equal(none.of("::ffff:10.0.0.9", spoof), "10.0.0.9", "IPv4-mapped IPv6 peer, as plain IPv4");
});

test("a peer that is not a trusted proxy is the client, headers ignored", () => {
  const c = new ClientAddresses(["10.0.0.0/8"]);
  assert.equal(c.of("192.168.1.5", { "x-forwarded-for": "1.2.3.4" }), "192.168.1.5");
});

test("behind trusted proxies, the right-most address that is not a proxy is the client", () => {
  const c = new ClientAddresses(["10.0.0.0/8", "fd00::/8", "127.0.0.1"]);
  // The client wrote "6.6.6.6" itself; the first proxy appended the address it saw (1.2.3.4).
  assert.equal(c.of("10.0.0.2", { "x-forwarded-for": "6.6.6.6, 1.2.3.4, 10.0.0.1" }), "1.2.3.4");
  assert.equal(c.of("::ffff:127.0.0.1", { "x-forwarded-for": "203.0.113.7" }), "203.0.113.7");
  assert.equal(c.of("fd00::1", { "x-forwarded-for": "2001:db8::5" }), "2001:db8::5");
  // Two X-Forwarded-For headers arrive as an array (or joined): read as one list.
  assert.equal(
    c.of("10.0.0.2", { "x-forwarded-for": ["7.7.7.7", "8.8.8.8"] as unknown as string }),
    "8.8.8.8",
  );
  // All hops trusted: the left-most proxy is the best we know.
  assert.equal(c.of("10.0.0.2", { "x-forwarded-for": "10.9.9.9" }), "10.9.9.9");
  // No header: the proxy itself.
  assert.equal(c.of("10.0.0.2", {}), "10.0.0.2");
});

test("a hop that is not an address ends the walk at the nearest known address", () => {
  const c = new ClientAddresses(["10.0.0.0/8"]);
  assert.equal(c.of("10.0.0.2", { "x-forwarded-for": "1.2.3.4, garbage, 10.0.0.3" }), "10.0.0.3");
  assert.equal(c.of("10.0.0.2", { "x-forwarded-for": "unknown" }), "10.0.0.2");
  assert.equal(c.of("10.0.0.2", { "x-forwarded-for": '1.2.3.4"\r\nx' }), "10.0.0.2");
});

test("RFC 7239 Forwarded: for= with ports, brackets and quotes; read only without X-Forwarded-For", () => {
  const c = new ClientAddresses(["10.0.0.0/8"]);
  const fwd = 'for=6.6.6.6, for="[2001:db8:cafe::17]:4711";proto=https;by=10.0.0.1';
  assert.equal(c.of("10.0.0.2", { forwarded: fwd }), "2001:db8:cafe::17");
  assert.equal(c.of("10.0.0.2", { forwarded: "For=198.51.100.3:8080" }), "198.51.100.3");
  assert.equal(c.of("10.0.0.2", { forwarded: "for=_hidden" }), "10.0.0.2");
  assert.equal(
    c.of("10.0.0.2", { forwarded: "for=6.6.6.6", "x-forwarded-for": "1.2.3.4" }),
    "1.2.3.4",
    "X-Forwarded-For wins",
  );
  assert.deepEqual(forwardedChain({ forwarded: 'for="a,b";by=x, proto=http' }), ["a,b", ""]);
});

test("normalize: mapped IPv4, brackets and ports; not-an-address is undefined", () => {
  assert.equal(normalize("::ffff:1.2.3.4"), "1.2.3.4");
  assert.equal(normalize("0:0:0:0:0:FFFF:1.2.3.4"), "1.2.3.4");
  assert.equal(normalize("[::1]:443"), "::1");
  assert.equal(normalize("1.2.3.4:80"), "1.2.3.4");
  assert.equal(normalize("2001:DB8::1"), "2001:db8::1");
  assert.equal(normalize("1::ffff:1.2.3.4"), "1::ffff:1.2.3.4");
  for (const bad of ["", "unknown", "1.2.3", "example.com", "1.2.3.4/8"])
    assert.equal(normalize(bad), undefined);
});

test("trusted entries may be IPv4-mapped IPv6 and still match IPv4 peers", () => {
  const c = new ClientAddresses(["::ffff:10.0.0.0/104", "::ffff:192.168.0.1"]);
  assert.equal(c.of("10.1.1.1", { "x-forwarded-for": "1.1.1.1" }), "1.1.1.1");
  assert.equal(c.of("::ffff:192.168.0.1", { "x-forwarded-for": "2.2.2.2" }), "2.2.2.2");
  assert.equal(c.of("192.168.0.2", { "x-forwarded-for": "2.2.2.2" }), "192.168.0.2");
});
