import { LRUCache } from "lru-cache";
import type { Logger } from "winston";
import { formatDigest, type Digest } from "../oci/digest.ts";
import { RegistryError } from "../oci/errors.ts";
import type { BlobStore, BlobWriter } from "../storage/blob-store.ts";
import type { UpstreamClient } from "../upstream/client.ts";
import { upstreamError } from "../upstream/errors.ts";
import type { Metrics } from "../metrics/metrics.ts";
import type { Events, Flight, FlightRun, Flights } from "../coordination/coordinator.ts";
import { BlobFill, StorageError, type FillFile } from "./fill.ts";
import { ElsewhereFill, FillFollower, type FillTicket } from "./fill-follower.ts";
import { FillWatch } from "./fill-watch.ts";
import { RemoteFill, type FillOrigin } from "./remote-fill.ts";
import type { BlobIndex } from "./eviction.ts";
import type { SendOptions } from "../storage/send-file.ts";
import type { ObjectReader } from "../storage/driver.ts";
import { bufferAnswer, fillAnswer, readerAnswer, redirectAnswer, type BlobAnswer } from "./blob-answers.ts";
import { blobPath, contentLength, directRange } from "./upstream-blob.ts";

// Blobs: local-first and immutable. A cached blob is served from storage; a missing one is
// fetched once (however many clients ask) and followed by every client while it lands.

export type { BlobAnswer } from "./blob-answers.ts";

/** Blobs up to this size are also kept in memory (cache.blobMemory): no syscall at all to serve them. */
const SMALL_BLOB = 1024 * 1024;

export interface BlobServiceDeps {
  store: BlobStore;
  evictor: BlobIndex;
  metrics: Metrics;
  log: Logger;
  /** A fill that receives no byte from the upstream for this long is given up (cache.fillTimeout). */
  fillTimeoutMs: number;
  /** A fill goes on for at most this long after its last reader left (cache.abandonedFillTimeout). */
  abandonedFillTimeoutMs: number;
  /** Bytes of small blobs kept in memory; 0 turns it off. */
  memoryBytes: number;
  /** Send cached blobs with sendfile(2) where the addon is built (cache.sendfile). */
  sendfile: boolean;
  /** Most sendfile(2) transfers at once; more take the JavaScript path (cache.sendfileThreads). */
  sendfileThreads: number;
  /** Send GETs of cached blobs to the storage itself where it can (storage.s3.redirect). */
  redirect?: boolean;
  /** A client that takes no bytes for this long is cut off, on every path (limits.stallTimeout). */
  stallTimeoutMs: number;
  /**
   * Fills in flight by digest hex: one upstream GET per blob, however many clients (in however
   * many workers) ask. The flight's value is the ticket other workers follow the fill by.
   */
  fills: Flights<FillTicket>;
  /**
   * Other workers following a fill of this one (and ours following theirs): they keep it from
   * counting as abandoned. Absent in a single process, where every reader is local.
   */
  followChanges?: Events<FollowerChange>;
  /**
   * In a cluster: where this replica serves its fills to the others (http/fills.ts). Its tickets
   * carry it, and a fill another replica runs is followed from there.
   */
  origin?: FillOrigin;
  /** Told when a fill starts or ends here (the cluster's record of who fills what). */
  fillsChanged?: () => void;
  /** Told when no fill runs here and no client here follows one: start.ts gives memory back. */
  fillsIdle?: () => void;
}

/** Some worker's first client started (+1), or its last stopped (-1), following the fill of `hex`. */
export interface FollowerChange {
  hex: string;
  delta: 1 | -1;
}

export class BlobService {
  /** Every fill's pump, so shutdown can wait for them. */
  private readonly pumps = new Set<Promise<void>>();
  /** Clients here following a fill, this process's or another's. */
  private fillReaders = 0;
  /** The fills this process runs, by digest hex: its own clients read them from memory. */
  private readonly running = new Map<string, BlobFill>();
  /** Fills another worker (or replica) runs, by digest hex: one follower each. */
  private readonly followers = new Map<string, ElsewhereFill>();
  private readonly shutdown = new AbortController();
  private readonly memory: LRUCache<string, Buffer> | undefined;
  private readonly sendOptions: SendOptions;

