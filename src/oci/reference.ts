import { RegistryError } from "./errors.ts";
import { looksLikeDigest, parseDigest, type Digest } from "./digest.ts";

// Repository names and tags per the distribution spec's grammar. Everything a client sends is
// checked here before it reaches the cache directory or the upstream, so no later layer has to
// worry about `..`, encoded slashes or control characters.

const COMPONENT = /^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*$/;
const TAG = /^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$/;
const MAX_NAME = 255;

export function isValidName(name: string): boolean {
  if (name.length === 0 || name.length > MAX_NAME) return false;
  return name.split("/").every((c) => COMPONENT.test(c));
}

export function isValidTag(tag: string): boolean {
  return TAG.test(tag);
}

export function assertName(name: string): void {
  if (!isValidName(name))
    throw new RegistryError("NAME_INVALID", "invalid repository name", { detail: { name } });
}

/** A registry host as a path prefix: ghcr.io, registry.local:5000 (routing ignores its case). */
const REGISTRY_PREFIX = /^[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?(?::\d{1,5})?$/;

/**
 * A name as it stands in a request path: a repository name, or one behind a registry host
 * (/v2/registry.local:5000/org/img/..., which routing resolves). Checked before anything uses
 * the name, a login challenge included; routing checks the repository part again.
 */
export function assertRequestName(name: string): void {
  if (isValidName(name)) return;
  const slash = name.indexOf("/");
  if (slash > 0 && REGISTRY_PREFIX.test(name.slice(0, slash)) && isValidName(name.slice(slash + 1))) return;
  assertName(name);
}

export type Reference = { kind: "tag"; tag: string } | { kind: "digest"; digest: Digest; text: string };

/** Parses the `<reference>` of a manifest URL: a tag, or a digest. */
export function parseReference(ref: string): Reference {
  if (looksLikeDigest(ref)) return { kind: "digest", digest: requireDigest(ref), text: ref };
  if (!isValidTag(ref)) throw new RegistryError("TAG_INVALID", "invalid tag", { detail: { tag: ref } });
  return { kind: "tag", tag: ref };
}

export function requireDigest(s: string): Digest {
  const d = parseDigest(s);
  if (!d)
    throw new RegistryError("DIGEST_INVALID", "invalid or unsupported digest", { detail: { digest: s } });
  return d;
}
