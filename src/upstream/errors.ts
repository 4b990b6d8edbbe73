import { RegistryError, type ErrorCode } from "../oci/errors.ts";
import type { UpstreamResponse } from "./client.ts";

// What an unhappy upstream answer becomes for our client. The upstream's own error body is
// kept as detail (capped), so a user sees what Docker Hub said, through the mirror.

const MAX_DETAIL = 4096;

export async function upstreamError(res: UpstreamResponse, notFound: ErrorCode): Promise<RegistryError> {
  const text = await readCapped(res);
  const detail = { upstreamStatus: res.status, upstream: parseErrors(text) };
  if (res.status === 404) return new RegistryError(notFound, "not found upstream", { detail });
  if (res.status === 429) {
    const retry = res.headers["retry-after"];
    return new RegistryError("TOOMANYREQUESTS", "the upstream registry is rate-limiting this mirror", {
      detail,
      headers: typeof retry === "string" ? { "retry-after": retry } : {},
    });
  }
  if (res.status === 503 || res.status === 502 || res.status === 504) {
    return new RegistryError("UNAVAILABLE", "the upstream registry is unavailable", { detail });
  }
  return new RegistryError("UPSTREAM_ERROR", `the upstream registry answered ${res.status}`, { detail });
}

/** Whether a failure means "could not ask" (serve stale) rather than "asked, and it said no". */
export function isUpstreamOutage(err: unknown): boolean {
  return (
    err instanceof RegistryError &&
    (err.code === "UNAVAILABLE" || err.code === "TOOMANYREQUESTS" || err.code === "UPSTREAM_ERROR")
  );
}

async function readCapped(res: UpstreamResponse): Promise<string> {
  let out = "";
  try {
    for await (const chunk of res.body) {
      if (out.length < MAX_DETAIL) out += (chunk as Buffer).toString("utf8");
    }
  } catch {
    // a broken error body is still an error; we have the status
  }
  return out.slice(0, MAX_DETAIL);
}

function parseErrors(text: string): unknown {
  try {
    const doc = JSON.parse(text) as { errors?: unknown };
    return doc.errors ?? text;
  } catch {
    return text || undefined;
  }
}
