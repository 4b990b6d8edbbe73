import { RegistryError } from "../oci/errors.ts";

// Turns a /v2/ request path into what it asks for, pure. The path is percent-decoded once,
// then every part is checked by the spec's grammar downstream, so an encoded "..%2f" becomes
// "../" and is refused as an invalid name rather than slipping through undecoded.

export type Route =
  | { kind: "base" }
  | { kind: "manifest"; name: string; reference: string }
  | { kind: "blob"; name: string; digest: string }
  /** `session` is the upload's id after uploads/, absent on the POST that starts one. */
  | { kind: "upload"; name: string; session?: string }
  | { kind: "tags"; name: string }
  | { kind: "catalog" }
  | { kind: "referrers"; name: string; digest: string };

const RULES: Array<[RegExp, (m: RegExpExecArray) => Route]> = [
  [/^\/v2\/?$/, () => ({ kind: "base" })],
  [/^\/v2\/_catalog$/, () => ({ kind: "catalog" })],
  [
    /^\/v2\/(.+)\/blobs\/uploads(?:\/([^/]*))?$/,
    (m) => ({ kind: "upload", name: m[1]!, ...(m[2] ? { session: m[2] } : {}) }),
  ],
  [/^\/v2\/(.+)\/manifests\/([^/]+)$/, (m) => ({ kind: "manifest", name: m[1]!, reference: m[2]! })],
  [/^\/v2\/(.+)\/blobs\/([^/]+)$/, (m) => ({ kind: "blob", name: m[1]!, digest: m[2]! })],
  [/^\/v2\/(.+)\/tags\/list$/, (m) => ({ kind: "tags", name: m[1]! })],
  [/^\/v2\/(.+)\/referrers\/([^/]+)$/, (m) => ({ kind: "referrers", name: m[1]!, digest: m[2]! })],
];

/** `pathname` is the raw path without the query string. */
export function route(pathname: string): Route | undefined {
  let path: string;
  try {
    path = decodeURIComponent(pathname);
  } catch {
    throw new RegistryError("NAME_INVALID", "malformed percent-encoding in the path");
  }
  if (path.includes("\0")) throw new RegistryError("NAME_INVALID", "invalid character in the path");
  for (const [re, make] of RULES) {
    const m = re.exec(path);
    if (m) return make(m);
  }
  return undefined;
}
