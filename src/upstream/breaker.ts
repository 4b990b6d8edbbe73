// A circuit breaker per upstream: remember that it is down, so requests stop waiting for it.
//
// Without one, an upstream that accepts connections and never answers makes every cached tag
// past its TTL wait the full upstream timeout before the stale answer goes out (30 s each).
// After `threshold` consecutive failures the breaker opens and requests fail at once; after
// `coolDownMs` one request is let through as a probe (half-open): its success closes the
// breaker, its failure opens it for another cool-down.
//
//   closed --threshold failures--> open --coolDownMs--> half-open --probe ok--> closed
//                                    ^                        |
//                                    +------probe failed------+
//
// Only outages count as failures (no answer, a timeout, 5xx, 429); any other answer, a 404
// included, is the upstream at work. An aborted request tells nothing either way.

import { RegistryError } from "../oci/errors.ts";

export type BreakerState = "closed" | "open" | "half-open";

/** What acquire() let through: an ordinary request, or the one probe of a half-open breaker. */
export type Permit = "normal" | "probe";

/** What one request told about the upstream. */
export type Outcome = "success" | "failure" | "abandon";

/** An answer that means the upstream cannot serve now; any other is the upstream at work. */
export function isOutage(status: number): boolean {
  return status === 429 || status >= 500;
}

/** What a request that threw tells: our own abort (a fill's limit, a client gone) tells nothing. */
export function errorOutcome(err: unknown, aborted: boolean): Outcome {
  if (aborted) return "abandon";
  const code = err instanceof RegistryError ? err.code : undefined;
  if (code === "UNAVAILABLE") return "failure"; // no answer, a timeout, a token service down
  if (code === "NAME_UNKNOWN" || code === "UNAUTHORIZED") return "success"; // it answered 401
  return "abandon"; // e.g. a refused redirect: the upstream answered, but not with its content
}

export interface BreakerOptions {
  /** Consecutive failures that open the breaker (default 3). */
  threshold?: number;
  /** How long an open breaker refuses before it lets a probe through (default 10 s). */
  coolDownMs?: number;
  /** The clock, injectable for tests. */
  now?: () => number;
  /** Called when the breaker opens (true) or closes (false). */
  onChange?: (open: boolean) => void;
}

export class Breaker {
  private current: BreakerState = "closed";
  private failures = 0;
  private openedAt = 0;
  private readonly threshold: number;
  private readonly coolDownMs: number;
  private readonly now: () => number;

  constructor(private readonly opts: BreakerOptions = {}) {
    this.threshold = opts.threshold ?? 3;
    this.coolDownMs = opts.coolDownMs ?? 10_000;
    this.now = opts.now ?? Date.now;
  }

  get state(): BreakerState {
    return this.current;
  }

  /** Whether the upstream counts as down: open, or half-open with its probe not yet back. */
  isOpen(): boolean {
    return this.current !== "closed";
  }

  /** Whether acquire() would refuse right now; changes nothing (a caller may check before queueing). */
  blocked(): boolean {
    if (this.current === "closed") return false;
    if (this.current === "half-open") return true;
    return this.now() < this.openedAt + this.coolDownMs;
  }

  /** Milliseconds until a probe may go, 0 when not open. */
  retryInMs(): number {
    if (this.current !== "open") return 0;
    return Math.max(0, this.openedAt + this.coolDownMs - this.now());
  }

  /** A permit to ask the upstream, or undefined when the breaker refuses. */
  acquire(): Permit | undefined {
    if (this.current === "closed") return "normal";
    if (this.current === "half-open" || this.now() < this.openedAt + this.coolDownMs) return undefined;
    this.current = "half-open";
    return "probe";
  }

  settle(permit: Permit, outcome: Outcome): void {
    if (outcome === "success") this.success();
    else if (outcome === "failure") this.failure(permit);
    else this.abandon(permit);
  }

  /** The upstream answered: whoever asked, it is up. */
  success(): void {
    this.failures = 0;
    if (this.current === "closed") return;
    this.current = "closed";
    this.opts.onChange?.(false);
  }

  failure(permit: Permit): void {
    if (this.current === "closed") {
      if (++this.failures >= this.threshold) this.open();
    } else if (this.current === "half-open" && permit === "probe") {
      this.open();
    }
    // A request from before the breaker opened that fails now tells nothing new.
  }

  /** The request ended without telling whether the upstream is up (aborted by its caller). */
  abandon(permit: Permit): void {
    // Let the next request probe in its place; the cool-down has already passed.
    if (this.current === "half-open" && permit === "probe") this.current = "open";
  }

  private open(): void {
    const wasClosed = this.current === "closed";
    this.current = "open";
    this.openedAt = this.now();
    this.failures = 0;
    if (wasClosed) this.opts.onChange?.(true);
  }
}
