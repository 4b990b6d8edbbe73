import { parseDigest } from "../oci/digest.ts";
import { isValidName, isValidTag } from "../oci/reference.ts";
import { UsageError } from "./errors.ts";

// Image references as people type them (`alpine`, `library/alpine:3.20`, `ghcr.io/org/img:tag`,
// `name@sha256:...`), turned into what to ask the mirror for. The name is sent as typed: the
// mirror owns the routing rules (a leading registry host selects that upstream by path prefix,
// Docker Hub's `alpine` means `library/alpine`), so the CLI never second-guesses them.

export interface ImageRef {
  /** As the user typed it, for messages. */
  text: string;
  /** The repository path after /v2/, e.g. `alpine` or `ghcr.io/org/img`. */
  name: string;
  /** A tag, or a digest string. */
  reference: string;
  isDigest: boolean;
}

export interface Platform {
  os: string;
  architecture: string;
  variant?: string;
}

// Docker's rule for "is the first component a registry host": it has a dot or a port, or is localhost.
const HOST = /^(?:localhost|[a-z0-9](?:[a-z0-9.-]*[a-z0-9])?)(?::\d{1,5})?$/;
const looksLikeHost = (c: string): boolean => c.includes(".") || c.includes(":") || c === "localhost";

export function parseImageRef(text: string): ImageRef {
  const bad = (why: string) => new UsageError(`invalid image reference "${text}": ${why}`);
  let rest = text.trim();
  let digest: string | undefined;
  const at = rest.indexOf("@");
  if (at >= 0) {
    digest = rest.slice(at + 1);
    rest = rest.slice(0, at);
    if (!parseDigest(digest)) throw bad("the digest must be sha256: and 64 lowercase hex characters");
  }
  // A tag is after the last colon, unless that colon belongs to a host:port before a slash.
  let tag: string | undefined;
  const colon = rest.lastIndexOf(":");
  if (colon > rest.lastIndexOf("/")) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
    if (!isValidTag(tag)) throw bad(`"${tag}" is not a valid tag`);
  }
  const parts = rest.split("/");
  const host = parts.length > 1 && looksLikeHost(parts[0]!) ? parts[0]! : undefined;
  if (host !== undefined && !HOST.test(host)) throw bad(`"${host}" is not a registry host`);
  const repo = host === undefined ? rest : parts.slice(1).join("/");
  if (!isValidName(repo)) {
    throw bad(
      "a repository name is lowercase letters, digits and separators (. _ __ -), in /-separated parts",
    );
  }
  // With both, the digest decides what is pulled (as docker does); the tag is only a label.
  const reference = digest ?? tag ?? "latest";
  return { text, name: rest, reference, isDigest: digest !== undefined };
}

export function parsePlatform(text: string): Platform {
  const m = /^([a-z0-9]+)\/([a-z0-9_]+)(?:\/([a-z0-9]+))?$/.exec(text.trim().toLowerCase());
  if (!m) throw new UsageError(`invalid platform "${text}": use os/arch[/variant], e.g. linux/amd64`);
  return m[3] === undefined
    ? { os: m[1]!, architecture: m[2]! }
    : { os: m[1]!, architecture: m[2]!, variant: m[3] };
}

/** Whether an index entry's platform is one asked for; a wanted variant must match, an absent one matches any. */
export function platformMatches(have: Platform | undefined, want: Platform): boolean {
  if (have === undefined) return false;
  return (
    have.os === want.os &&
    have.architecture === want.architecture &&
    (want.variant === undefined || have.variant === want.variant)
  );
}

export function formatPlatform(p: Platform | undefined): string {
  if (p === undefined) return "unknown";
  return [p.os, p.architecture, p.variant].filter((x) => x !== undefined).join("/");
}
