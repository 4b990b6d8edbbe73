import type { Readable } from "node:stream";

// A small body (a manifest pushed by a client, a manifest or referrers list from an upstream)
// read whole within a limit: one that announces more is refused before a byte is read, one that
// turns out to carry more as soon as it passes the limit (leaving the loop destroys the stream).
// What a refusal and a cut body mean is the caller's.

export class TooLargeError extends Error {
  constructor(readonly size: number | undefined) {
    super("the body is larger than the limit");
    this.name = "TooLargeError";
  }
}

/** `announced` is the Content-Length header, if any. Rejects with TooLargeError, or the body's error. */
export async function readBounded(body: Readable, announced: unknown, max: number): Promise<Buffer> {
  const declared = Number(announced);
  if (declared > max) throw new TooLargeError(declared);
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of body as AsyncIterable<Buffer>) {
    total += chunk.length;
    if (total > max) throw new TooLargeError(undefined);
    chunks.push(chunk);
  }
  return Buffer.concat(chunks, total);
}
