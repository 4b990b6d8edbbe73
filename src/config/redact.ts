// Secrets never leave the configuration code in clear: not in a refusal message, a log line or
// `config check`. Pure; used wherever a configured value is shown.

/** Keys whose values are secrets, wherever they sit in the tree. */
const SECRET_KEY = /password|secret|^(token|authorization)$/i;
/** scheme://user:password@ — the userinfo of any URL inside a string. */
const USERINFO = /([a-z][a-z0-9+.-]*:\/\/)[^/@\s"']*@/gi;

export const HIDDEN = "(hidden)";

/** A string with the userinfo of every URL in it replaced. */
export function redactText(text: string): string {
  return text.replace(USERINFO, "$1(hidden)@");
}

/**
 * A copy of `value` with secret fields replaced by `mask` (empty ones stay empty, so "not set"
 * still shows) and URL userinfo removed, at any depth.
 */
export function redact(value: unknown, key = "", mask = HIDDEN): unknown {
  if (SECRET_KEY.test(key) && value !== undefined && value !== null && value !== "") return mask;
  if (typeof value === "string") return redactText(value);
  if (Array.isArray(value)) return value.map((v) => redact(v, "", mask));
  if (typeof value === "object" && value !== null)
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, redact(v, k, mask)]));
  return value;
}

/** Whether the last part of a key path names a secret (upstreams.0.password, admin.token). */
export function isSecretPath(path: readonly string[]): boolean {
  return path.some((p) => SECRET_KEY.test(p));
}