  constructor(private readonly deps: BlobServiceDeps) {
    // A worker hears of every follower change; only the one running that fill acts on it.
    deps.followChanges?.subscribe(({ hex, delta }) => this.running.get(hex)?.followedElsewhere(delta));
    this.sendOptions = {
      kernel: deps.sendfile,
      maxKernelTransfers: deps.sendfileThreads,
      stallMs: deps.stallTimeoutMs,
    };
    this.memory =
      deps.memoryBytes > 0
        ? new LRUCache<string, Buffer>({
            maxSize: deps.memoryBytes,
            sizeCalculation: (bytes) => Math.max(bytes.length, 1),
          })
        : undefined;
  }

  /** The digests this process is filling now (the cluster's view of who fills what). */
  runningFills(): string[] {
    return [...this.running.keys()].map((hex) => `sha256:${hex}`);
  }

  /** The fill of `hex` this process runs, for the other replicas (http/fills.ts). */
  runningFill(hex: string): BlobFill | undefined {
    return this.running.get(hex);
  }

  /** The blob left the cache (eviction): its copy in memory goes too. */
  forgetCached(hex: string): void {
    this.memory?.delete(hex);
  }

  /** Blobs were removed behind our back (a purge): forget every copy in memory. */
  forgetAllCached(): void {
    this.memory?.clear();
  }

  /**
   * A cached blob held in memory, without I/O or a promise, for the fast path
   * (http/fast-answer.ts); undefined otherwise, and get() answers. Counts as get() does on a hit.
   */
  peekMemory(upstreamName: string, d: Digest): Buffer | undefined {
    const mem = this.readMemory(d);
    if (mem) this.deps.metrics.lookupsOf("blob", upstreamName).hit.inc();
    return mem;
  }

  /**
   * peekMemory's answer for a cached blob not yet in memory: a small one is read in (as get()
   * would) and returned; a large or absent one, or any with blobMemory off, is undefined.
   */
  async loadSmall(upstreamName: string, d: Digest): Promise<Buffer | undefined> {
    // A blob being filled here is not in the cache yet: get() follows the fill, and looking for
    // the file first would be one more open for every latecomer of a burst.
    if (!this.memory || this.running.has(d.hex) || this.followers.has(d.hex)) return undefined;
    const reader = await this.deps.store.open(d);
    if (!reader) return undefined;
    if (reader.size > SMALL_BLOB) {
      await reader.close();
      return undefined;
    }
    const bytes = await this.keep(d, reader);
    this.deps.evictor.read(d.hex);
    this.deps.metrics.lookupsOf("blob", upstreamName).hit.inc();
    return bytes;
  }

  /** `upstream` is asked on a miss; the cache itself is shared by every upstream (one digest, one file). */
  async get(upstream: UpstreamClient, repo: string, d: Digest, method: "GET" | "HEAD"): Promise<BlobAnswer> {
    const counters = this.deps.metrics.lookupsOf("blob", upstream.name);
    const cached = await this.openCached(d, method);
    if (cached) {
      counters.hit.inc();
      return cached;
    }
    counters.miss.inc();
    // A HEAD follows a fill in flight (it knows the size soonest) but never starts one.
    if (method === "HEAD") {
      const inflight = await this.deps.fills.join(d.hex);
      if (!inflight) return this.headUpstream(upstream, repo, d);
      return this.follow(upstream, repo, d, inflight);
    }
    const flight = this.deps.fills.run(d.hex, (run) => this.fill(upstream, repo, d, run));
    return this.follow(upstream, repo, d, flight);
  }

  /** An answer that follows the fill: from memory when it runs here, else through its file. */
  private async follow(
    upstream: UpstreamClient,
    repo: string,
    d: Digest,
    flight: Flight<FillTicket>,
  ): Promise<BlobAnswer> {
    const ticket = await flight.promise;
    // Known only now across workers: whether another member ran the fill.
    if (flight.joined) this.deps.metrics.coalesced.inc({ kind: "blob" });
    const fill = this.running.get(d.hex) ?? this.follower(upstream, repo, d, ticket, flight.ended);
    const answer = fillAnswer(fill, this.deps.stallTimeoutMs, () => {
      this.fillReaders--;
      this.maybeIdle();
    });
    this.fillReaders++;
    return answer;
  }

