import { RegistryError } from "../oci/errors.ts";
import { readBounded, TooLargeError } from "../bounded-read.ts";
import type { UpstreamResponse } from "./client.ts";

/**
 * A small upstream body (a manifest, a referrers list) read whole, within `limit`: a body that
 * announces or sends more is refused (UPSTREAM_ERROR) before it is buffered, and one cut or
 * stalled (bodyTimeout) is an outage (UNAVAILABLE), so that a cached answer is served stale.
 * `what` names it in the message: "a manifest".
 */
export async function readLimited(res: UpstreamResponse, limit: number, what: string): Promise<Buffer> {
  try {
    return await readBounded(res.body, res.headers["content-length"], limit);
  } catch (err) {
    if (err instanceof TooLargeError) {
      res.body.destroy();
      throw new RegistryError("UPSTREAM_ERROR", `the upstream sent ${what} larger than the limit`, {
        detail: err.size === undefined ? { limit } : { size: err.size, limit },
      });
    }
    throw new RegistryError("UNAVAILABLE", `the upstream stopped sending ${what}`, {
      detail: { reason: (err as Error).message },
      cause: err,
    });
  }
}
