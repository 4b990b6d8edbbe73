import { RegistryError } from "../oci/errors.ts";
import { assertName } from "../oci/reference.ts";

// Which upstream a request is for, pure. In order: containerd's ?ns=<registry host>; a path
// prefix naming a configured registry (/v2/ghcr.io/org/img/..., for podman and CRI-O mirrors
// whose location carries a path); else the default upstream. `ns` only ever selects a configured
// upstream: the mirror is never an open proxy to a host a client names.

export interface Routed {
  upstream: string;
  repo: string;
}

const DOCKER_HUB_ALIASES = new Set(["docker.io", "index.docker.io", "registry-1.docker.io"]);

export function canonicalRegistry(host: string): string {
  const h = host.toLowerCase();
  return DOCKER_HUB_ALIASES.has(h) ? "docker.io" : h;
}

export function routeRepo(
  names: ReadonlySet<string>,
  defaultName: string,
  ns: string | undefined,
  name: string,
): Routed {
  let upstream = defaultName;
  let repo = name;
  if (ns !== undefined) {
    upstream = canonicalRegistry(ns);
    if (!names.has(upstream)) {
      throw new RegistryError("NAME_UNKNOWN", "this mirror does not serve that registry", { detail: { ns } });
    }
  } else {
    const slash = name.indexOf("/");
    const first = slash > 0 ? canonicalRegistry(name.slice(0, slash)) : "";
    if (first && names.has(first)) {
      upstream = first;
      repo = name.slice(slash + 1);
    }
  }
  // Docker Hub's rule, and only Docker Hub's: a one-segment name is an official image.
  if (upstream === "docker.io" && !repo.includes("/")) repo = `library/${repo}`;
  assertName(repo);
  return { upstream, repo };
}
