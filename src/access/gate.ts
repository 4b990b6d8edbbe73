import type { IncomingMessage } from "node:http";
import { RegistryError } from "../oci/errors.ts";
import type { Htpasswd } from "./htpasswd.ts";
import type { TokenIssuer } from "./tokens.ts";

// Who the client is, when client authentication is on. Clients follow the standard challenge:
// a 401 with `WWW-Authenticate: Bearer realm=<our /auth/token>`, Basic credentials to the realm,
// a token back, then `Authorization: Bearer <token>`. Basic on /v2/ itself is accepted too
// (some clients send it up front).

export const SERVICE = "regmirror";

export class Gate {
  constructor(
    private readonly users: Htpasswd,
    private readonly tokens: TokenIssuer,
  ) {}

  /** The user behind a request, or a RegistryError 401 carrying the challenge. */
  authenticate(req: IncomingMessage, scope: string | undefined): string {
    const header = req.headers.authorization ?? "";
    const bearer = /^Bearer\s+(\S+)$/i.exec(header);
    if (bearer) {
      const sub = this.tokens.verify(bearer[1]!);
      if (sub !== undefined) return sub;
    }
    const basic = parseBasic(header);
    if (basic && this.users.check(basic.username, basic.password)) return basic.username;
    const params = [`realm="${realm(req)}"`, `service="${SERVICE}"`];
    // Only a name that passed the spec's grammar may be given: it goes into a header verbatim.
    if (scope && /^[a-z0-9._/:-]+$/.test(scope)) params.push(`scope="${scope}"`);
    throw new RegistryError("UNAUTHORIZED", "authentication required", {
      headers: { "www-authenticate": `Bearer ${params.join(",")}` },
    });
  }

  /** GET /auth/token: Basic credentials in, a token out. */
  issue(req: IncomingMessage): {
    token: string;
    access_token: string;
    expires_in: number;
    issued_at: string;
  } {
    const basic = parseBasic(req.headers.authorization ?? "");
    if (!basic || !this.users.check(basic.username, basic.password)) {
      throw new RegistryError("UNAUTHORIZED", "incorrect username or password", {
        headers: { "www-authenticate": `Basic realm="${SERVICE}"` },
      });
    }
    const { token, expiresIn } = this.tokens.issue(basic.username);
    return { token, access_token: token, expires_in: expiresIn, issued_at: new Date().toISOString() };
  }
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
