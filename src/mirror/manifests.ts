import type { Logger } from "winston";
import { readLimited } from "../upstream/read-limited.ts";
import { RegistryError } from "../oci/errors.ts";
import { digestOf, formatDigest, parseDigest, type Digest } from "../oci/digest.ts";
import { DEFAULT_MANIFEST_ACCEPT, MANIFEST_TYPES, sniffManifestType } from "../oci/media-types.ts";
import type { Reference } from "../oci/reference.ts";
import type { ManifestStore, TagRecord } from "../storage/manifest-store.ts";
import type { UpstreamClient, UpstreamResponse } from "../upstream/client.ts";
import { isUpstreamOutage, upstreamError } from "../upstream/errors.ts";
import type { Metrics } from "../metrics/metrics.ts";
import type { Flights } from "../coordination/coordinator.ts";
import { acceptKey, decideTag, type TagDecision } from "./policy.ts";

// Manifests. By digest: local-first and immutable, never asked upstream once cached. By tag, per
// Accept (policy.ts): trusted for the tag TTL, then revalidated with a HEAD (which Docker Hub does
// not count against the pull limit); the body is fetched only when the digest it names is not
// cached. When the upstream cannot be asked, a cached tag is served stale for up to maxStale.

export interface ManifestAnswer {
  bytes: Buffer;
  digest: string;
  mediaType: string;
  source: "cache" | "upstream";
  /** Set when served past its TTL because the upstream could not be asked. */
  stale: boolean;
}

export interface ManifestServiceDeps {
  store: ManifestStore;
  upstream: UpstreamClient;
  /** The upstream's name in the tag store (one directory per upstream). */
  upstreamName: string;
  metrics: Metrics;
  log: Logger;
  tagTtlMs: number;
  maxStaleMs: number;
  maxManifestBytes: number;
  /** Limit for a tag revalidation (HEAD, and the GET it may lead to): upstream.revalidateTimeout. */
  revalidateTimeoutMs: number;
  /** Merges concurrent fetches of one manifest or tag; its keys are this upstream's alone. */
  flights: Flights<ManifestAnswer>;
}

export class ManifestService {
  private readonly hit;
  private readonly miss;

  constructor(private readonly deps: ManifestServiceDeps) {
    ({ hit: this.hit, miss: this.miss } = deps.metrics.lookupsOf("manifest", deps.upstreamName));
  }

  async get(repo: string, ref: Reference, accept: string[]): Promise<ManifestAnswer> {
    return ref.kind === "digest" ? this.byDigest(repo, ref.digest) : this.byTag(repo, ref.tag, accept);
  }

  /**
   * The answer when memory alone gives it: a manifest held in memory, by digest or by a tag
   * trusted within its TTL. No I/O and no promise, for the fast path (http/fast-answer.ts);
   * undefined for anything else, which get() then answers. Counts a hit only when it answers.
   */
  peek(repo: string, ref: Reference, accept: string[]): ManifestAnswer | undefined {
    const { store, upstreamName, tagTtlMs, maxStaleMs } = this.deps;
    let d: Digest | undefined;
    if (ref.kind === "digest") d = ref.digest;
    else {
      const rec = store.peekTag(upstreamName, repo, ref.tag);
      if (!rec) return undefined;
      const decision = decideTag(rec, usefulAccept(accept), Date.now(), tagTtlMs, maxStaleMs);
      if (decision.action !== "serve") return undefined;
      d = parseDigest(decision.entry.digest);
    }
    const m = d && store.peek(d);
    // Without a recorded type, get() sniffs the body and records it.
    if (!m || m.mediaType === undefined) return undefined;
    this.hit.inc();
    return {
      bytes: m.bytes,
      digest: formatDigest(d!),
      mediaType: m.mediaType,
      source: "cache",
      stale: false,
    };
  }

  /**
   * peek's answer with the disk as well: a manifest cached by digest, or by a tag trusted within
   * its TTL, read into memory. Undefined for anything that needs the upstream, which get() asks.
   */
  async fromCache(repo: string, ref: Reference, accept: string[]): Promise<ManifestAnswer | undefined> {
    const cached =
      ref.kind === "digest"
        ? await this.cached(ref.digest)
        : (await this.judge(await this.readTag(repo, ref.tag), usefulAccept(accept))).cached;
    if (!cached) return undefined;
    this.hit.inc();
    return cached;
  }

  private async byDigest(repo: string, d: Digest): Promise<ManifestAnswer> {
    const cached = await this.cached(d);
    if (cached) {
      this.hit.inc();
      return cached;
    }
    this.miss.inc();
    return this.coalesce(`digest:${d.hex}`, () =>
      this.fetch(repo, formatDigest(d), DEFAULT_MANIFEST_ACCEPT, { expected: d }),
    );
  }

