// The redirect policy with addresses as data: nothing here opens a connection.
import { test } from "node:test";
import assert from "node:assert/strict";
import type { LookupAddress } from "node:dns";
import {
  RedirectRefusedError,
  checkedLookup,
  classifyAddress,
  literalRefusal,
  privateTargetsAllowed,
  redirectRefusal,
  type Resolve,
} from "../../src/upstream/redirect-policy.ts";

const CASES: Array<[string, ReturnType<typeof classifyAddress>]> = [
  ["8.8.8.8", "public"],
  ["151.101.1.69", "public"],
  ["2606:4700::1111", "public"],
  ["[2a00:1450::1]", "public"],
  ["127.0.0.1", "loopback"],
  ["127.0.0.2", "loopback"],
  ["::1", "loopback"],
  ["[::1]", "loopback"],
  ["::ffff:127.0.0.1", "loopback"],
  ["::ffff:7f00:1", "loopback"],
  ["169.254.169.254", "link-local"],
  ["fe80::1", "link-local"],
  ["fe80::1%eth0", "link-local"],
  ["::ffff:169.254.169.254", "link-local"],
  ["fd00:ec2::254", "private"],
  ["10.0.0.1", "private"],
  ["10.255.255.255", "private"],
  ["172.16.0.1", "private"],
  ["172.31.255.254", "private"],
  ["172.32.0.1", "public"],
  ["172.15.255.255", "public"],
  ["192.168.1.1", "private"],
  ["100.64.0.1", "private"],
  ["fc00::1", "private"],
  ["fdff::1", "private"],
  ["0.0.0.0", "unspecified"],
  ["0.1.2.3", "unspecified"],
  ["::", "unspecified"],
  ["224.0.0.1", "reserved"],
  ["255.255.255.255", "reserved"],
  ["192.0.2.1", "reserved"],
  ["2001:db8::1", "reserved"],
  ["ff02::1", "reserved"],
  ["::127.0.0.1", "reserved"],
  ["not-an-ip", "reserved"],
  // NAT64 and 6to4 go where their IPv4 address goes.
  ["64:ff9b::a9fe:a9fe", "link-local"],
  ["64:ff9b::10.0.0.1", "private"],
  ["64:ff9b::808:808", "public"],
  ["2002:a00:1::1", "private"],
  ["2002:808:808::1", "public"],
];

test("classifies addresses: loopback, link-local, private, unspecified, reserved, public", () => {
  for (const [address, cls] of CASES) assert.equal(classifyAddress(address), cls, address);
});

test("a public upstream's redirect to a non-public address is refused", () => {
  for (const [address, cls] of CASES) {
    const why = redirectRefusal(address, false);
    if (cls === "public") assert.equal(why, undefined, address);
    else assert.ok(why !== undefined, `${address} must be refused`);
  }
  assert.match(redirectRefusal("169.254.169.254", false) ?? "", /link-local/);
});

test("private targets are allowed when allowed, but never the unspecified address", () => {
  for (const address of ["127.0.0.1", "::1", "10.1.2.3", "169.254.169.254", "fd00::1", "8.8.8.8"])
    assert.equal(redirectRefusal(address, true), undefined, address);
  // 0.0.0.0 is no storage host, and Linux connects it to the machine itself.
  for (const address of ["0.0.0.0", "::"]) assert.ok(redirectRefusal(address, true) !== undefined, address);
});

/** Runs a checked lookup with a fake resolver that answers `addresses` for every name. */
function lookupWith(addresses: string[], allowPrivate: boolean, all: boolean) {
  const resolve: Resolve = () =>
    Promise.resolve(
      addresses.map((address): LookupAddress => ({ address, family: address.includes(":") ? 6 : 4 })),
    );
  const lookup = checkedLookup(() => Promise.resolve(allowPrivate), resolve);
  return new Promise<{ err: Error | null; result: unknown }>((resolveResult) =>
    lookup("cdn.example", { all }, (err: Error | null, address: unknown) =>
      resolveResult({ err, result: address }),
    ),
  );
}

test("a redirect host name is checked by every address it resolves to", async () => {
  const ok = await lookupWith(["8.8.8.8", "2606:4700::1111"], false, true);
  assert.equal(ok.err, null);
  assert.deepEqual(
    (ok.result as LookupAddress[]).map((a) => a.address),
    ["8.8.8.8", "2606:4700::1111"],
  );
  const one = await lookupWith(["8.8.8.8"], false, false);
  assert.equal(one.result, "8.8.8.8");

  // Rebinding: the name answers a public and a metadata address; nothing gets through.
  for (const all of [true, false]) {
    const bad = await lookupWith(["8.8.8.8", "169.254.169.254"], false, all);
    assert.ok(bad.err instanceof RedirectRefusedError);
    assert.match(bad.err.message, /cdn\.example: .*169\.254\.169\.254/);
  }
  assert.ok((await lookupWith(["10.0.0.7"], false, true)).err instanceof RedirectRefusedError);
  assert.equal((await lookupWith(["10.0.0.7"], true, true)).err, null, "privateRedirects allows it");
  assert.ok((await lookupWith(["0.0.0.0"], true, true)).err instanceof RedirectRefusedError);
});

test("private targets are allowed for an upstream on a non-public address, or when configured", async () => {
  const resolver =
    (addresses: string[]): Resolve =>
    () =>
      Promise.resolve(addresses.map((address) => ({ address, family: address.includes(":") ? 6 : 4 })));
  const never: Resolve = () => Promise.reject(new Error("must not resolve"));
  assert.equal(await privateTargetsAllowed("http://127.0.0.1:5000", false, never)(), true);
  assert.equal(await privateTargetsAllowed("http://[fd00::5]:5000", false, never)(), true);
  assert.equal(await privateTargetsAllowed("https://8.8.8.8", false, never)(), false);
  assert.equal(await privateTargetsAllowed("https://8.8.8.8", true, never)(), true);
  assert.equal(await privateTargetsAllowed("https://registry.corp", false, resolver(["10.1.2.3"]))(), true);
  assert.equal(
    await privateTargetsAllowed("https://registry-1.docker.io", false, resolver(["8.8.8.8"]))(),
    false,
  );
  // A failed resolution allows nothing, and is asked again next time.
  let calls = 0;
  const flaky: Resolve = () =>
    ++calls === 1 ? Promise.reject(new Error("EAI_AGAIN")) : resolver(["10.0.0.1"])("", { all: true });
  const allowed = privateTargetsAllowed("https://registry.corp", false, flaky);
  assert.equal(await allowed(), false);
  assert.equal(await allowed(), true);
  assert.equal(await allowed(), true);
  assert.equal(calls, 2, "an answer is remembered");
});

test("literal redirect hosts are checked at once; names wait for their resolution", () => {
  assert.ok(literalRefusal("169.254.169.254", false) !== undefined);
  assert.ok(literalRefusal("[fe80::1]", false) !== undefined);
  assert.equal(literalRefusal("[2606:4700::1111]", false), undefined);
  assert.equal(literalRefusal("metadata.google.internal", false), undefined, "checked at connect time");
});
