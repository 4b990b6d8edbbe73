// The reference pages in docs/ are checked against the code, so they cannot drift from it.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import yaml from "js-yaml";
import { envName, keyPaths } from "../../src/config/load.ts";
import { Metrics } from "../../src/metrics/metrics.ts";

test("docs/configuration.md lists every key, its variable and its default", () => {
  const rows = [
    ...readFileSync("docs/configuration.md", "utf8").matchAll(/^\| `([^`]+)` \| `([^`]+)` \| `([^`]*)` \|/gm),
  ];
  const file = yaml.load(readFileSync("mirror.yml", "utf8")) as Record<string, unknown>;
  const defaultOf = (path: string): string => {
    const v = path.split(".").reduce<unknown>((o, k) => (o as Record<string, unknown>)[k], file);
    return typeof v === "string" ? (v === "" ? '""' : v) : JSON.stringify(v);
  };
  assert.deepEqual(rows.map((r) => r[1]).sort(), keyPaths().sort(), "one row per key, and no other");
  for (const [, key, env, def] of rows) {
    assert.equal(env, envName(key!), key);
    assert.equal(def, defaultOf(key!), `${key}: the default in mirror.yml`);
  }
});

test("docs/metrics.md describes every metric regmirror exports", async () => {
  const doc = readFileSync("docs/metrics.md", "utf8");
  const documented = new Set([...doc.matchAll(/^\| `(regmirror_[a-z_]+)`/gm)].map((m) => m[1]));
  const exported = (await new Metrics({ processMetrics: false }).registry.getMetricsAsJSON()).map(
    (m) => m.name,
  );
  assert.deepEqual([...documented].sort(), [...exported].sort());
});
