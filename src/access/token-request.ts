// What a client asks of /auth/token, pure: GET, parameters in the query, the password as Basic
// auth (docker/distribution's registry/client/auth/session.go): `?service=&scope=&scope=&account=`,
// plus `offline_token=true&client_id=docker` from `docker login`. We issue no refresh tokens, so
// `docker login`, which asks for one with offline_token=true, gets none: it keeps the password
// and goes on with GET and Basic.
//
// Scopes are read only to tell whether a request asks for pulls alone. What a token lets its
// holder do is decided on every request by its subject (gate.ts), never by the scopes it was
// asked with, so any scope syntax is taken without complaint.

export interface Credentials {
  username: string;
  password: string;
}

export interface TokenRequest {
  /** Basic auth. */
  credentials?: Credentials;
  /** At least one scope, and every scope is `repository:<name>:pull`. */
  pullOnly: boolean;
}

/** A token request from its Authorization header and its query. */
export function tokenRequest(authorization: string | undefined, query: URLSearchParams): TokenRequest {
  const credentials = parseBasic(authorization ?? "");
  return { ...(credentials ? { credentials } : {}), pullOnly: pullOnly(query.getAll("scope")) };
}

/** `scope` may repeat, and one value may hold several scopes separated by spaces (OAuth2). */
function pullOnly(values: string[]): boolean {
  const scopes = values.flatMap((v) => v.split(" ")).filter((s) => s !== "");
  return scopes.length > 0 && scopes.every((s) => /^repository:[^:\s]+:pull$/.test(s));
}

export function parseBasic(header: string): Credentials | undefined {
  const m = /^Basic\s+([A-Za-z0-9+/=]+)$/i.exec(header.trim());
  if (!m) return undefined;
  const text = Buffer.from(m[1]!, "base64").toString("utf8");
  const i = text.indexOf(":");
  return i > 0 ? { username: text.slice(0, i), password: text.slice(i + 1) } : undefined;
}
