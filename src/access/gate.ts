import { createHash } from "node:crypto";
import type { IncomingMessage } from "node:http";
import { RegistryError } from "../oci/errors.ts";
import type { Events, Flights } from "../coordination/coordinator.ts";
import type { Htpasswd } from "./htpasswd.ts";
import { FailedLogins } from "./login-limit.ts";
import { ANONYMOUS, type TokenIssuer } from "./tokens.ts";
import { parseBasic, type Credentials, type TokenRequest } from "./token-request.ts";
import { scopeFor, type Action, type PushRights } from "./push-rights.ts";

// Who the client is and what it may do, when client authentication is on (auth.htpasswd).
// Clients follow the standard challenge: a 401 with `WWW-Authenticate: Bearer realm=<our
// /auth/token>,service=...,scope=...`, their credentials to the realm, a token back, then
// `Authorization: Bearer <token>`. Basic on /v2/ itself is accepted too (some clients send it up
// front). A token says only who holds it ({sub, exp}): what it may do is decided on each request,
// so a user dropped from hosted.pushers cannot push with a token issued before. With
// auth.anonymousPull, tokens for ANONYMOUS are issued to anyone, and are good for pulls only.
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

export interface GateOptions {
  limits?: LoginLimits;
  /** Failed logins told to every worker. */
  shared?: Events<FailedLogin>;
  /** auth.anonymousPull: pulls need no login; pushes and deletes still do. */
  anonymousPull?: boolean;
}

/** What /auth/token answers (distribution's token spec; OAuth2 clients read access_token). */
export interface TokenAnswer {
  token: string;
  access_token: string;
  expires_in: number;
  issued_at: string;
}

export class Gate {
  private readonly failures: FailedLogins;
  private readonly anonymousPull: boolean;
  private readonly shared: Events<FailedLogin> | undefined;

  constructor(
    private readonly users: Htpasswd,
    private readonly tokens: TokenIssuer,
    /** Checks in flight, by client and credentials: parallel requests of one client share one. */
    private readonly checks: Flights<boolean>,
    opts: GateOptions = {},
  ) {
    const limits = opts.limits ?? { maxFailedLogins: 10, failedLoginWindowMs: 60_000 };
    this.failures = new FailedLogins(limits.maxFailedLogins, limits.failedLoginWindowMs);
    this.anonymousPull = opts.anonymousPull ?? false;
    this.shared = opts.shared;
    this.shared?.subscribe((f) => f.pid !== process.pid && this.failures.failedElsewhere(f.client));
  }

  /**
   * Who may do `action` on `name` (the registry's base or catalog when undefined): the user, or
   * ANONYMOUS for a pull that needs no login. Otherwise a RegistryError: 401 with the challenge
   * (naming the scope the client should ask for), 403 DENIED for a user who may not push or
   * delete, or 429.
   *
   * - A pull needs a user, or with anonymousPull nothing at all, or an anonymous token. The base
   *   (`GET /v2/`) challenges a client that sends nothing even then, as Docker Hub does, so that
   *   clients learn the realm; they then get an anonymous token (issue) and pull with it.
   * - A push or delete needs a user of the htpasswd file who is a pusher (`rights`). An anonymous
   *   token, or a token of someone no longer in the file, gets the challenge: log in.
   *
   * Synchronous unless a password must be checked: a token costs one HMAC, and no promise.
   */
  authorize(
    req: IncomingMessage,
    name: string | undefined,
    action: Action,
    client: string,
    rights?: PushRights,
  ): string | Promise<string> {
    const scope = name === undefined ? undefined : scopeFor(name, action);
    const header = req.headers.authorization?.trim() ?? "";
    const permit = (who: string | undefined): string => {
      if (action === "pull") {
        if (who === undefined || (who === ANONYMOUS && !this.anonymousPull)) throw challenge(req, scope);
        return who;
      }
      if (who === undefined || !this.users.has(who)) throw challenge(req, scope);
      if (name !== undefined) rights?.checkUser(who, action, name);
      return who;
    };
    if (header === "") {
      if (action === "pull" && name !== undefined && this.anonymousPull) return ANONYMOUS;
      throw challenge(req, scope);
    }
    const bearer = /^Bearer\s+(\S+)$/i.exec(header);
    if (bearer) return permit(this.tokens.verify(bearer[1]!));
    const basic = parseBasic(header);
    if (!basic) throw challenge(req, scope);
    return this.checkPassword(basic, client).then((ok) => permit(ok ? basic.username : undefined));
  }

