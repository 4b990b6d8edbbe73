import { createHash } from "node:crypto";
import type { IncomingMessage } from "node:http";
import { RegistryError } from "../oci/errors.ts";
import type { Events, Flights } from "../coordination/coordinator.ts";
import type { Htpasswd } from "./htpasswd.ts";
import { FailedLogins } from "./login-limit.ts";
import type { TokenIssuer } from "./tokens.ts";
import { scopeFor, type Action, type PushRights } from "./push-rights.ts";

// Who the client is, when client authentication is on. Clients follow the standard challenge:
// a 401 with `WWW-Authenticate: Bearer realm=<our /auth/token>`, Basic credentials to the realm,
// a token back, then `Authorization: Bearer <token>`. Basic on /v2/ itself is accepted too
// (some clients send it up front).
//
// Password checks are asynchronous (bcrypt runs on worker threads) and limited per client
// address: past `maxFailedLogins` failures within `failedLoginWindowMs`, a client gets 429 with
// Retry-After instead of another check. Tokens are cheap to verify and are never limited, so a
// blocked address's users who already hold a token keep pulling.

export const SERVICE = "regmirror";

export interface LoginLimits {
  maxFailedLogins: number;
  failedLoginWindowMs: number;
}

/** A failed login, told to every worker: the limit counts across them. */
export interface FailedLogin {
  client: string;
  /** The process that saw it (it has counted it already). */
  pid: number;
}

export class Gate {
  private readonly failures: FailedLogins;

  constructor(
    private readonly users: Htpasswd,
    private readonly tokens: TokenIssuer,
    /** Checks in flight, by client and credentials: parallel requests of one client share one. */
    private readonly checks: Flights<boolean>,
    limits: LoginLimits = { maxFailedLogins: 10, failedLoginWindowMs: 60_000 },
    private readonly shared?: Events<FailedLogin>,
  ) {
    this.failures = new FailedLogins(limits.maxFailedLogins, limits.failedLoginWindowMs);
    shared?.subscribe((f) => f.pid !== process.pid && this.failures.failedElsewhere(f.client));
  }

  /**
   * The user behind a request for `action` on `name` (the registry's base when undefined), once
   * they may do it: 401 with the challenge, 403 for a user who may not push, or 429.
   */
  async authorize(
    req: IncomingMessage,
    name: string | undefined,
    action: Action,
    client: string,
    rights?: PushRights,
  ): Promise<string> {
    const user = await this.authenticate(
      req,
      name === undefined ? undefined : scopeFor(name, action),
      client,
    );
    if (action !== "pull" && name !== undefined) rights?.checkUser(user, action, name);
    return user;
  }

  /** The user behind a request from `client`, or a RegistryError: 401 with the challenge, or 429. */
  async authenticate(req: IncomingMessage, scope: string | undefined, client: string): Promise<string> {
    const header = req.headers.authorization ?? "";
    const bearer = /^Bearer\s+(\S+)$/i.exec(header);
    if (bearer) {
      const sub = this.tokens.verify(bearer[1]!);
      if (sub !== undefined) return sub;
    }
    const basic = parseBasic(header);
    if (basic && (await this.checkPassword(basic, client))) return basic.username;
    const params = [`realm="${realm(req)}"`, `service="${SERVICE}"`];
    // Only a name that passed the spec's grammar may be given: it goes into a header verbatim.
    if (scope && /^[A-Za-z0-9._/:-]+$/.test(scope)) params.push(`scope="${scope}"`);
    throw new RegistryError("UNAUTHORIZED", "authentication required", {
      headers: { "www-authenticate": `Bearer ${params.join(",")}` },
    });
  }

  /** GET /auth/token: Basic credentials in, a token out. */
  async issue(
    req: IncomingMessage,
    client: string,
  ): Promise<{ token: string; access_token: string; expires_in: number; issued_at: string }> {
    const basic = parseBasic(req.headers.authorization ?? "");
    if (!basic || !(await this.checkPassword(basic, client))) {
      throw new RegistryError("UNAUTHORIZED", "incorrect username or password", {
        headers: { "www-authenticate": `Basic realm="${SERVICE}"` },
      });
    }
    const { token, expiresIn } = this.tokens.issue(basic.username);
    return { token, access_token: token, expires_in: expiresIn, issued_at: new Date().toISOString() };
  }

  private checkPassword(basic: { username: string; password: string }, client: string): Promise<boolean> {
    // Blocked first, remembered second: a blocked guesser must not learn that a guess is a
    // password someone used a moment ago.
    const blocked = this.failures.retryAfter(client);
    if (blocked !== undefined) return Promise.reject(tooManyFailures(blocked));
    if (this.users.remembered(basic.username, basic.password)) return Promise.resolve(true);
    const key = createHash("sha256").update(`${client}\0${basic.username}\0${basic.password}`).digest("hex");
    // Joining a check in flight takes no slot of the limit: only the one that runs counts.
    return this.checks.run(key, async () => {
      const wait = this.failures.begin(client);
      if (wait !== undefined) throw tooManyFailures(wait);
      try {
        const ok = await this.users.check(basic.username, basic.password);
        this.failures.end(client, ok);
        // A lost event only lets a guesser a little further: the limit is still per worker.
        if (!ok) this.shared?.publish({ client, pid: process.pid }).catch(() => undefined);
        return ok;
      } catch (err) {
        // Not the client's failure (the check itself could not run): not counted against it.
        this.failures.end(client, true);
        throw err;
      }
    }).promise;
  }
}

function tooManyFailures(retryAfter: number): RegistryError {
  return new RegistryError("TOOMANYREQUESTS", "too many failed logins from this address; try again later", {
    headers: { "retry-after": String(retryAfter) },
  });
}

export function parseBasic(header: string): { username: string; password: string } | undefined {
  const m = /^Basic\s+([A-Za-z0-9+/=]+)$/i.exec(header.trim());
  if (!m) return undefined;
  const text = Buffer.from(m[1]!, "base64").toString("utf8");
  const i = text.indexOf(":");
  return i > 0 ? { username: text.slice(0, i), password: text.slice(i + 1) } : undefined;
}

/**
 * Our token endpoint as the client addressed us. The Host header is the client's to write: one
 * that is not a plain host[:port] (a quote, a control character) would break the challenge
 * header or inject parameters into it, so it is replaced rather than echoed.
 */
export function realm(req: IncomingMessage): string {
  const scheme = (req.socket as { encrypted?: boolean }).encrypted === true ? "https" : "http";
  const host = req.headers.host ?? "";
  const safe = /^[A-Za-z0-9._-]{1,253}(?::\d{1,5})?$|^\[[0-9A-Fa-f:.]{2,45}\](?::\d{1,5})?$/.test(host);
  return `${scheme}://${safe ? host : "localhost"}/auth/token`;
}
