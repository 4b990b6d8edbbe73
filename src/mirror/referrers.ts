import type { Logger } from "winston";
import { readLimited } from "../upstream/read-limited.ts";
import { RegistryError } from "../oci/errors.ts";
import { formatDigest, type Digest } from "../oci/digest.ts";
import { OCI_INDEX } from "../oci/media-types.ts";
import type { StorageDriver } from "../storage/driver.ts";
import { referrersKey } from "../storage/keys.ts";
import type { UpstreamClient, UpstreamResponse } from "../upstream/client.ts";
import { isUpstreamOutage, upstreamError } from "../upstream/errors.ts";
import type { Metrics } from "../metrics/metrics.ts";
import type { Flights } from "../coordination/coordinator.ts";
import type { ManifestService } from "./manifests.ts";
import {
  filterByArtifactType,
  indexManifests,
  nextPage,
  referrersIndex,
  referrersTag,
  type ReferrerDescriptor,
} from "./referrers-index.ts";

// The OCI 1.1 referrers API for mirrored repositories (GET /v2/<name>/referrers/<digest>).
//
// A referrers list changes whenever someone signs or attests an image, so it is treated like a
// tag: asked upstream, cached with its fetch time, trusted for the tag TTL, then asked again,
// and served stale for up to tag.maxStale when the upstream cannot be asked. Concurrent misses
// of one subject share one upstream request (the coordinator's flights).
//
// Upstreams that offer the API answer it; the list is always asked for whole and filtered here,
// so one cached answer serves every `artifactType`. Upstreams that do not (distribution 2.8
// answers 404, some 405, some a page that is no index) are asked for the referrers tag schema
// instead: the tag `sha256-<hex>` through the mirror's own manifest path (so that tag is cached
// with the tag TTL too), whose index lists the referrers, and no such tag means none, as the
// spec says. That an upstream lacks the API is remembered for a while, so each request does not
// cost a 404 first.

export interface ReferrersAnswer {
  /** Every referrer the upstream listed, unfiltered. */
  manifests: ReferrerDescriptor[];
  source: "cache" | "upstream";
  /** Set when served past the TTL because the upstream could not be asked. */
  stale: boolean;
  /** Where the list came from: the upstream's referrers API, or its referrers tag. */
  via: "api" | "tag";
}

/** repos/<upstream>/<repo>/_referrers/<hex>.json (storage/keys.ts). */
interface ReferrersRecord {
  /** When the upstream gave this list (ms since the epoch). */
  checkedAt: number;
  via: "api" | "tag";
  manifests: ReferrerDescriptor[];
}

export interface ReferrersServiceDeps {
  driver: StorageDriver;
  upstream: UpstreamClient;
  /** The upstream's name in the cache's keys. */
  upstreamName: string;
  /** For the referrers tag schema: the tag goes through the manifest cache. */
  manifests: ManifestService;
  metrics: Metrics;
  log: Logger;
  tagTtlMs: number;
  maxStaleMs: number;
  /** Bound on the bytes of one referrers list, all pages together (limits.maxManifestSize). */
  maxBytes: number;
  /** Limit for asking again when a stale answer is there to fall back on (upstream.revalidateTimeout). */
  revalidateTimeoutMs: number;
  /** Merges concurrent fetches of one subject's referrers; its keys are this upstream's alone. */
  flights: Flights<ReferrersAnswer>;
  /** How long an upstream without the referrers API is not asked it again. */
  noApiMs?: number;
}

/** An upstream that lacks the API rarely gains it: ask again after an hour. */
const NO_API_MS = 60 * 60_000;
/** A loop guard on upstream pagination; maxBytes bounds the list long before in practice. */
const MAX_PAGES = 64;

export class ReferrersService {
  /** Until when the upstream is known not to offer the referrers API (ms since the epoch). */
  private noApiUntil = 0;

  constructor(private readonly deps: ReferrersServiceDeps) {}

