// The name in a request path is checked before anything uses it (the login challenge too), and
// still lets through the registry-host prefixes that routing resolves.
import { test } from "node:test";
import assert from "node:assert/strict";
import { assertRequestName } from "../../src/oci/reference.ts";

test("request names: repository names, optionally behind a registry host", () => {
  for (const ok of [
    "alpine",
    "library/alpine",
    "ghcr.io/org/img",
    "registry.local:5000/img",
    "GHCR.IO/org/img",
  ])
    assert.doesNotThrow(() => assertRequestName(ok), ok);
  for (const bad of [
    "a\u0001b",
    "\u0100",
    'a"b',
    "a\r\nb",
    "a\u007fb",
    "Alpine",
    "h:1/Up",
    "h:123456/x",
    "a/../b",
    "",
  ])
    assert.throws(() => assertRequestName(bad), { code: "NAME_INVALID" }, JSON.stringify(bad));
});
