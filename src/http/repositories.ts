import type { Listing, RepoListing, TagListing } from "../maintenance/ls.ts";
import type { PullLog } from "../metrics/pull-log.ts";
import type { Flights } from "../coordination/coordinator.ts";
import type { HostedListing, HostedRepoListing } from "../maintenance/hosted-ls.ts";

// The cached repositories with their tags, sizes and last pull, for GET /api/repositories and the
// status page. The listing itself is `regmirror ls`'s (read from the cache directory); this adds
// when each repository and tag was last pulled, and keeps the result for a few seconds: a listing
// reads every tag record and manifest, and a page left open in many browsers must not turn into
// a disk scan per request. The hosted repositories (hosted.repositories) are listed apart, with
// their tags and declared sizes (maintenance/hosted-ls.ts), and kept as briefly.

/** How fresh the listing must be: pulls show up within this time. */
const LISTING_TTL_MS = 5_000;

/**
 * "request": a client asked for the tag since this process started (exact). "tag-check": no
 * such request is known, so this is when the upstream last confirmed the tag, which a pull after
 * the tag's TTL causes: a lower bound on the last pull, and the best answer after a restart.
 */
export interface LastPull {
  at: string;
  source: "request" | "tag-check";
}

export interface TagSummary extends TagListing {
  lastPull: LastPull | null;
}

export interface RepoSummary extends Omit<RepoListing, "tags"> {
  tags: TagSummary[];
  lastPull: LastPull | null;
}

export interface RepositoriesSummary {
  generatedAt: string;
  repositories: RepoSummary[];
  cache: Listing["cache"];
  /** The hosted repositories, apart from the cache's; null when none are configured. */
  hosted: HostedRepoListing[] | null;
}

export class Repositories {
  private cached: { at: number; listing: Listing } | undefined;
  private hostedCached: { at: number; listing: Promise<HostedListing> } | undefined;

  /** `walks` merges concurrent walks of the cache directory (start.ts's coordinator). */
  constructor(
    private readonly list: () => Promise<Listing>,
    private readonly pulls: PullLog,
    private readonly walks: Flights<Listing>,
    private readonly ttlMs = LISTING_TTL_MS,
    /** The hosted repositories' listing; absent when none are configured. */
    private readonly listHosted?: () => Promise<HostedListing>,
  ) {}

  async summary(): Promise<RepositoriesSummary> {
    const [listing, hosted] = await Promise.all([this.listing(), this.hosted()]);
    return {
      generatedAt: new Date().toISOString(),
      repositories: listing.repositories.map((r) => this.withPulls(r)),
      cache: listing.cache,
      hosted: hosted?.repositories ?? null,
    };
  }

  /** After a purge, gc or delete through the admin API: the next summary reads the storage again. */
  invalidate(): void {
    this.cached = undefined;
    this.hostedCached = undefined;
  }

  /** Concurrent page loads share one walk: the promise is what is kept. */
  private hosted(): Promise<HostedListing> | undefined {
    if (!this.listHosted) return undefined;
    const c = this.hostedCached;
    if (c && Date.now() - c.at < this.ttlMs) return c.listing;
    const listing = this.listHosted();
    const entry = { at: Date.now(), listing };
    this.hostedCached = entry;
    // A failed walk is not kept: the next request tries again.
    listing.catch(() => {
      if (this.hostedCached === entry) this.hostedCached = undefined;
    });
    return listing;
  }

  private async listing(): Promise<Listing> {
    if (this.cached && Date.now() - this.cached.at < this.ttlMs) return this.cached.listing;
    // Concurrent page loads share one walk of the cache directory.
    return this.walks.run("listing", async () => {
      const listing = await this.list();
      this.cached = { at: Date.now(), listing };
      return listing;
    }).promise;
  }

  private withPulls(r: RepoListing): RepoSummary {
    const tags = r.tags.map((t): TagSummary => ({
      ...t,
      lastPull: pick(this.pulls.lastTag(r.upstream, r.name, t.tag), t.entries),
    }));
    return {
      ...r,
      tags,
      lastPull: pick(
        this.pulls.last(r.upstream, r.name),
        tags.flatMap((t) => t.entries),
      ),
    };
  }
}

function pick(requested: number | undefined, entries: TagListing["entries"]): LastPull | null {
  if (requested !== undefined) return { at: new Date(requested).toISOString(), source: "request" };
  // ISO strings of one format sort as the times they name.
  const checked = entries.map((e) => e.checkedAt).sort();
  const latest = checked[checked.length - 1];
  return latest === undefined ? null : { at: latest, source: "tag-check" };
}