  /** No fill runs here and no client here follows one. */
  idle(): boolean {
    return this.pumps.size === 0 && this.fillReaders === 0;
  }

  private maybeIdle(): void {
    if (this.idle()) this.deps.fillsIdle?.();
  }

  private follower(
    upstream: UpstreamClient,
    repo: string,
    d: Digest,
    ticket: FillTicket,
    ended: Promise<"done" | "failed">,
  ): ElsewhereFill {
    const known = this.followers.get(d.hex);
    if (known && known.ticket.temp === ticket.temp) return known;
    const openPublished = () => this.deps.store.open(d);
    const fallback = (start: number, end: number | undefined) => directRange(upstream, repo, d, start, end);
    const following = (delta: 1 | -1) =>
      void this.deps.followChanges
        ?.publish({ hex: d.hex, delta })
        .catch((err: Error) =>
          this.deps.log.warn("could not tell a fill's owner of a follower", { error: err.message }),
        );
    // Another replica's fill is followed over HTTP; another worker's, through its file.
    const remote = ticket.origin && ticket.origin.member !== this.deps.origin?.member;
    const follower = remote
      ? new RemoteFill(d.hex, ticket.origin!, ticket, ended, openPublished, fallback, following)
      : new FillFollower(ticket, ended, openPublished, fallback, following);
    this.followers.set(d.hex, follower);
    // Once the flight is over, the next request finds the blob cached (or starts afresh).
    void ended.then(() => this.followers.get(d.hex) === follower && this.followers.delete(d.hex));
    return follower;
  }

  /** Stops every fill (their temp files are removed) and waits for them. */
  async close(): Promise<void> {
    this.shutdown.abort();
    await Promise.allSettled([...this.pumps]);
  }

  private async openCached(d: Digest, method: "GET" | "HEAD"): Promise<BlobAnswer | undefined> {
    const { store, evictor } = this.deps;
    const mem = this.readMemory(d);
    if (mem) return bufferAnswer(mem, this.deps.stallTimeoutMs);
    const reader = await store.open(d);
    if (!reader) return undefined;
    evictor.read(d.hex);
    const small = this.memory !== undefined && reader.size <= SMALL_BLOB;
    // With redirect on, a GET of a blob goes to the storage itself: the bytes cost the bucket,
    // not us. Not a small one: it is read once into memory (below) and served from there, as a
    // 307 and a second request would cost the client more than the bytes. A HEAD stays here.
    if (this.deps.redirect && method === "GET" && !small) {
      const url = await store.redirectURL(d);
      if (url !== undefined) {
        await reader.close();
        return redirectAnswer(url, reader.size);
      }
    }
    if (small) return bufferAnswer(await this.keep(d, reader), this.deps.stallTimeoutMs);
    // Holding the reader means eviction can remove the blob without cutting this response.
    return readerAnswer(reader, this.sendOptions);
  }

  /** The blob's copy in memory, if it has one, recorded as read. */
  private readMemory(d: Digest): Buffer | undefined {
    // Reads are recorded by the eviction index, which persists them (last-read.ts); a blob
    // removed behind our back leaves memory through the generation file (forgetAllCached).
    const mem = this.memory?.get(d.hex);
    if (mem) this.deps.evictor.read(d.hex);
    return mem;
  }

  /** Reads a small blob into memory, from now on served from there; closes `reader`. */
  private async keep(d: Digest, reader: ObjectReader): Promise<Buffer> {
    const bytes = Buffer.allocUnsafe(reader.size);
    try {
      const { bytesRead } = await reader.read(bytes, 0, reader.size, 0);
      if (bytesRead !== reader.size) throw new Error("cached blob shorter than its size");
    } finally {
      await reader.close();
    }
    this.memory?.set(d.hex, bytes);
    return bytes;
  }

  private async headUpstream(upstream: UpstreamClient, repo: string, d: Digest): Promise<BlobAnswer> {
    const res = await upstream.fetch({ method: "HEAD", repo, path: blobPath(repo, d) });
    if (res.status !== 200) throw await upstreamError(res, "BLOB_UNKNOWN");
    res.body.resume();
    return {
      size: contentLength(res.headers["content-length"]),
      source: "upstream",
      send: () => {
        throw new Error("HEAD has no body");
      },
      release: () => undefined,
    };
  }

