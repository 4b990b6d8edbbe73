// Merges identical work in flight: the first caller for a key runs `fn`, everyone who asks while
// it runs gets the same promise. Nothing is remembered after it settles (the cache does that).

export class SingleFlight<T> {
  private readonly inflight = new Map<string, Promise<T>>();

  /** `joined` is true for callers that did not start the work (for the coalesced metric). */
  run(key: string, fn: () => Promise<T>): { promise: Promise<T>; joined: boolean } {
    const existing = this.inflight.get(key);
    if (existing) return { promise: existing, joined: true };
    const promise = fn().finally(() => this.inflight.delete(key));
    this.inflight.set(key, promise);
    return { promise, joined: false };
  }
}
