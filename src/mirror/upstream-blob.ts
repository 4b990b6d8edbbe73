import { formatDigest, type Digest } from "../oci/digest.ts";
import type { UpstreamClient } from "../upstream/client.ts";
import { upstreamError } from "../upstream/errors.ts";

// Blob requests to the upstream that bypass the cache.

/** Bytes [start, end] straight from the upstream, for a reader the cache had to let down. */
export async function* directRange(
  upstream: UpstreamClient,
  repo: string,
  d: Digest,
  start: number,
  end: number | undefined,
): AsyncGenerator<Buffer> {
  const range = `bytes=${start}-${end ?? ""}`;
  const res = await upstream.fetch({
    method: "GET",
    repo,
    path: blobPath(repo, d),
    headers: { range },
  });
  if (res.status !== 200 && res.status !== 206) throw await upstreamError(res, "BLOB_UNKNOWN");
  // An upstream that ignores Range sends everything: skip to where the reader is.
  let skip = res.status === 200 ? start : 0;
  let left = end === undefined ? Infinity : end - start + 1;
  try {
    for await (const raw of res.body) {
      let chunk = raw as Buffer;
      if (skip > 0) {
        const n = Math.min(skip, chunk.length);
        skip -= n;
        chunk = chunk.subarray(n);
      }
      if (chunk.length > left) chunk = chunk.subarray(0, left);
      left -= chunk.length;
      if (chunk.length) yield chunk;
      if (left <= 0) break;
    }
  } finally {
    res.body.destroy();
  }
}

export function blobPath(repo: string, d: Digest): string {
  return `/v2/${repo}/blobs/${formatDigest(d)}`;
}

export function contentLength(h: string | string[] | undefined): number | undefined {
  const n = typeof h === "string" ? Number(h) : NaN;
  return Number.isSafeInteger(n) && n >= 0 ? n : undefined;
}
