import type { ServerResponse } from "node:http";
import type { Logger } from "winston";
import { RegistryError } from "../oci/errors.ts";
import { StorageUnavailableError } from "../storage/driver.ts";
import { MemberGoneError } from "../coordination/protocol.ts";

// Writing registry answers: the API version header on everything, and errors in the one JSON
// shape clients parse ({"errors":[...]}), so dockerd sees a registry error and falls back.

export const API_VERSION = { "docker-distribution-api-version": "registry/2.0" } as const;

/**
 * On every response (set once, where createHandler takes each request): browsers must not guess
 * an HTML type for a blob or an error body.
 */
export const NOSNIFF = { "x-content-type-options": "nosniff" } as const;

export function sendJson(
  res: ServerResponse,
  status: number,
  body: unknown,
  headers: Record<string, string> = {},
): void {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    ...API_VERSION,
    "content-type": "application/json; charset=utf-8",
    "content-length": Buffer.byteLength(text),
    ...headers,
  });
  res.end(text);
}

/**
 * Anything thrown, as the registry error the client gets: storage that cannot be reached is a
 * 503 (the client retries; /readyz says why), and anything else not a RegistryError is our bug.
 */
export function toRegistryError(err: unknown): RegistryError {
  if (err instanceof RegistryError) return err;
  if (err instanceof StorageUnavailableError)
    return new RegistryError("UNAVAILABLE", "the cache's storage is unavailable", { cause: err });
  // The worker or replica fetching this for everyone died: the next try fetches afresh.
  if (err instanceof MemberGoneError)
    return new RegistryError("UNAVAILABLE", "the transfer this waited for was lost; try again", {
      cause: err,
    });
  return new RegistryError("UNKNOWN", "internal error", { cause: err });
}

/**
 * Writes `err` as the registry error body, and never throws: it runs in every catch, where a
 * throw would become an unhandled rejection and end the process. A header value that Node
 * refuses (a control character from client input) degrades to a plain 500; if even that
 * cannot be written, the connection is cut.
 */
export function sendError(res: ServerResponse, err: unknown): RegistryError {
  const e = toRegistryError(err);
  if (res.headersSent) {
    // Too late for a status: cut the connection so the client cannot take a short body as whole.
    res.destroy(e);
    return e;
  }
  try {
    write(res, e);
    return e;
  } catch (bad) {
    const fallback = new RegistryError("UNKNOWN", "internal error", { cause: bad });
    try {
      for (const name of Object.keys(e.headers)) res.removeHeader(name);
      write(res, fallback);
    } catch {
      res.destroy();
    }
    return fallback;
  }
}

function write(res: ServerResponse, e: RegistryError): void {
  const body = e.body();
  res.writeHead(e.status, {
    ...API_VERSION,
    "content-type": "application/json; charset=utf-8",
    "content-length": Buffer.byteLength(body),
    ...e.headers,
  });
  // Node itself drops the body of an answer to HEAD.
  res.end(body);
}

/**
 * The log line for a failed request: UNKNOWN is a bug of ours and is logged with its stack;
 * other 5xx (an upstream down, a full disk) are expected in operation and get a warning.
 */
export function logFailure(log: Logger, e: RegistryError, fields: Record<string, unknown>): void {
  if (e.code === "UNKNOWN") {
    const cause = e.cause instanceof Error ? e.cause : e;
    log.error("request failed: internal error", { ...fields, error: cause.message, stack: cause.stack });
  } else if (e.status >= 500) {
    // The cause (which bucket, which endpoint) is for the log, not for the client.
    const why = e.cause instanceof Error ? `${e.message}: ${e.cause.message}` : e.message;
    log.warn("request failed", { ...fields, code: e.code, error: why });
  }
}
