import type { IncomingMessage } from "node:http";
import { RegistryError } from "../oci/errors.ts";
import { readBounded, TooLargeError } from "../bounded-read.ts";

/**
 * A small request body (a manifest) read whole, within `max`: a client that announces or sends
 * more gets 413 before the bytes are buffered.
 */
export async function readSmallBody(req: IncomingMessage, max: number): Promise<Buffer> {
  try {
    return await readBounded(req, req.headers["content-length"], max);
  } catch (err) {
    if (!(err instanceof TooLargeError)) throw err;
    throw new RegistryError("SIZE_INVALID", `the body is larger than this registry takes (${max} bytes)`, {
      status: 413,
      detail: { max },
    });
  }
}