  /** The referrers of `subject` in `repo`, unfiltered (see answerReferrers for the response). */
  async get(repo: string, subject: Digest): Promise<ReferrersAnswer> {
    const rec = await this.read(repo, subject);
    if (rec && this.fresh(rec)) return cachedAnswer(rec, false);
    return this.coalesce(`${repo}@${subject.hex}`, async () => {
      // Another worker or replica may have asked since this one read the record.
      const latest = (await this.read(repo, subject)) ?? rec;
      if (latest && this.fresh(latest)) return cachedAnswer(latest, false);
      try {
        return await this.refresh(repo, subject, latest !== undefined);
      } catch (err) {
        const { tagTtlMs, maxStaleMs } = this.deps;
        if (!latest || Date.now() >= latest.checkedAt + tagTtlMs + maxStaleMs || !isUpstreamOutage(err))
          throw err;
        this.deps.metrics.servedStale.inc({ upstream: this.deps.upstreamName });
        this.deps.log.warn("upstream unavailable; serving stale referrers", {
          repo,
          subject: formatDigest(subject),
          error: (err as Error).message,
        });
        return cachedAnswer(latest, true);
      }
    });
  }

  private fresh(rec: ReferrersRecord): boolean {
    return Date.now() - rec.checkedAt < this.deps.tagTtlMs;
  }

  /** Asks the upstream (its API, else its referrers tag) and records the answer. */
  private async refresh(repo: string, subject: Digest, haveStale: boolean): Promise<ReferrersAnswer> {
    // With an answer to fall back on, an upstream that does not answer must not hold it back
    // for the whole upstream timeout (sized for blob transfers).
    const timeoutMs = haveStale ? this.deps.revalidateTimeoutMs : undefined;
    const listed = Date.now() < this.noApiUntil ? undefined : await this.fromApi(repo, subject, timeoutMs);
    const answer: ReferrersAnswer = listed
      ? { manifests: listed, source: "upstream", stale: false, via: "api" }
      : await this.fromTag(repo, subject);
    // A tag the manifest cache served stale says nothing new: the record keeps its age.
    if (!answer.stale) {
      const rec: ReferrersRecord = { checkedAt: Date.now(), via: answer.via, manifests: answer.manifests };
      await this.deps.driver
        .put(referrersKey(this.deps.upstreamName, repo, subject), JSON.stringify(rec))
        .catch((err: Error) =>
          this.deps.log.error("could not record referrers; the next request asks again", {
            repo,
            subject: formatDigest(subject),
            error: err.message,
          }),
        );
    }
    return answer;
  }

  /**
   * The upstream's referrers API, every page of it; undefined when the upstream does not offer
   * it (then remembered for noApiMs). Asked without `artifactType`: the whole list is cached.
   */
  private async fromApi(
    repo: string,
    subject: Digest,
    timeoutMs: number | undefined,
  ): Promise<ReferrerDescriptor[] | undefined> {
    const { upstream, maxBytes } = this.deps;
    const base = upstream.url.replace(/\/+$/, "");
    let path = `/v2/${repo}/referrers/${formatDigest(subject)}`;
    const out: ReferrerDescriptor[] = [];
    let budget = maxBytes;
    for (let page = 0; page < MAX_PAGES; page++) {
      const res = await upstream.fetch({
        method: "GET",
        repo,
        path,
        headers: { accept: OCI_INDEX },
        ...(timeoutMs !== undefined ? { timeoutMs } : {}),
      });
      // A registry with the API never answers 404 to it (the spec's MUST NOT) once the
      // repository is found: a 404 or 405 is a registry without it. Only the first page tells;
      // a later one failing is a fault.
      if (page === 0 && (res.status === 404 || res.status === 405)) {
        // Except a NAME_UNKNOWN: that is about the repository, so it says nothing of the API
        // (and must not send every repository to the tag schema for an hour). Its tag is
        // asked for all the same: no tag, no referrers.
        if (res.status === 404 && (await errorCodes(res)).includes("NAME_UNKNOWN")) return undefined;
        res.body.resume();
        return this.noApi();
      }
      if (res.status !== 200) throw await upstreamError(res, "MANIFEST_UNKNOWN");
      const bytes = await readLimited(res, budget, "a referrers list");
      budget -= bytes.length;
      const listed = indexManifests(bytes);
      if (!listed) {
        if (page === 0) return this.noApi();
        throw new RegistryError("UPSTREAM_ERROR", "the upstream sent a referrers page that is not an index");
      }
      out.push(...listed);
      const next = nextPage(res.headers.link, new URL(base + path));
      if (!next) return out;
      // Credentials go to the upstream's own URL only (as for redirects, see client.ts).
      if (!next.href.startsWith(`${base}/`))
        throw new RegistryError("UPSTREAM_ERROR", "the upstream's next referrers page is elsewhere", {
          detail: { link: next.href },
        });
      path = next.href.slice(base.length);
    }
    throw new RegistryError("UPSTREAM_ERROR", "the upstream's referrers list has too many pages", {
      detail: { pages: MAX_PAGES },
    });
  }

