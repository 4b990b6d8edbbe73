import { LRUCache } from "lru-cache";
import { atMost } from "../lru-bound.ts";

// When each repository and tag was last asked for by a client: a manifest request by tag (GET or
// HEAD), which is how every client starts a pull. In memory only: after a restart the status
// page falls back to the tag record's checkedAt until the next pull (see http/repositories.ts).
//
// Bounded, because the names come from clients: a request for a repository that does not exist
// is recorded too (it is recorded before the upstream is asked), and a client inventing names
// must not grow memory without end. The least recently pulled go first.

/** Enough for every tag of a large cache; ~100 bytes each. */
const MAX_TAGS = 50_000;
const MAX_REPOS = 20_000;

export class PullLog {
  private readonly tags: LRUCache<string, number>;
  private readonly repos: LRUCache<string, number>;

  constructor(opts: { maxTags?: number; maxRepos?: number } = {}) {
    this.tags = new LRUCache(atMost(opts.maxTags ?? MAX_TAGS));
    this.repos = new LRUCache(atMost(opts.maxRepos ?? MAX_REPOS));
  }

  /** A client asked for upstream/repo:tag now (or at `at`, ms since the epoch). */
  record(upstream: string, repo: string, tag: string, at = Date.now()): void {
    this.tags.set(`${upstream}/${repo}:${tag}`, at);
    this.repos.set(`${upstream}/${repo}`, at);
  }

  /** The last pull of any tag of the repository, ms since the epoch; undefined if none since the start. */
  last(upstream: string, repo: string): number | undefined {
    // peek: reading for the status page must not count as use in the LRU order.
    return this.repos.peek(`${upstream}/${repo}`);
  }

  /** The last pull of this tag, ms since the epoch; undefined if none since the start. */
  lastTag(upstream: string, repo: string, tag: string): number | undefined {
    return this.tags.peek(`${upstream}/${repo}:${tag}`);
  }
}
