import { RegistryError } from "../oci/errors.ts";
import type { UpstreamResponse } from "./client.ts";

/**
 * A small upstream body (a manifest, a referrers list) read whole, within `limit`: a body that
 * announces or sends more is refused (UPSTREAM_ERROR) before it is buffered, and one cut or
 * stalled (bodyTimeout) is an outage (UNAVAILABLE), so that a cached answer is served stale.
 * `what` names it in the message: "a manifest".
 */
export async function readLimited(res: UpstreamResponse, limit: number, what: string): Promise<Buffer> {
  const tooLarge = (size?: number) =>
    new RegistryError("UPSTREAM_ERROR", `the upstream sent ${what} larger than the limit`, {
      detail: size === undefined ? { limit } : { size, limit },
    });
  const announced = Number(res.headers["content-length"]);
  if (announced > limit) {
    res.body.destroy();
    throw tooLarge(announced);
  }
  const chunks: Buffer[] = [];
  let total = 0;
  try {
    for await (const chunk of res.body) {
      total += (chunk as Buffer).length;
      if (total > limit) {
        res.body.destroy();
        throw tooLarge();
      }
      chunks.push(chunk as Buffer);
    }
  } catch (err) {
    if (err instanceof RegistryError) throw err;
    throw new RegistryError("UNAVAILABLE", `the upstream stopped sending ${what}`, {
      detail: { reason: (err as Error).message },
      cause: err,
    });
  }
  return Buffer.concat(chunks);
}
