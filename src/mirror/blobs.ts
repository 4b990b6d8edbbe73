import { open, type FileHandle } from "node:fs/promises";
import type { Readable } from "node:stream";
import type { Logger } from "winston";
import { RegistryError } from "../oci/errors.ts";
import { formatDigest, type Digest } from "../oci/digest.ts";
import type { BlobStore } from "../storage/blob-store.ts";
import type { UpstreamClient } from "../upstream/client.ts";
import { upstreamError } from "../upstream/errors.ts";
import type { Metrics } from "../metrics/metrics.ts";
import { BlobFill } from "./fill.ts";

// Blobs: local-first and immutable. A cached blob is served from its file; a missing one is
// fetched once (however many clients ask) and followed by every client while it lands.

export interface BlobAnswer {
  /** undefined only while a fill runs for an upstream that sent no Content-Length. */
  size: number | undefined;
  source: "cache" | "upstream";
  /** Bytes [start, end] inclusive; call once, or call release() instead. */
  body(start: number, end: number | undefined): Readable;
  release(): void;
}

/** Reads of cached blobs: large reads keep the per-chunk cost low (measured in bench/). */
const FILE_READ_CHUNK = 1024 * 1024;
/** Record a read at most this often per blob: the LRU needs minutes, not milliseconds. */
const TOUCH_EVERY_MS = 60_000;

export interface BlobServiceDeps {
  store: BlobStore;
  upstream: UpstreamClient;
  metrics: Metrics;
  log: Logger;
  fillTimeoutMs: number;
}

export class BlobService {
  private readonly fills = new Map<string, Promise<BlobFill>>();

  constructor(private readonly deps: BlobServiceDeps) {}

  async get(repo: string, d: Digest, method: "GET" | "HEAD"): Promise<BlobAnswer> {
    const { metrics } = this.deps;
    const cached = await this.openCached(d);
    if (cached) {
      metrics.hits.inc({ kind: "blob" });
      return cached;
    }
    const inflight = this.fills.get(d.hex);
    if (inflight) {
      metrics.coalesced.inc({ kind: "blob" });
      metrics.misses.inc({ kind: "blob" });
      return fillAnswer(await inflight);
    }
    metrics.misses.inc({ kind: "blob" });
    if (method === "HEAD") return this.headUpstream(repo, d);
    return fillAnswer(await this.startFill(repo, d));
  }

  private async openCached(d: Digest): Promise<BlobAnswer | undefined> {
    let fh: FileHandle;
    try {
      fh = await open(this.deps.store.path(d), "r");
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
      throw err;
    }
    // Holding the descriptor means eviction can unlink the file without cutting this response.
    const st = await fh.stat();
    if (Date.now() - st.mtimeMs > TOUCH_EVERY_MS) void this.deps.store.touch(d);
    return {
      size: st.size,
      source: "cache",
      body: (start, end) =>
        fh.createReadStream({ start, end, highWaterMark: FILE_READ_CHUNK, autoClose: true }),
      release: () => void fh.close(),
    };
  }

  private async headUpstream(repo: string, d: Digest): Promise<BlobAnswer> {
    const res = await this.deps.upstream.fetch({
      method: "HEAD",
      repo,
      path: `/v2/${repo}/blobs/${formatDigest(d)}`,
    });
    if (res.status !== 200) throw await upstreamError(res, "BLOB_UNKNOWN");
    res.body.resume();
    const size = Number(res.headers["content-length"]);
    return {
      size: Number.isFinite(size) ? size : undefined,
      source: "upstream",
      body: () => {
        throw new Error("HEAD has no body");
      },
      release: () => undefined,
    };
  }

  private startFill(repo: string, d: Digest): Promise<BlobFill> {
    const { store, upstream, metrics, log, fillTimeoutMs } = this.deps;
    const started = (async () => {
      // The fill's own limit, not the client's: it must outlive a client that hangs up.
      const signal = AbortSignal.timeout(fillTimeoutMs);
      const res = await upstream.fetch({
        method: "GET",
        repo,
        path: `/v2/${repo}/blobs/${formatDigest(d)}`,
        signal,
      });
      if (res.status !== 200) throw await upstreamError(res, "BLOB_UNKNOWN");
      const len = Number(res.headers["content-length"]);
      const size = res.headers["content-length"] !== undefined && Number.isFinite(len) ? len : undefined;
      let writer;
      try {
        writer = await store.beginWrite(d, size);
      } catch (err) {
        res.body.destroy();
        throw err;
      }
      const fill = new BlobFill(writer, size, store.path(d));
      metrics.fillsInFlight.inc();
      fill
        .pump(res.body as AsyncIterable<Buffer>)
        .then(
          () => log.debug("blob cached", { digest: formatDigest(d), size: writer.written }),
          (err: Error) => {
            res.body.destroy();
            metrics.fillFailures.inc({ reason: err.name });
            log.warn("blob fill failed; nothing cached", { digest: formatDigest(d), error: err.message });
          },
        )
        .finally(() => {
          metrics.fillsInFlight.dec();
          this.forget(d, started);
        });
      return fill;
    })();
    // Until the upstream has answered, latecomers wait on the same promise; if it fails, they
    // all get the same error and the next request tries afresh.
    this.fills.set(d.hex, started);
    started.catch(() => this.forget(d, started));
    return started;
  }

  private forget(d: Digest, fill: Promise<BlobFill>): void {
    if (this.fills.get(d.hex) === fill) this.fills.delete(d.hex);
  }
}

function fillAnswer(fill: BlobFill): BlobAnswer {
  if (fill.state === "failed")
    throw new RegistryError("UNAVAILABLE", "the upstream transfer of this blob failed");
  return {
    size: fill.size,
    source: "upstream",
    body: (start, end) => fill.stream(start, end),
    release: () => undefined,
  };
}
