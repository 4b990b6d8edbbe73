import { test } from "node:test";
import assert from "node:assert/strict";
import { routeRepo } from "../../src/mirror/routing.ts";
import { RegistryError } from "../../src/oci/errors.ts";
import { credentialsFromDockerConfig, interpolate } from "../../src/config/credentials.ts";

const names = new Set(["docker.io", "ghcr.io", "registry.local:5000"]);

test("routes by ns, then by path prefix, then to the default", () => {
  assert.deepEqual(routeRepo(names, "docker.io", "ghcr.io", "org/img"), {
    upstream: "ghcr.io",
    repo: "org/img",
  });
  assert.deepEqual(routeRepo(names, "docker.io", "docker.io", "library/alpine"), {
    upstream: "docker.io",
    repo: "library/alpine",
  });
  assert.deepEqual(routeRepo(names, "docker.io", "index.docker.io", "alpine"), {
    upstream: "docker.io",
    repo: "library/alpine",
  });
  assert.deepEqual(routeRepo(names, "docker.io", undefined, "ghcr.io/org/img"), {
    upstream: "ghcr.io",
    repo: "org/img",
  });
  assert.deepEqual(routeRepo(names, "docker.io", undefined, "registry.local:5000/a/b"), {
    upstream: "registry.local:5000",
    repo: "a/b",
  });
  assert.deepEqual(routeRepo(names, "docker.io", undefined, "docker.io/alpine"), {
    upstream: "docker.io",
    repo: "library/alpine",
  });
  assert.deepEqual(routeRepo(names, "docker.io", undefined, "alpine"), {
    upstream: "docker.io",
    repo: "library/alpine",
  });
  assert.deepEqual(routeRepo(names, "docker.io", undefined, "quay.io/x/y"), {
    upstream: "docker.io",
    repo: "quay.io/x/y",
  });
  // Docker Hub's library/ rule is Docker Hub's only.
  assert.deepEqual(routeRepo(names, "ghcr.io", undefined, "single"), { upstream: "ghcr.io", repo: "single" });
});

test("an unconfigured ns is refused, never proxied", () => {
  assert.throws(
    () => routeRepo(names, "docker.io", "evil.example.com", "x/y"),
    (e: RegistryError) => e.code === "NAME_UNKNOWN" && e.status === 404,
  );
});

test("names are still checked after routing", () => {
  assert.throws(
    () => routeRepo(names, "docker.io", undefined, "ghcr.io/../etc"),
    (e: RegistryError) => e.code === "NAME_INVALID",
  );
  assert.throws(
    () => routeRepo(names, "docker.io", "ghcr.io", "Bad"),
    (e: RegistryError) => e.code === "NAME_INVALID",
  );
});

test("credentials: ${VAR} interpolation and docker config.json", () => {
  assert.deepEqual(interpolate("${A}-${B}", { A: "x" }), { value: "x-", missing: ["B"] });
  const auth = Buffer.from("bob:pa:ss").toString("base64");
  const cfg = JSON.stringify({
    auths: { "https://index.docker.io/v1/": { auth }, "ghcr.io": { username: "u", password: "p" } },
  });
  assert.deepEqual(credentialsFromDockerConfig(cfg, "docker.io"), { username: "bob", password: "pa:ss" });
  assert.deepEqual(credentialsFromDockerConfig(cfg, "ghcr.io"), { username: "u", password: "p" });
  assert.equal(credentialsFromDockerConfig(cfg, "quay.io"), undefined);
  assert.throws(() => credentialsFromDockerConfig("{", "x"), /JSON/);
});
