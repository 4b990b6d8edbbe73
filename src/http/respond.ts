import type { ServerResponse } from "node:http";
import { RegistryError } from "../oci/errors.ts";

// Writing registry answers: the API version header on everything, and errors in the one JSON
// shape clients parse ({"errors":[...]}), so dockerd sees a registry error and falls back.

export const API_VERSION = { "docker-distribution-api-version": "registry/2.0" } as const;

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

export function sendError(res: ServerResponse, err: unknown): RegistryError {
  const e =
    err instanceof RegistryError
      ? err
      : new RegistryError("UNAVAILABLE", "internal error", { status: 500, cause: err });
  if (res.headersSent) {
    // Too late for a status: cut the connection so the client cannot take a short body as whole.
    res.destroy(e);
    return e;
  }
  const body = e.body();
  res.writeHead(e.status, {
    ...API_VERSION,
    "content-type": "application/json; charset=utf-8",
    "content-length": Buffer.byteLength(body),
    ...e.headers,
  });
  // Node itself drops the body of an answer to HEAD.
  res.end(body);
  return e;
}
