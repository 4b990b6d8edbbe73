import { timingSafeEqual } from "node:crypto";
import type { IncomingMessage, ServerResponse } from "node:http";
import type { Followable } from "../mirror/fill.ts";
import { sendStream } from "../storage/send-file.ts";

// GET /_regmirror/fills/<hex>: the blob fills this replica runs, for the other replicas of its
// cluster (mirror/remote-fill.ts), so that their clients get bytes while the fill lands here.
// Only callers with this replica's fill token (handed out through Redis with each fill's
// ticket) are answered; anyone else gets a 404, as for a path that does not exist.

export interface FillServing {
  token: string;
  /** The fill of `hex` this replica runs, if any. */
  running(hex: string): Followable | undefined;
  stallTimeoutMs: number;
}

const PATH = /^\/_regmirror\/fills\/([a-f0-9]{64})$/;

/** Answers the request and returns true when it is one for this route. */
export function serveFill(deps: FillServing, req: IncomingMessage, res: ServerResponse): boolean {
  const m = PATH.exec((req.url ?? "").split("?")[0]!);
  if (!m) return false;
  const fill = authorized(deps.token, req.headers.authorization) ? deps.running(m[1]!) : undefined;
  if (req.method !== "GET" || !fill || fill.state === "failed") {
    res.writeHead(404, { "content-length": 0 }).end();
    return true;
  }
  const range = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? "bytes=0-");
  const start = range ? Number(range[1]) : 0;
  const end = range?.[2] ? Number(range[2]) : undefined;
  const leave = fill.join();
  res.writeHead(206, { "content-type": "application/octet-stream" });
  res.flushHeaders();
  sendStream(fill.stream(start, end), res, deps.stallTimeoutMs, leave);
  return true;
}

function authorized(token: string, header: string | undefined): boolean {
  const given = Buffer.from(header?.startsWith("Bearer ") ? header.slice(7) : "");
  const want = Buffer.from(token);
  return given.length === want.length && timingSafeEqual(given, want);
}
