import type { ManifestAnswer } from "../mirror/manifests.ts";
import { API_VERSION as API_VERSION_HEADER } from "./respond.ts";

// The headers of the answers both paths write: Node's (registry.ts, through writeHead) and the
// fast path's (fast-answer.ts, as raw header text). One list per kind of answer, so the two
// cannot drift apart: a client must not be able to tell which path answered (the fast-path
// integration test compares them byte for byte). No I/O, nothing of Node's HTTP.

/** Header lines in the order they go out, names in lower case as written on the wire. */
export type HeaderPairs = readonly (readonly [name: string, value: string])[];

/** respond.ts's, as a pair. */
const API_VERSION = Object.entries(API_VERSION_HEADER)[0]!;

/** The body of the /v2/ answer: an empty JSON object. */
export const BASE_BODY = "{}";

/** GET or HEAD of /v2/: "this is a registry, and you may pull". */
export const BASE_HEADERS: HeaderPairs = [
  API_VERSION,
  ["content-type", "application/json; charset=utf-8"],
  ["content-length", String(Buffer.byteLength(BASE_BODY))],
];

export function manifestHeaders(
  m: Pick<ManifestAnswer, "bytes" | "digest" | "mediaType" | "stale">,
): HeaderPairs {
  const headers: [string, string][] = [
    API_VERSION,
    ["content-type", m.mediaType],
    ["content-length", String(m.bytes.length)],
    ["docker-content-digest", m.digest],
    ["etag", `"${m.digest}"`],
  ];
  if (m.stale) headers.push(["warning", '110 - "Response is Stale"']);
  return headers;
}

/**
 * A blob's 200 or 206. `length` is what the body will hold, unknown only while a fill runs for an
 * upstream that sent none; `contentRange` is set for a 206 alone.
 */
export function blobHeaders(digest: string, length: number | undefined, contentRange?: string): HeaderPairs {
  const headers: [string, string][] = [
    API_VERSION,
    ["content-type", "application/octet-stream"],
    ["docker-content-digest", digest],
    ["etag", `"${digest}"`],
    ["accept-ranges", "bytes"],
    // Content-addressed: the bytes behind this URL can never change.
    ["cache-control", "max-age=31536000, immutable"],
  ];
  if (contentRange !== undefined) headers.push(["content-range", contentRange]);
  if (length !== undefined) headers.push(["content-length", String(length)]);
  return headers;
}

/**
 * For writeHead. Not the pairs themselves: once a header was set with setHeader (x-request-id
 * is), Node takes an array only as one flat list of names and values. An object keeps the order
 * of its (never numeric) keys.
 */
export function headerObject(headers: HeaderPairs): Record<string, string> {
  return Object.fromEntries(headers);
}

/** As raw HTTP/1.1 header lines, each ending in CRLF. */
export function headerText(headers: HeaderPairs): string {
  let text = "";
  for (const [name, value] of headers) text += `${name}: ${value}\r\n`;
  return text;
}
