// A worker's member of the host-wide scope: the Coordinator each worker hands down, asking the
// CoordinationHub in the primary (hub.ts) over the worker's IPC pipe (protocol.ts).
//
// Flights coalesce here first: the callers of one key in this worker share one entry and one
// round trip, so a burst of requests for a blob costs the pipe two messages, not one per request.
// The hub then says whether this worker runs the flight or follows another's.
import type { Coordinator, Events, FlightRun, Flights, Lease, Leases } from "./coordinator.ts";
import { flightOf, newEntry, type FlightEntry } from "./flight-entry.ts";
import {
  fromWire,
  toWire,
  unwrap,
  wrap,
  type Channel,
  type Ended,
  type Notice,
  type Request,
  type Response,
  type ToMember,
} from "./protocol.ts";

export interface WorkerOptions {
  /** Told of an error thrown by an event handler (the other handlers still run). */
  onError?: (err: unknown) => void;
}

/** A request before it has an id. */
type Ask = { [Op in Request["op"]]: Omit<Extract<Request, { op: Op }>, "id"> }[Request["op"]];

export class WorkerCoordinator implements Coordinator {
  private nextId = 0;
  private readonly pending = new Map<number, (res: Response) => void>();
  /** Per flights name, this worker's entries by key, while their flight is in the air. */
  private readonly entries = new Map<string, Map<string, FlightEntry>>();
  /** Entries of flights another member runs, by the hub's flight id: what the hub's notices settle. */
  private readonly following = new Map<number, { entry: FlightEntry; drop: () => void }>();
  private readonly handlers = new Map<string, Set<(event: unknown) => void>>();
  private readonly onError: (err: unknown) => void;

  constructor(
    private readonly channel: Channel,
    opts: WorkerOptions = {},
  ) {
    this.onError = opts.onError ?? (() => undefined);
    // Never removed: flights in the air run on after close(), as the contract says.
    channel.onMessage((raw) => {
      const msg = unwrap<ToMember>(raw);
      if (msg) this.receive(msg);
    });
  }

  flights<T>(name: string): Flights<T> {
    let entries = this.entries.get(name);
    if (!entries) this.entries.set(name, (entries = new Map()));
    const map = entries;
    return {
      run: (key, fn) => {
        const local = map.get(key);
        if (local) return flightOf<T>(local, true);
        const entry = this.enter(map, key);
        const drop = () => void (map.get(key) === entry && map.delete(key));
        try {
          // Handled as it arrives, not a microtask later: the owner's notice can come in the
          // same read from the pipe, right behind this answer, and must find us following.
          this.request({ op: "run", name, key }, (res) =>
            res.owner ? this.own(entry, res.flight!, drop, fn) : this.follow(entry, res, drop),
          );
        } catch (err) {
          // The pipe to the primary is gone (this worker is about to exit).
          drop();
          entry.reject(err);
          entry.end("failed");
        }
        return flightOf<T>(entry);
      },
      join: (key) => {
        const local = map.get(key);
        if (local) return Promise.resolve(flightOf<T>(local, true));
        return new Promise((resolve) =>
          this.request({ op: "join", name, key }, (res) => {
            if (res.flight === undefined) return resolve(undefined);
            // A local run() may have entered the key meanwhile; the hub has it join the same flight.
            const entered = map.get(key);
            if (entered) return resolve(flightOf<T>(entered, true));
            const entry = this.enter(map, key);
            this.follow(entry, res, () => void (map.get(key) === entry && map.delete(key)));
            resolve(flightOf<T>(entry, true));
          }),
        );
      },
    };
  }

  leases(name: string): Leases {
    return {
      acquire: async (key, ttlMs) => {
        const { token } = await this.ask({ op: "acquire", name, key, ttlMs });
        if (token === undefined) return undefined;
        const lease: Lease = {
          key,
          renew: async () => (await this.ask({ op: "renew", name, key, token, ttlMs })).ok === true,
          release: async () => void (await this.ask({ op: "release", name, key, token })),
        };
        return lease;
      },
    };
  }

