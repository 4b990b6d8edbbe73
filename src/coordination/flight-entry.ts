import type { Flight } from "./coordinator.ts";
import type { Ended } from "./protocol.ts";

// A member's share of a flight whose owner may be elsewhere (another worker through the hub,
// another replica through Redis): what this member's callers of the key hold until the flight
// settles. Shared by member.ts and redis-flights.ts.

export interface FlightEntry {
  promise: Promise<unknown>;
  ended: Promise<Ended>;
  /** Known once the hub or Redis has answered: another member runs it. */
  joined: boolean;
  resolve(value: unknown): void;
  reject(err: unknown): void;
  end(outcome: Ended): void;
}

export function newEntry(): FlightEntry {
  let resolve!: (value: unknown) => void;
  let reject!: (err: unknown) => void;
  let end!: (outcome: Ended) => void;
  const promise = new Promise<unknown>((res, rej) => ((resolve = res), (reject = rej)));
  const ended = new Promise<Ended>((res) => (end = res));
  // Handled here, as the in-process flight's own reactions handle it: a caller that only
  // watches `ended` must not crash the process with an unhandled rejection.
  promise.catch(() => undefined);
  return { promise, ended, joined: false, resolve, reject, end };
}

/** What a caller gets; `joined` reads the entry, since the answer may come later. */
export function flightOf<T>(entry: FlightEntry, joinedHere = false): Flight<T> {
  return {
    promise: entry.promise as Promise<T>,
    ended: entry.ended,
    get joined() {
      return joinedHere || entry.joined;
    },
  };
}
