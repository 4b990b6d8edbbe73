import type { Listing, RepoListing, TagListing } from "../maintenance/ls.ts";
import type { PullLog } from "../metrics/pull-log.ts";
import type { Flights } from "../coordination/coordinator.ts";

// The cached repositories with their tags, sizes and last pull, for GET /api/repositories and the
// status page. The listing itself is `regmirror ls`'s (read from the cache directory); this adds
// when each repository and tag was last pulled, and keeps the result for a few seconds: a listing
// reads every tag record and manifest, and a page left open in many browsers must not turn into
// a disk scan per request.

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
}

export class Repositories {
  private cached: { at: number; listing: Listing } | undefined;

  /** `walks` merges concurrent walks of the cache directory (start.ts's coordinator). */
  constructor(
    private readonly list: () => Promise<Listing>,
    private readonly pulls: PullLog,
    private readonly walks: Flights<Listing>,
    private readonly ttlMs = LISTING_TTL_MS,
  ) {}

  async summary(): Promise<RepositoriesSummary> {
    const listing = await this.listing();
    return {
      generatedAt: new Date().toISOString(),
      repositories: listing.repositories.map((r) => this.withPulls(r)),
      cache: listing.cache,
    };
  }

  /** After a purge or gc through the admin API: the next summary reads the cache again. */
  invalidate(): void {
    this.cached = undefined;
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
