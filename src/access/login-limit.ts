import { LRUCache } from "lru-cache";
import { atMost } from "../lru-bound.ts";

// Failed logins per client address: more than `max` within `windowMs` and the address must wait
// until the oldest of them leaves the window. Each failure cost a bcrypt check; without a limit
// one client can guess passwords as fast as our CPU allows.
//
// Checks still running count against the limit as if they will fail, so a client cannot fire a
// thousand guesses at once before the first failure is recorded. A successful login does not
// clear the count: a guesser that hits once would otherwise get a fresh budget.

export class FailedLogins {
  /** Per address: when each recent failure happened (oldest first) and checks in flight. */
  private readonly byClient: LRUCache<string, { failures: number[]; pending: number }>;

  constructor(
    private readonly max: number,
    private readonly windowMs: number,
    private readonly now: () => number = Date.now,
  ) {
    // Bounded, so a flood from many addresses cannot grow it without end; forgetting the least
    // recently seen addresses first only ever errs towards letting a login be checked.
    this.byClient = new LRUCache(atMost(50_000));
  }

  /**
   * Starts a check for `client`: undefined and a slot taken when it may log in now, else the
   * seconds it must wait (for Retry-After). Call `end` with the outcome once the check is done.
   */
  begin(client: string): number | undefined {
    const wait = this.retryAfter(client);
    if (wait !== undefined) return wait;
    const entry = this.byClient.get(client) ?? { failures: [], pending: 0 };
    entry.pending++;
    this.byClient.set(client, entry);
    return undefined;
  }

  /** The seconds `client` must wait before its next login, or undefined when it may log in. */
  retryAfter(client: string): number | undefined {
    const entry = this.byClient.get(client);
    if (!entry) return undefined;
    const now = this.now();
    while (entry.failures.length > 0 && entry.failures[0]! <= now - this.windowMs) entry.failures.shift();
    if (entry.failures.length + entry.pending < this.max) return undefined;
    const oldest = entry.failures[0];
    // Blocked only by checks still running: those end within a second or so.
    return oldest === undefined ? 1 : Math.max(1, Math.ceil((oldest + this.windowMs - now) / 1000));
  }

  /** A failure another worker saw (they share the limit). */
  failedElsewhere(client: string): void {
    const entry = this.byClient.get(client) ?? { failures: [], pending: 0 };
    entry.failures.push(this.now());
    this.byClient.set(client, entry);
  }

  end(client: string, ok: boolean): void {
    const entry = this.byClient.get(client) ?? { failures: [], pending: 1 };
    entry.pending = Math.max(0, entry.pending - 1);
    if (!ok) entry.failures.push(this.now());
    if (entry.pending === 0 && entry.failures.length === 0) this.byClient.delete(client);
    else this.byClient.set(client, entry);
  }
}
