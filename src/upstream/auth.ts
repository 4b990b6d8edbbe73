import { LRUCache } from "lru-cache";
import { atMost } from "../lru-bound.ts";
import { request, type Dispatcher } from "undici";
import { RegistryError } from "../oci/errors.ts";
import { isTrustedRealm, type Challenge } from "./challenge.ts";
import { RedirectRefusedError } from "./redirect-policy.ts";

// Bearer-token negotiation with an upstream's token service, kept apart from the request path.
// Tokens are cached per realm + service + scope until shortly before they expire; a 401 with a
// token drops it (see client.ts) and negotiates once more.

export interface Credentials {
  username: string;
  password: string;
}

/** Docker's token spec: expires_in defaults to 60 s. */
const DEFAULT_EXPIRES_S = 60;
/** Renew this long before expiry, so a token never dies in flight. */
const EARLY_MS = 10_000;

/**
 * What identifies a token: the realm that issued it, the service it is for and its scope. The
 * cache and the client's merging of concurrent negotiations share this key, so the two can never
 * disagree about which requests want the same token.
 */
export function tokenKey(c: Challenge, scope: string): string {
  return `${c.params.realm ?? ""}|${c.params.service ?? ""}|${scope}`;
}

/** A token and how long to keep it: plain data, so it crosses to other workers in a flight. */
export interface Token {
  token: string;
  ttlMs: number;
}

export class TokenCache {
  private readonly tokens = new LRUCache<string, string>({ ...atMost(10_000), ttlAutopurge: false });

  constructor(
    private readonly upstreamUrl: string,
    private readonly credentials: Credentials | undefined,
    private readonly dispatcher: Dispatcher,
    private readonly timeoutMs: number,
  ) {}

  cached(c: Challenge, scope: string): string | undefined {
    return this.tokens.get(tokenKey(c, scope));
  }

  /** Keeps a token while it is good: one fetched here, or by another worker (the token flight). */
  remember(c: Challenge, scope: string, token: Token): void {
    this.tokens.set(tokenKey(c, scope), token.token, { ttl: token.ttlMs });
  }

  drop(c: Challenge, scope: string): void {
    this.tokens.delete(tokenKey(c, scope));
  }

  /** Fetches a token for `scope` from the challenge's realm (coalescing is the caller's). */
  async fetch(c: Challenge, scope: string): Promise<Token> {
    const realm = c.params.realm;
    if (!realm || !isTrustedRealm(realm, this.upstreamUrl)) {
      throw new RegistryError("UPSTREAM_ERROR", "upstream named an untrusted token realm", {
        detail: { realm: realm ?? null },
      });
    }
    const url = new URL(realm);
    if (c.params.service) url.searchParams.set("service", c.params.service);
    if (scope) url.searchParams.set("scope", scope);
    const headers: Record<string, string> = {};
    if (this.credentials) headers.authorization = basic(this.credentials);
    let res: Dispatcher.ResponseData;
    try {
      res = await request(url, {
        headers,
        dispatcher: this.dispatcher,
        headersTimeout: this.timeoutMs,
        bodyTimeout: this.timeoutMs,
      });
    } catch (err) {
      // A redirect target's realm that resolves where redirects may not go (redirect-policy.ts).
      if (err instanceof RedirectRefusedError)
        throw new RegistryError("UPSTREAM_ERROR", "token realm on a refused address", { cause: err });
      throw new RegistryError("UNAVAILABLE", "upstream token service unreachable", { cause: err });
    }
    const text = await res.body.text();
    if (res.statusCode === 401 || res.statusCode === 403) {
      throw new RegistryError("UNAUTHORIZED", "upstream refused the configured credentials", {
        status: 502,
        detail: { status: res.statusCode },
      });
    }
    if (res.statusCode !== 200) {
      throw new RegistryError("UPSTREAM_ERROR", "upstream token service failed", {
        detail: { status: res.statusCode },
      });
    }
    let doc: { token?: unknown; access_token?: unknown; expires_in?: unknown };
    try {
      doc = JSON.parse(text) as typeof doc;
    } catch {
      throw new RegistryError("UPSTREAM_ERROR", "upstream token service answered non-JSON");
    }
    const token =
      typeof doc.token === "string"
        ? doc.token
        : typeof doc.access_token === "string"
          ? doc.access_token
          : "";
    if (!token) throw new RegistryError("UPSTREAM_ERROR", "upstream token service answered no token");
    const expiresS =
      typeof doc.expires_in === "number" && doc.expires_in > 0 ? doc.expires_in : DEFAULT_EXPIRES_S;
    const fetched = { token, ttlMs: Math.max(expiresS * 1000 - EARLY_MS, 1000) };
    this.remember(c, scope, fetched);
    return fetched;
  }
}

export function basic(c: Credentials): string {
  return "Basic " + Buffer.from(`${c.username}:${c.password}`).toString("base64");
}
