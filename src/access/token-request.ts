import { RegistryError } from "../oci/errors.ts";

// What a client asks of /auth/token, pure. Clients use two forms (docker/distribution's
// registry/client/auth/session.go, containerd's core/remotes/docker/auth/fetch.go):
//
// - GET, parameters in the query, the password as Basic auth: `?service=&scope=&scope=&account=`,
//   plus `offline_token=true&client_id=docker` from `docker login`;
// - POST, an OAuth2 form: `grant_type=password&username=&password=&scope=&service=&client_id=`,
//   which containerd tries first, and `grant_type=refresh_token&refresh_token=` from clients
//   holding a refresh token.
//
// We issue no refresh tokens, so a refresh_token grant is a 400 (containerd then falls back to
// GET), and `docker login`, which asks for one with offline_token=true, gets none: it keeps the
// password and goes on with GET and Basic.
//
// Scopes are read only to tell whether a request asks for pulls alone. What a token lets its
// holder do is decided on every request by its subject (gate.ts), never by the scopes it was
// asked with, so any scope syntax is taken without complaint.

export interface Credentials {
  username: string;
  password: string;
}

export interface TokenRequest {
  /** Basic auth on a GET; the form's username and password on a POST. */
  credentials?: Credentials;
  /** At least one scope, and every scope is `repository:<name>:pull`. */
  pullOnly: boolean;
}

/**
 * A token request from its Authorization header, its query, and for a POST its body read as an
 * application/x-www-form-urlencoded form (undefined when the body was of another type).
 */
export function tokenRequest(
  authorization: string | undefined,
  query: URLSearchParams,
  post?: { form: URLSearchParams | undefined },
): TokenRequest {
  if (!post) {
    const credentials = parseBasic(authorization ?? "");
    return { ...(credentials ? { credentials } : {}), pullOnly: pullOnly(query.getAll("scope")) };
  }
  const { form } = post;
  if (!form) throw badRequest("the token endpoint takes a POST as an application/x-www-form-urlencoded form");
  const grant = form.get("grant_type");
  if (grant === "refresh_token") {
    throw badRequest("this registry issues no refresh tokens: ask with grant_type=password or with GET");
  }
  if (grant !== "password") throw badRequest("grant_type must be password", { grant_type: grant });
  const username = form.get("username") ?? "";
  const password = form.get("password") ?? "";
  if (!username || username.includes(":") || !password) {
    throw badRequest("grant_type=password needs a username (without a colon) and a password");
  }
  return {
    credentials: { username, password },
    pullOnly: pullOnly([...query.getAll("scope"), ...form.getAll("scope")]),
  };
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

function badRequest(message: string, detail?: unknown): RegistryError {
  return new RegistryError("UNSUPPORTED", message, { status: 400, ...(detail ? { detail } : {}) });
}
