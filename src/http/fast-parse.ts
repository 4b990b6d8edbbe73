// Reads the plainest HTTP/1.1 requests, and only those: a GET or HEAD of an origin-form path,
// with headers of visible ASCII, no body and nothing to negotiate. It is the front of the fast
// path (fast-conn.ts), which answers cache hits held in memory without Node's HTTP machinery.
//
// It never refuses anything itself: whatever it does not recognise as plain ("other") goes, with
// the connection, to Node's own parser, which answers or rejects it as it always has. So the two
// can never disagree on where a request ends: this one accepts only requests that have no body
// by any reading (no Content-Length, no Transfer-Encoding), and hands over everything else
// before it has consumed a byte of it.

export interface PlainRequest {
  method: "GET" | "HEAD";
  /** Path and query, as sent. */
  url: string;
  /** Lower-case names; Accept, X-Forwarded-For and Forwarded lines joined with ", " as Node does. */
  headers: Record<string, string>;
  /** The client sent Connection: close: answer, then close. */
  close: boolean;
}

export type Parsed =
  | { kind: "request"; request: PlainRequest; length: number }
  /** Not all of the header section is in yet. */
  | { kind: "partial" }
  /** Anything else: Node's parser takes it from here. */
  | { kind: "other" };

/** Node's own limit (--max-http-header-size): a longer header section is Node's to refuse. */
export const MAX_HEADER_BYTES = 16 * 1024;

const REQUEST_LINE = /^(GET|HEAD) (\/[!-~]*) HTTP\/1\.1$/;
// A token name, then a value of visible ASCII, spaces and tabs (no obs-text, no control bytes).
const HEADER_LINE = /^([!#$%&'*+.^_`|~0-9A-Za-z-]+):[ \t]*([ -~\t]*?)[ \t]*$/;
/** Repeated lines of these are one list; Node joins them the same way. */
const JOINED = new Set(["accept", "x-forwarded-for", "forwarded"]);
/** Any of these means a body, an upgrade or an interim answer: Node's business. */
const NOT_PLAIN = new Set(["content-length", "transfer-encoding", "expect", "upgrade", "te", "trailer"]);

/**
 * The first request in `data` (latin1: one char per byte, so lengths are byte counts). Leading
 * empty lines are Node's to skip: they make the request "other".
 */
export function parseRequest(data: string): Parsed {
  const end = data.indexOf("\r\n\r\n");
  if (end === -1) return data.length > MAX_HEADER_BYTES ? { kind: "other" } : { kind: "partial" };
  if (end > MAX_HEADER_BYTES) return { kind: "other" };
  const lines = data.slice(0, end).split("\r\n");
  const line = REQUEST_LINE.exec(lines[0]!);
  if (!line) return { kind: "other" };
  const headers: Record<string, string> = Object.create(null) as Record<string, string>;
  for (let i = 1; i < lines.length; i++) {
    const h = HEADER_LINE.exec(lines[i]!);
    if (!h) return { kind: "other" };
    const name = h[1]!.toLowerCase();
    if (NOT_PLAIN.has(name)) return { kind: "other" };
    const value = h[2]!;
    const seen = headers[name];
    if (seen === undefined) headers[name] = value;
    else if (JOINED.has(name)) headers[name] = `${seen}, ${value}`;
    // A second Host, Authorization, Connection...: which one counts is Node's to decide.
    else return { kind: "other" };
  }
  // HTTP/1.1 requires Host; Node answers 400 without one.
  if (headers.host === undefined) return { kind: "other" };
  let close = false;
  const connection = headers.connection;
  if (connection !== undefined) {
    const tokens = connection
      .toLowerCase()
      .split(",")
      .map((t) => t.trim());
    if (tokens.some((t) => t !== "close" && t !== "keep-alive")) return { kind: "other" };
    close = tokens.includes("close");
  }
  return {
    kind: "request",
    request: { method: line[1] as "GET" | "HEAD", url: line[2]!, headers, close },
    length: end + 4,
  };
}