  events<E>(name: string): Events<E> {
    return {
      publish: async (event) => void (await this.ask({ op: "publish", name, event })),
      subscribe: (handler) => {
        let set = this.handlers.get(name);
        if (!set) this.handlers.set(name, (set = new Set()));
        // Wrapped, so the same function subscribed twice is two subscriptions, each removed once.
        const own = (event: unknown) => handler(event as E);
        set.add(own);
        return () => void set.delete(own);
      },
    };
  }

  /** Releases this member's leases (at the hub) and drops its subscribers. */
  async close(): Promise<void> {
    this.handlers.clear();
    await this.ask({ op: "close" });
  }

  private enter(map: Map<string, FlightEntry>, key: string): FlightEntry {
    const entry = newEntry();
    map.set(key, entry);
    return entry;
  }

  /** The hub gave this worker the run: run it here and report value, rejection and end. */
  private own<T>(
    entry: FlightEntry,
    flight: number,
    drop: () => void,
    fn: (run: FlightRun) => Promise<T>,
  ): void {
    const holds: Array<Promise<unknown>> = [];
    let settled = false;
    const run: FlightRun = { holdUntil: (done) => void (settled || holds.push(done)) };
    const fail = (err: unknown) => {
      // The key is free (here, then at the hub: the pipe keeps order) before any caller's
      // rejection handler runs, so a retry starts afresh.
      drop();
      this.tell({ op: "fail", flight, error: toWire(err) });
      entry.reject(err);
      entry.end("failed");
    };
    (async () => fn(run))().then((value) => {
      settled = true;
      const last = holds.length === 0;
      try {
        this.channel.send(wrap({ op: "value", flight, value, last }));
      } catch (err) {
        // A value that cannot cross (not structured-clonable) is a bug of the caller's: fail
        // it everywhere rather than only in the other workers.
        return fail(err);
      }
      const finish = (outcome: Ended) => {
        drop();
        this.tell({ op: "end", flight, outcome });
        entry.end(outcome);
      };
      // Unheld, the flight ends before any caller sees the value: one that asks again then
      // starts afresh, as in-process.
      if (last) finish("done");
      entry.resolve(value);
      if (!last) {
        void Promise.allSettled(holds).then((results) =>
          finish(results.some((r) => r.status === "rejected") ? "failed" : "done"),
        );
      }
    }, fail);
  }

  /** Another member runs the flight: the hub's notices settle the entry. */
  private follow(entry: FlightEntry, res: Response, drop: () => void): void {
    entry.joined = true;
    this.following.set(res.flight!, { entry, drop });
    if (res.value) entry.resolve(res.value.v);
  }

  private receive(msg: ToMember): void {
    if (msg.op === "res") {
      const resolve = this.pending.get(msg.id);
      this.pending.delete(msg.id);
      resolve?.(msg);
    } else if (msg.op === "event") {
      this.deliver(msg.name, msg.event);
    } else {
      this.settle(msg);
    }
  }

  private settle(notice: Exclude<Notice, { op: "event" }>): void {
    const followed = this.following.get(notice.flight);
    if (!followed) return;
    const { entry, drop } = followed;
    if (notice.op === "value") {
      entry.resolve(notice.value);
      // Unheld: over here with its value, so a caller that asks again at once starts afresh
      // rather than joining a flight whose end is still on its way. The end then finds nothing.
      if (!notice.last) return;
    }
    this.following.delete(notice.flight);
    drop();
    if (notice.op === "value") {
      entry.end("done");
    } else if (notice.op === "fail") {
      entry.reject(fromWire(notice.error));
      entry.end("failed");
    } else {
      entry.end(notice.outcome);
    }
  }

  private deliver(name: string, event: unknown): void {
    for (const handler of [...(this.handlers.get(name) ?? [])]) {
      try {
        handler(event);
      } catch (err) {
        this.onError(err);
      }
    }
  }

  private ask(ask: Ask): Promise<Response> {
    return new Promise((resolve) => this.request(ask, resolve));
  }

  /** Sends a request; `onAnswer` runs as the answer is received, before the next message. */
  private request(ask: Ask, onAnswer: (res: Response) => void): void {
    const id = ++this.nextId;
    this.pending.set(id, onAnswer);
    this.channel.send(wrap({ ...ask, id } as Request));
  }

  private tell(msg: Parameters<typeof wrap>[0]): void {
    try {
      this.channel.send(wrap(msg));
    } catch (err) {
      this.onError(err);
    }
  }
}
