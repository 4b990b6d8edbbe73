import { createHmac, randomBytes, timingSafeEqual } from "node:crypto";

// The mirror's own bearer tokens, for clients that log in (docker login, containerd, podman):
// an HMAC-signed {sub, exp}. The key is made at start, so a restart simply sends clients
// through the challenge once more — the usual token flow, which every client handles. Workers
// are handed the primary's key (cluster/primary.ts), and replicas share one kept in Redis
// (cluster/replica.ts): a token one process issued is good in all.

/**
 * The subject of an anonymous token (auth.anonymousPull): good for pulls only. No user can have
 * this name: htpasswd names and Basic user names both end at their first colon.
 */
export const ANONYMOUS = ":anonymous";

export class TokenIssuer {
  constructor(
    private readonly ttlMs: number,
    private readonly key: Buffer = randomBytes(32),
  ) {}

  issue(subject: string, now = Date.now()): { token: string; expiresIn: number } {
    const payload = Buffer.from(JSON.stringify({ sub: subject, exp: now + this.ttlMs })).toString(
      "base64url",
    );
    return { token: `${payload}.${this.sign(payload)}`, expiresIn: Math.floor(this.ttlMs / 1000) };
  }

  /** The subject of a valid, unexpired token; undefined otherwise. */
  verify(token: string, now = Date.now()): string | undefined {
    const dot = token.indexOf(".");
    if (dot <= 0) return undefined;
    const payload = token.slice(0, dot);
    const sig = Buffer.from(token.slice(dot + 1));
    const want = Buffer.from(this.sign(payload));
    if (sig.length !== want.length || !timingSafeEqual(sig, want)) return undefined;
    try {
      const claims = JSON.parse(Buffer.from(payload, "base64url").toString("utf8")) as {
        sub?: unknown;
        exp?: unknown;
      };
      if (typeof claims.sub !== "string" || typeof claims.exp !== "number" || claims.exp < now)
        return undefined;
      return claims.sub;
    } catch {
      return undefined;
    }
  }

  private sign(payload: string): string {
    return createHmac("sha256", this.key).update(payload).digest("base64url");
  }
}