  private noApi(): undefined {
    this.noApiUntil = Date.now() + (this.deps.noApiMs ?? NO_API_MS);
    this.deps.log.debug("the upstream has no referrers API; using the referrers tag schema", {
      upstream: this.deps.upstreamName,
    });
    return undefined;
  }

  /** The referrers tag schema: an index under `sha256-<hex>`; no such tag, no referrers. */
  private async fromTag(repo: string, subject: Digest): Promise<ReferrersAnswer> {
    try {
      const m = await this.deps.manifests.get(repo, { kind: "tag", tag: referrersTag(subject) }, [OCI_INDEX]);
      // Anything but an index under that tag is not the schema's: it lists no referrers.
      const manifests = (m.mediaType === OCI_INDEX ? indexManifests(m.bytes) : undefined) ?? [];
      return { manifests, source: m.source, stale: m.stale, via: "tag" };
    } catch (err) {
      // Every 404 of the upstream's comes back as MANIFEST_UNKNOWN (upstream/errors.ts).
      if (err instanceof RegistryError && err.code === "MANIFEST_UNKNOWN")
        return { manifests: [], source: "upstream", stale: false, via: "tag" };
      throw err;
    }
  }

  /**
   * The recorded list. A record that cannot be read (EMFILE, EACCES, EIO) is logged and treated
   * as absent, as a torn one is: the upstream can still answer.
   */
  private async read(repo: string, subject: Digest): Promise<ReferrersRecord | undefined> {
    let bytes: Buffer | undefined;
    try {
      bytes = await this.deps.driver.get(referrersKey(this.deps.upstreamName, repo, subject));
    } catch (err) {
      this.deps.log.error("could not read a referrers record; asking the upstream", {
        repo,
        subject: formatDigest(subject),
        error: (err as Error).message,
      });
      return undefined;
    }
    return bytes === undefined ? undefined : parseRecord(bytes);
  }

  private async coalesce(key: string, fn: () => Promise<ReferrersAnswer>): Promise<ReferrersAnswer> {
    const flight = this.deps.flights.run(key, fn);
    try {
      return await flight.promise;
    } finally {
      if (flight.joined) this.deps.metrics.coalesced.inc({ kind: "referrers" });
    }
  }
}

/** What the HTTP layer sends for an answer: the index (filtered when asked) and its headers. */
export function answerReferrers(
  a: ReferrersAnswer,
  artifactType: string | undefined,
): { body: Buffer; headers: Record<string, string | number> } {
  const body = referrersIndex(filterByArtifactType(a.manifests, artifactType));
  const headers: Record<string, string | number> = {
    "content-type": OCI_INDEX,
    "content-length": body.length,
  };
  if (artifactType !== undefined) headers["oci-filters-applied"] = "artifactType";
  if (a.stale) headers.warning = '110 - "Response is Stale"';
  return { body, headers };
}

function cachedAnswer(rec: ReferrersRecord, stale: boolean): ReferrersAnswer {
  return { manifests: rec.manifests, source: "cache", stale, via: rec.via };
}

function parseRecord(bytes: Buffer): ReferrersRecord | undefined {
  try {
    const rec = JSON.parse(bytes.toString("utf8")) as Partial<ReferrersRecord> | null;
    if (
      typeof rec?.checkedAt !== "number" ||
      (rec.via !== "api" && rec.via !== "tag") ||
      !Array.isArray(rec.manifests)
    )
      return undefined;
    return { checkedAt: rec.checkedAt, via: rec.via, manifests: rec.manifests };
  } catch {
    // Torn or edited by something other than us: ask the upstream again.
    return undefined;
  }
}

/** The codes of a registry error body (read up to a few KiB); none when it is not one. */
async function errorCodes(res: UpstreamResponse): Promise<string[]> {
  let text = "";
  try {
    for await (const chunk of res.body) {
      text += (chunk as Buffer).toString("utf8");
      if (text.length > 4096) {
        res.body.destroy();
        return [];
      }
    }
    const errors = (JSON.parse(text) as { errors?: unknown } | null)?.errors;
    if (!Array.isArray(errors)) return [];
    return errors
      .map((e) => (e as { code?: unknown } | null)?.code)
      .filter((c): c is string => typeof c === "string");
  } catch {
    return [];
  }
}