  private async byTag(repo: string, tag: string, clientAccept: string[]): Promise<ManifestAnswer> {
    const { metrics } = this.deps;
    const accept = usefulAccept(clientAccept);
    const { decision, cached } = await this.judge(await this.readTag(repo, tag), accept);
    if (cached) {
      this.hit.inc();
      return cached;
    }
    const key = `tag:${repo}:${tag}:${acceptKey(accept)}`;
    if (decision.action === "fetch" || decision.action === "serve") {
      this.miss.inc();
      return this.coalesce(
        key,
        async () => (await this.confirmedElsewhere(repo, tag, accept)) ?? this.fetchTag(repo, tag, accept),
      );
    }
    // "probe": cached for other Accepts only; the HEAD often names a manifest we hold (an
    // index's child), and there is nothing to serve stale, so no short limit either.
    const stale = decision.action === "revalidate" ? decision : undefined;
    return this.coalesce(key, async () => {
      const confirmed = await this.confirmedElsewhere(repo, tag, accept);
      if (confirmed) {
        this.hit.inc();
        return confirmed;
      }
      try {
        // Its own, short limit: an upstream that does not answer must not hold a cached tag
        // back for the whole upstream timeout (sized for blob transfers) before it is served stale.
        const answer = await this.revalidate(repo, tag, accept, stale && this.deps.revalidateTimeoutMs);
        (answer.source === "cache" ? this.hit : this.miss).inc();
        return answer;
      } catch (err) {
        const cached =
          stale && Date.now() < stale.staleUntil && isUpstreamOutage(err)
            ? await this.cached(parseDigest(stale.entry.digest)!)
            : undefined;
        if (!cached) throw err;
        this.hit.inc();
        metrics.servedStale.inc({ upstream: this.deps.upstreamName });
        this.deps.log.warn("upstream unavailable; serving a stale tag", {
          repo,
          tag,
          error: (err as Error).message,
        });
        return { ...cached, stale: true };
      }
    });
  }

  /**
   * The tag as the disk has it now, if that answers without the upstream. Another worker shares
   * the cache and may have confirmed the tag since this process read its copy in memory: asking
   * the upstream again would be a second HEAD for one TTL. Read inside the flight, so this costs
   * one small read per revalidation, not per request.
   */
  private async confirmedElsewhere(
    repo: string,
    tag: string,
    accept: string[],
  ): Promise<ManifestAnswer | undefined> {
    const { store, upstreamName } = this.deps;
    const rec = await store.getTag(upstreamName, repo, tag, { fresh: true }).catch(() => undefined);
    return (await this.judge(rec, accept)).cached;
  }

  /**
   * The tag policy's decision on a tag record, and, when it says serve, the cached manifest the
   * record names (undefined if its bytes are gone: the caller then asks the upstream).
   */
  private async judge(
    rec: TagRecord | undefined,
    accept: string[],
  ): Promise<{ decision: TagDecision; cached: ManifestAnswer | undefined }> {
    const { tagTtlMs, maxStaleMs } = this.deps;
    const decision = decideTag(rec, accept, Date.now(), tagTtlMs, maxStaleMs);
    const cached =
      decision.action === "serve" ? await this.cached(parseDigest(decision.entry.digest)!) : undefined;
    return { decision, cached };
  }

  /**
   * The tag's record. A record that cannot be read (EMFILE, EACCES, EIO) is logged and treated
   * as absent: the upstream can still answer, and the log says why the cache did not.
   */
  private async readTag(repo: string, tag: string): Promise<TagRecord | undefined> {
    try {
      return await this.deps.store.getTag(this.deps.upstreamName, repo, tag);
    } catch (err) {
      this.deps.log.error("could not read a tag record; asking the upstream", {
        repo,
        tag,
        error: (err as Error).message,
      });
      return undefined;
    }
  }

  /**
   * A cached manifest as an answer. Its type is the one recorded when it was cached, never read
   * from the body: a hit parses nothing, and a body claiming "mediaType":"text/html" is not
   * served as HTML. A manifest cached before types were recorded is sniffed once (known
   * manifest types only), and the result recorded.
   */
  private async cached(d: Digest): Promise<ManifestAnswer | undefined> {
    const m = await this.deps.store.get(d);
    if (!m) return undefined;
    const mediaType = m.mediaType ?? (await this.sniffOnce(d, m.bytes));
    return { bytes: m.bytes, digest: formatDigest(d), mediaType, source: "cache", stale: false };
  }

  private async sniffOnce(d: Digest, bytes: Buffer): Promise<string> {
    const mediaType = sniffManifestType(bytes);
    // Cached by a version that did not check bodies: served, but as no manifest type.
    if (mediaType === undefined) return "application/octet-stream";
    await this.deps.store.recordType(d, mediaType).catch((err: Error) =>
      this.deps.log.error("could not record a manifest's media type", {
        digest: formatDigest(d),
        error: err.message,
      }),
    );
    return mediaType;
  }