  /**
   * The logged-in user behind a request from `client` (an anonymous token is no login), or a
   * RegistryError: 401 with the challenge, or 429. For what is not a registry request: the
   * status page.
   */
  async authenticate(req: IncomingMessage, scope: string | undefined, client: string): Promise<string> {
    const header = req.headers.authorization ?? "";
    const bearer = /^Bearer\s+(\S+)$/i.exec(header);
    if (bearer) {
      const sub = this.tokens.verify(bearer[1]!);
      if (sub !== undefined && sub !== ANONYMOUS) return sub;
    }
    const basic = parseBasic(header);
    if (basic && (await this.checkPassword(basic, client))) return basic.username;
    throw challenge(req, scope);
  }

  /**
   * /auth/token: a token for the user whose password the request carries. With anonymousPull,
   * an anonymous token instead for a request without credentials, or one that asks for nothing
   * but pulls: its password is not even checked, since pulls need none. (dockerd sends the
   * user's Docker Hub login to a mirror's token endpoint; checking it would fail, count against
   * the client's address, and send dockerd past the mirror.) 401 otherwise, or 429.
   */
  async issue(asked: TokenRequest, client: string): Promise<TokenAnswer> {
    const given = asked.credentials;
    let subject: string;
    if (this.anonymousPull && (given === undefined || asked.pullOnly)) subject = ANONYMOUS;
    else if (given && (await this.checkPassword(given, client))) subject = given.username;
    else {
      throw new RegistryError("UNAUTHORIZED", "incorrect username or password", {
        headers: { "www-authenticate": `Basic realm="${SERVICE}"` },
      });
    }
    const { token, expiresIn } = this.tokens.issue(subject);
    return { token, access_token: token, expires_in: expiresIn, issued_at: new Date().toISOString() };
  }

  private checkPassword(basic: Credentials, client: string): Promise<boolean> {
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

/**
 * 401 with the Bearer challenge; `scope` names what the client should ask the realm for. The body
 * names the access that was needed, as distribution's does (`[{Type, Class, Name, Action}]`).
 * dockerd relies on that detail: an UNAUTHORIZED without one is decoded as a bare error code,
 * which its push does not recognise as final, so a push without a login was retried five times
 * with back-off (50 s) before it failed.
 */
function challenge(req: IncomingMessage, scope: string | undefined): RegistryError {
  const params = [`realm="${realm(req)}"`, `service="${SERVICE}"`];
  // Only a name that passed the spec's grammar may be given: it goes into a header verbatim.
  if (scope && /^[A-Za-z0-9._/:,-]+$/.test(scope)) params.push(`scope="${scope}"`);
  return new RegistryError("UNAUTHORIZED", "authentication required", {
    headers: { "www-authenticate": `Bearer ${params.join(",")}` },
    ...(scope ? { detail: accessOf(scope) } : {}),
  });
}

/** `repository:<name>:<a>,<b>` as distribution's access records, one per action. */
function accessOf(scope: string): Array<{ Type: string; Class: string; Name: string; Action: string }> {
  const first = scope.indexOf(":");
  const last = scope.lastIndexOf(":");
  const type = scope.slice(0, first);
  const name = scope.slice(first + 1, last);
  return scope
    .slice(last + 1)
    .split(",")
    .map((action) => ({ Type: type, Class: "", Name: name, Action: action }));
}

function tooManyFailures(retryAfter: number): RegistryError {
  return new RegistryError("TOOMANYREQUESTS", "too many failed logins from this address; try again later", {
    headers: { "retry-after": String(retryAfter) },
  });
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