  /**
   * Asks the upstream for the blob and starts writing it to the cache. Until the upstream has
   * answered, latecomers wait on this flight; if that fails, they all get the same error and
   * the next request tries afresh. Once it answers, the flight is held until the last byte has
   * landed (or the fill failed), so latecomers follow this fill instead of starting another.
   * A fill that could not even start its cache file is not held: the clients already waiting
   * fall back to the upstream, but the next request must try the cache afresh (the fault may
   * have been brief).
   */
  private async fill(
    upstream: UpstreamClient,
    repo: string,
    d: Digest,
    flight: FlightRun,
  ): Promise<FillTicket> {
    const { store, metrics, log, evictor, fillTimeoutMs, abandonedFillTimeoutMs } = this.deps;
    const fallback = (start: number, end: number | undefined) => directRange(upstream, repo, d, start, end);
    // The fill's own limits, not the client's: it must outlive a client that hangs up.
    const watch = new FillWatch({
      stallMs: fillTimeoutMs,
      abandonedMs: abandonedFillTimeoutMs,
      shutdown: this.shutdown.signal,
    });
    let res: Awaited<ReturnType<UpstreamClient["fetch"]>>;
    try {
      res = await upstream.fetch({ method: "GET", repo, path: blobPath(repo, d), signal: watch.signal });
      if (res.status !== 200) throw await upstreamError(res, "BLOB_UNKNOWN");
    } catch (err) {
      watch.dispose();
      if (!watch.signal.aborted) throw err;
      // The stall limit (or shutdown) struck before the upstream answered: a registry error,
      // not the bare abort, is what the client must see.
      const reason = watch.signal.reason as Error;
      throw new RegistryError("UNAVAILABLE", "the upstream did not answer", {
        detail: { reason: reason.message },
        cause: reason,
      });
    }
    const size = contentLength(res.headers["content-length"]);
    let writer: BlobWriter | undefined;
    let file: FillFile;
    try {
      writer = await store.beginWrite(d, size);
      file = await writer.openReader();
    } catch (err) {
      watch.dispose();
      res.body.destroy();
      await writer?.abort();
      metrics.fillFailures.inc({ reason: "storage" });
      log.error("cannot write to the cache; serving straight from the upstream", {
        error: (err as Error).message,
      });
      // No temp file: every follower goes to the upstream itself (FillFollower).
      return { temp: "", ...(size !== undefined ? { size } : {}), ...this.originField() };
    }
    const fill = new BlobFill({
      writer,
      file,
      size,
      openPublished: () => store.open(d),
      fallback,
      watch,
      // An upload to S3 takes as long again as the download: clients need not wait for it.
      releaseBeforePublish: store.driver.kind === "s3",
    });
    this.running.set(d.hex, fill);
    this.deps.fillsChanged?.();
    metrics.fillsInFlight.inc();
    const landed = fill.pump(res.body);
    const pump = landed.then(
      () => {
        evictor.added(d.hex, writer.written);
        log.debug("blob cached", { digest: formatDigest(d), size: writer.written });
      },
      (err: Error) => {
        res.body.destroy();
        const reason =
          err instanceof StorageError
            ? "storage"
            : err.name === "DigestMismatchError"
              ? "digest"
              : "upstream";
        metrics.fillFailures.inc({ reason });
        log[reason === "storage" ? "error" : "warn"]("blob fill failed; nothing cached", {
          digest: formatDigest(d),
          reason,
          error: err.message,
        });
      },
    );
    this.pumps.add(pump);
    const over = () => {
      metrics.fillsInFlight.dec();
      this.pumps.delete(pump);
      this.running.delete(d.hex);
      this.deps.fillsChanged?.();
      this.maybeIdle();
    };
    // Held until the blob is verified and published, and rejected when it is not: the flight's
    // `ended` says "done" only then, and followers in other workers release the last byte on
    // it. (`pump` itself always fulfils: its rejection handler only reports.)
    const held = landed.finally(over);
    held.catch(() => undefined);
    flight.holdUntil(held);
    return { temp: writer.tmpPath, ...(size !== undefined ? { size } : {}), ...this.originField() };
  }

  private originField(): { origin?: FillOrigin } {
    return this.deps.origin ? { origin: this.deps.origin } : {};
  }
}