  /**
   * HEAD the tag; GET the manifest only if the digest it names is not cached (it moved to a
   * manifest we have never fetched, or we lost the bytes). `timeoutMs` bounds both requests.
   */
  private async revalidate(
    repo: string,
    tag: string,
    accept: string[],
    timeoutMs: number | undefined,
  ): Promise<ManifestAnswer> {
    const { upstream, store, upstreamName } = this.deps;
    const res = await upstream.fetch({
      method: "HEAD",
      repo,
      path: `/v2/${repo}/manifests/${tag}`,
      headers: { accept },
      ...(timeoutMs !== undefined ? { timeoutMs } : {}),
    });
    if (res.status !== 200) throw await upstreamError(res, "MANIFEST_UNKNOWN");
    res.body.resume();
    const claimed = res.headers["docker-content-digest"];
    const d = typeof claimed === "string" ? parseDigest(claimed) : undefined;
    // Digests are immutable and every cached manifest was verified against its own: if the tag
    // moved to one we already hold (the client's Accept picked another entry of an index, or
    // a record from before accept keys), its bytes are the answer.
    const cached = d ? await this.cached(d) : undefined;
    if (!cached) return this.fetchTag(repo, tag, accept, timeoutMs);
    await store.putTag(upstreamName, repo, tag, {
      accept: acceptKey(accept),
      digest: cached.digest,
      mediaType: cached.mediaType,
      checkedAt: Date.now(),
    });
    return cached;
  }

  private async fetchTag(
    repo: string,
    tag: string,
    accept: string[],
    timeoutMs?: number,
  ): Promise<ManifestAnswer> {
    const answer = await this.fetch(repo, tag, accept, { timeoutMs });
    await this.deps.store.putTag(this.deps.upstreamName, repo, tag, {
      accept: acceptKey(accept),
      digest: answer.digest,
      mediaType: answer.mediaType,
      checkedAt: Date.now(),
    });
    return answer;
  }

  /** GETs a manifest, checks it against its digest, and caches it by digest. */
  private async fetch(
    repo: string,
    ref: string,
    accept: string[],
    opts: { expected?: Digest; timeoutMs?: number | undefined } = {},
  ): Promise<ManifestAnswer> {
    const { expected, timeoutMs } = opts;
    const { upstream, store, maxManifestBytes } = this.deps;
    const res = await upstream.fetch({
      method: "GET",
      repo,
      path: `/v2/${repo}/manifests/${ref}`,
      headers: { accept },
      ...(timeoutMs !== undefined ? { timeoutMs } : {}),
    });
    if (res.status !== 200) throw await upstreamError(res, "MANIFEST_UNKNOWN");
    const bytes = await readLimited(res, maxManifestBytes, "a manifest");
    const digest = digestOf(bytes);
    const claimed = res.headers["docker-content-digest"];
    if (
      (expected && digest !== formatDigest(expected)) ||
      (typeof claimed === "string" && claimed !== digest)
    ) {
      throw new RegistryError(
        "UPSTREAM_ERROR",
        "the upstream sent a manifest that does not match its digest",
        {
          detail: { expected: expected ? formatDigest(expected) : claimed, actual: digest },
        },
      );
    }
    // The body must be a manifest whatever the upstream labels it; a known manifest type in the
    // header wins over the body's own claim (that is what the registry serves it as). Either
    // way the type is a known manifest type: whatever is recorded here is what hits serve.
    const sniffed = sniffManifestType(bytes);
    if (!sniffed)
      throw new RegistryError("UPSTREAM_ERROR", "the upstream sent something that is not a manifest");
    const mediaType = headerType(res) ?? sniffed;
    await store.put(parseDigest(digest)!, bytes, mediaType);
    return { bytes, digest, mediaType, source: "upstream", stale: false };
  }

  private async coalesce(key: string, fn: () => Promise<ManifestAnswer>): Promise<ManifestAnswer> {
    const flight = this.deps.flights.run(key, fn);
    // Read once settled: across workers, whether another member ran it is known only then.
    try {
      return await flight.promise;
    } finally {
      if (flight.joined) this.deps.metrics.coalesced.inc({ kind: "manifest" });
    }
  }
}

/** Without an Accept (or with only a wildcard) some registries fall back to schema 1: ask for the modern types. */
function usefulAccept(accept: string[]): string[] {
  return accept.length === 0 || accept.every((a) => a === "*/*") ? DEFAULT_MANIFEST_ACCEPT : accept;
}

function headerType(res: UpstreamResponse): string | undefined {
  const t = res.headers["content-type"];
  if (typeof t !== "string") return undefined;
  const type = t.split(";")[0]!.trim().toLowerCase();
  return MANIFEST_TYPES.has(type) ? type : undefined;
}
