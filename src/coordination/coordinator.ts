// "One thing in flight per key", as one seam. Every module that merges concurrent work, keeps
// others off a piece of work, or tells its peers that something changed goes through these
// interfaces, so that the scope they cover can grow without touching the modules: today one
// process (in-process.ts), next the worker processes of one host, then every host sharing a Redis.
//
// The contracts below are what every implementation must keep; coordination.suite.ts (test/unit)
// checks them, and each implementation runs it.
//
// Values and events that cross the scope must survive v8's structured serialization (what Node's
// IPC does with `serialization: "advanced"`): plain objects, arrays, strings, numbers, booleans
// and Buffers (a manifest answer carries its bytes as a Buffer) — no class instances, functions
// or symbols. A wider scope hands them to another process as copies; the in-process
// implementation hands out the very object, which is also allowed; callers must not rely on either.

/** A call to Flights.run: the shared promise, and whether this caller joined a flight already in the air. */
export interface Flight<T> {
  promise: Promise<T>;
  /**
   * True for callers that did not start the run (for the coalesced metrics). In a wider scope
   * whether another member runs it is known only once the scope has answered: read it after
   * `promise` settles to be exact (before, the first caller of a member reads false).
   */
  readonly joined: boolean;
  /**
   * Resolves when the flight has ended — after its value and every hold — with "done", or with
   * "failed" when the run or a hold rejected or (wider scopes) the member running it went away.
   * Never rejects. A follower of held work (a blob fill landing in another worker) learns here
   * whether the work really finished.
   */
  ended: Promise<"done" | "failed">;
}

/** Handed to the run of a flight. */
export interface FlightRun {
  /**
   * Keeps the flight joinable after its value is known, until `done` settles (fulfilled or
   * rejected alike): a blob fill's value (the fill) is there once the upstream answers, but
   * latecomers must join it until its last byte has landed. Call it before the run's promise
   * settles; later calls are ignored. A run whose promise rejects ends at once, holds or not.
   */
  holdUntil(done: Promise<unknown>): void;
}

/**
 * Merges concurrent runs of one kind of work: while a run for a key is in flight, every other
 * caller for that key gets its promise instead of starting another.
 *
 * - Nothing is remembered: once a flight has ended, the next call for its key runs afresh.
 *   Keeping results is the cache's job, not this one's.
 * - A rejected run ends its flight at once: every caller that joined it gets the same rejection,
 *   and the next call (even one made from a rejection handler) runs afresh.
 * - No caller can abort a flight, because others may have joined it: a caller that gives up
 *   just stops waiting. A run bounds its own time (a blob fill has FillWatch); in a wider scope
 *   a run whose member goes away (its process died) ends then: callers still waiting reject,
 *   and `ended` says "failed" to those that had the value.
 */
export interface Flights<T> {
  /** Joins the flight for `key`, or starts one with `fn`. */
  run(key: string, fn: (run: FlightRun) => Promise<T>): Flight<T>;
  /**
   * Joins the flight for `key` if there is one; never starts one (a blob HEAD). Asynchronous
   * because in a wider scope only the scope knows which flights are in the air.
   */
  join(key: string): Promise<Flight<T> | undefined>;
}

/** Exclusive ownership of a key, for a while (zot's redis_lock: TryLock, Refresh, Unlock). */
export interface Lease {
  readonly key: string;
  /**
   * Extends the lease to its ttl from now. False when it was already lost (it expired and may
   * have been taken by another owner, or it was released): the owner must stop the work.
   */
  renew(): Promise<boolean>;
  /** Gives the key up. Releasing a lease that was lost or already released does nothing. */
  release(): Promise<void>;
}

/**
 * Leases rather than locks: an owner that dies (or stops renewing) loses its lease by itself
 * when the ttl runs out, so no key stays taken for ever.
 */
export interface Leases {
  /** The lease on `key` for `ttlMs`, or undefined when someone else holds it (never waits). */
  acquire(key: string, ttlMs: number): Promise<Lease | undefined>;
}

/**
 * Broadcasts within the scope: every subscriber of every member (the publisher's own included)
 * receives each event published after it subscribed, at most once. For invalidations — a purge
 * or gc that every worker must see — not for work that must not be lost.
 */
export interface Events<E> {
  /** Resolves once the event is handed on. No handler runs during the publish() call itself. */
  publish(event: E): Promise<void>;
  /** Returns the unsubscribe function. A handler that throws is reported; the others still run. */
  subscribe(handler: (event: E) => void): () => void;
}

/**
 * The scope's coordination, built once in start.ts (the composition root) and handed down. Each name is one kind of
 * key (or event): modules choose names that cannot meet ("manifests/docker.io", "blob-fills"),
 * and one name is used for one kind of value only. The same name in two members of a scope
 * (two workers) is the same set of keys: that is the point.
 */
export interface Coordinator {
  flights<T>(name: string): Flights<T>;
  leases(name: string): Leases;
  events<E>(name: string): Events<E>;
  /** Releases this member's leases and drops its subscribers; flights in the air run on. */
  close(): Promise<void>;
}
