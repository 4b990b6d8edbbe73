import { createHash, type Hash } from "node:crypto";

// Digests per the OCI image spec: `algorithm:encoded`. Only sha256 is accepted — it is what
// every registry serves, and refusing the rest keeps paths built from digests fixed-shape.

export interface Digest {
  readonly algorithm: "sha256";
  /** 64 lowercase hex characters: safe to use as a file name. */
  readonly hex: string;
}

const SHA256 = /^sha256:([a-f0-9]{64})$/;

/** Parses a digest string; undefined when it is not a well-formed sha256 digest. */
export function parseDigest(s: string): Digest | undefined {
  const m = SHA256.exec(s);
  return m ? { algorithm: "sha256", hex: m[1]! } : undefined;
}

export function formatDigest(d: Digest): string {
  return `${d.algorithm}:${d.hex}`;
}

/** Looks like a digest (has an algorithm prefix) even if malformed: such a reference is never a tag. */
export function looksLikeDigest(s: string): boolean {
  return s.includes(":");
}

export function sha256Hasher(): Hash {
  return createHash("sha256");
}

export function digestOf(bytes: Buffer): string {
  return "sha256:" + createHash("sha256").update(bytes).digest("hex");
}
