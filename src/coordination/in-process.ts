import type { Coordinator, Events, Flight, FlightRun, Flights, Lease, Leases } from "./coordinator.ts";

// The coordinator whose scope is this process: a plain Map of promises per name.
//
// Not lru-cache's fetch(), though it merges concurrent loads too: it is a cache, and a flight
// must remember nothing. Its resolved value is stored (we would delete it a tick later, and a
// caller in between would get it as a hit); an entry in flight can be evicted at `max` or
// deleted, which aborts the load for everyone waiting on it; the first caller's signal decides
// for all; a load that resolves to undefined counts as none; and nothing there can keep a
// flight joinable after its value is known (holdUntil, for blob fills). The Map is exact.

export interface InProcessOptions {
  /** The clock leases expire by (tests move it on by hand). */
  now?: () => number;
  /** Told of an error thrown by an event handler (the other handlers still run). */
  onError?: (err: unknown) => void;
}

export class InProcessCoordinator implements Coordinator {
  private readonly flightMaps = new Map<string, Map<string, Entry<unknown>>>();
  private readonly leaseMaps = new Map<string, LocalLeases>();
  private readonly eventBuses = new Map<string, LocalEvents<unknown>>();
  private readonly now: () => number;
  private readonly onError: (err: unknown) => void;

  constructor(opts: InProcessOptions = {}) {
    this.now = opts.now ?? Date.now;
    this.onError = opts.onError ?? (() => undefined);
  }

  flights<T>(name: string): Flights<T> {
    let inflight = this.flightMaps.get(name);
    if (!inflight) {
      inflight = new Map();
      this.flightMaps.set(name, inflight);
    }
    return new LocalFlights<T>(inflight as Map<string, Entry<T>>);
  }

  leases(name: string): Leases {
    let leases = this.leaseMaps.get(name);
    if (!leases) {
      leases = new LocalLeases(this.now);
      this.leaseMaps.set(name, leases);
    }
    return leases;
  }

  events<E>(name: string): Events<E> {
    let bus = this.eventBuses.get(name);
    if (!bus) {
      bus = new LocalEvents(this.onError);
      this.eventBuses.set(name, bus);
    }
    return bus as Events<E>;
  }

  async close(): Promise<void> {
    for (const leases of this.leaseMaps.values()) leases.releaseAll();
    for (const bus of this.eventBuses.values()) bus.unsubscribeAll();
  }
}

/** A flight in the air: what every caller of its key shares. */
type Entry<T> = Pick<Flight<T>, "promise" | "ended">;

class LocalFlights<T> implements Flights<T> {
  constructor(private readonly inflight: Map<string, Entry<T>>) {}

  run(key: string, fn: (run: FlightRun) => Promise<T>): Flight<T> {
    const existing = this.inflight.get(key);
    if (existing) return { ...existing, joined: true };
    const holds: Array<Promise<unknown>> = [];
    let settled = false;
    const run: FlightRun = { holdUntil: (done) => void (settled || holds.push(done)) };
    // async: a run that throws before its first await rejects like any other.
    const promise = (async () => fn(run))();
    const end = () => {
      if (this.inflight.get(key) === entry) this.inflight.delete(key);
    };
    // Attached before any caller can await the promise, so the key is free before their
    // continuations run: a caller that retries on a rejection starts a fresh run.
    const ended = promise.then(
      () => {
        settled = true;
        if (holds.length === 0) {
          end();
          return "done" as const;
        }
        return Promise.allSettled(holds).then((results) => {
          end();
          return results.some((r) => r.status === "rejected") ? ("failed" as const) : ("done" as const);
        });
      },
      () => {
        settled = true;
        end();
        return "failed" as const;
      },
    );
    const entry: Entry<T> = { promise, ended };
    this.inflight.set(key, entry);
    return { promise, ended, joined: false };
  }

  async join(key: string): Promise<Flight<T> | undefined> {
    const entry = this.inflight.get(key);
    return entry && { ...entry, joined: true };
  }
}

class LocalLeases implements Leases {
  /** Per key, the holder's token and when the lease runs out. */
  private readonly held = new Map<string, { token: symbol; expiresAt: number }>();

  constructor(private readonly now: () => number) {}

  async acquire(key: string, ttlMs: number): Promise<Lease | undefined> {
    const current = this.held.get(key);
    if (current && current.expiresAt > this.now()) return undefined;
    // A token per grant, as zot's random lock value: an owner whose lease expired and was taken
    // can neither renew nor release the new owner's.
    const token = Symbol(key);
    this.held.set(key, { token, expiresAt: this.now() + ttlMs });
    const mine = () => {
      const entry = this.held.get(key);
      return entry?.token === token && entry.expiresAt > this.now() ? entry : undefined;
    };
    return {
      key,
      renew: async () => {
        const entry = mine();
        if (entry) entry.expiresAt = this.now() + ttlMs;
        return entry !== undefined;
      },
      release: async () => {
        if (this.held.get(key)?.token === token) this.held.delete(key);
      },
    };
  }

  releaseAll(): void {
    this.held.clear();
  }
}

class LocalEvents<E> implements Events<E> {
  private readonly handlers = new Set<(event: E) => void>();

  constructor(private readonly onError: (err: unknown) => void) {}

  async publish(event: E): Promise<void> {
    // Those subscribed now, and never inside publish(): as over a wire, where the publisher
    // cannot see its subscribers run.
    const handlers = [...this.handlers];
    await new Promise<void>((resolve) => setImmediate(resolve));
    for (const handler of handlers) {
      if (!this.handlers.has(handler)) continue; // unsubscribed meanwhile
      try {
        handler(event);
      } catch (err) {
        this.onError(err);
      }
    }
  }

  subscribe(handler: (event: E) => void): () => void {
    // Wrapped, so the same function subscribed twice is two subscriptions, each removed once.
    const own = (event: E) => handler(event);
    this.handlers.add(own);
    return () => void this.handlers.delete(own);
  }

  unsubscribeAll(): void {
    this.handlers.clear();
  }
}
