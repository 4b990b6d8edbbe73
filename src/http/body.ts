import type { IncomingMessage } from "node:http";
import { RegistryError } from "../oci/errors.ts";

// A small request body (a manifest) read whole, within a limit: a client that announces or
// sends more is refused before the bytes are buffered.

export async function readSmallBody(req: IncomingMessage, max: number): Promise<Buffer> {
  const declared = Number(req.headers["content-length"] ?? NaN);
  if (declared > max) throw tooLarge(max);
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    total += chunk.length;
    if (total > max) throw tooLarge(max);
    chunks.push(chunk);
  }
  return Buffer.concat(chunks, total);
}

function tooLarge(max: number): RegistryError {
  return new RegistryError("SIZE_INVALID", `the body is larger than this registry takes (${max} bytes)`, {
    status: 413,
    detail: { max },
  });
}
