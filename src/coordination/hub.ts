// The coordination scope of one host's worker processes, kept in the cluster primary: the
// primary forks the workers, sees each one exit, and so is the one place that can tell a dead
// worker's flights and leases from slow ones. Each worker's WorkerCoordinator (member.ts) asks
// it over the worker's IPC pipe (protocol.ts); the primary's own member talks to it the same way.
//
// The hub decides and relays; it runs nothing. Per flight it knows the owner (the member whose
// run it is), the members that joined, and the value once the owner has it (for members that
// join a held flight). Leases live here with the hub's clock, so members' clocks never matter.
import { WorkerCoordinator } from "./member.ts";
import {
  MemberGoneError,
  toWire,
  unwrap,
  wrap,
  type Channel,
  type Ended,
  type Request,
  type Response,
  type ToHub,
  type ToMember,
} from "./protocol.ts";
import type { Coordinator } from "./coordinator.ts";

export { MemberGoneError, type Channel } from "./protocol.ts";

export interface HubOptions {
  /** The clock leases expire by (tests move it on by hand). */
  now?: () => number;
  /** Told of a message the hub could not handle or could not send. */
  onError?: (err: unknown) => void;
}

interface HubFlight {
  id: number;
  /** Where it is filed in `flights`. */
  slot: string;
  owner: string;
  /** Members that joined: each is told the value (if it joined before it was known) and the end. */
  joiners: Set<string>;
  value?: { v: unknown };
}

interface HubLease {
  token: number;
  expiresAt: number;
  member: string;
}

/** The primary's own member, attached under this id. */
const LOCAL = "primary";

export class CoordinationHub {
  /** The primary's own member of the scope (a Coordinator like the workers'). */
  readonly local: Coordinator;
  private readonly members = new Map<string, { channel: Channel; off: () => void }>();
  /** In the air, by name and key ("name\0key") and by id. */
  private readonly flights = new Map<string, HubFlight>();
  private readonly flightsById = new Map<number, HubFlight>();
  private readonly leases = new Map<string, Map<string, HubLease>>();
  private nextFlight = 0;
  private nextToken = 0;
  private readonly now: () => number;
  private readonly onError: (err: unknown) => void;

  constructor(opts: HubOptions = {}) {
    this.now = opts.now ?? Date.now;
    this.onError = opts.onError ?? (() => undefined);
    const [hubEnd, memberEnd] = loopback();
    this.attach(LOCAL, hubEnd);
    this.local = new WorkerCoordinator(memberEnd, { onError: this.onError });
  }

  /** A worker joined; `id` is unique for the life of the hub ("primary" is the hub's own). */
  attach(id: string, channel: Channel): void {
    if (this.members.has(id)) throw new Error(`coordination member ${id} is already attached`);
    const off = channel.onMessage((raw) => {
      const msg = unwrap<ToHub>(raw);
      if (!msg) return;
      try {
        this.receive(id, msg);
      } catch (err) {
        this.onError(err);
      }
    });
    this.members.set(id, { channel, off });
  }

  /**
   * The worker is gone (it exited or was killed): every flight it was running ends — joiners
   * still waiting for the value reject with a MemberGoneError, joiners already holding the value
   * see ended = "failed"; its leases are released at once; it receives no more events.
   */
  detach(id: string): void {
    const member = this.members.get(id);
    if (!member) return;
    member.off();
    this.members.delete(id);
    this.releaseLeases(id);
    for (const flight of [...this.flightsById.values()]) {
      flight.joiners.delete(id);
      if (flight.owner !== id) continue;
      this.endFlight(flight);
      if (flight.value) this.tellJoiners(flight, { op: "ended", flight: flight.id, outcome: "failed" });
      else this.tellJoiners(flight, { op: "fail", flight: flight.id, error: toWire(new MemberGoneError()) });
    }
  }

  /** Stops listening to every member and forgets all state; members' requests go unanswered. */
  close(): void {
    for (const { off } of this.members.values()) off();
    this.members.clear();
    this.flights.clear();
    this.flightsById.clear();
    this.leases.clear();
  }

  private receive(from: string, msg: ToHub): void {
    switch (msg.op) {
      case "run":
      case "join":
        return this.answer(from, msg, this.flightFor(from, msg.op, msg.name, msg.key));
      case "value":
      case "fail":
      case "end":
        return this.report(from, msg);
      case "acquire":
      case "renew":
      case "release":
      case "close":
        return this.answer(from, msg, this.lease(from, msg));
      case "publish":
        for (const id of this.members.keys())
          this.send(id, { op: "event", name: msg.name, event: msg.event });
        return this.answer(from, msg, {});
    }
  }

  /** run: join the flight in the air or give `from` the run; join: join it or answer none. */
  private flightFor(from: string, op: "run" | "join", name: string, key: string): Partial<Response> {
    const slot = `${name}\0${key}`;
    const current = this.flights.get(slot);
    if (current) {
      current.joiners.add(from);
      return { flight: current.id, owner: false, value: current.value };
    }
    if (op === "join") return {};
    const flight: HubFlight = { id: ++this.nextFlight, slot, owner: from, joiners: new Set() };
    this.flights.set(slot, flight);
    this.flightsById.set(flight.id, flight);
    return { flight: flight.id, owner: true };
  }

  /** What the owner of a flight tells: its value, its rejection, its end. */
  private report(from: string, msg: Extract<ToHub, { op: "value" | "fail" | "end" }>): void {
    const flight = this.flightsById.get(msg.flight);
    if (!flight || flight.owner !== from) return;
    if (msg.op === "value") {
      flight.value = { v: msg.value };
      this.tellJoiners(flight, msg);
      return;
    }
    this.endFlight(flight);
    if (msg.op === "fail") this.tellJoiners(flight, msg);
    else this.tellJoiners(flight, { op: "ended", flight: flight.id, outcome: msg.outcome satisfies Ended });
  }

  private endFlight(flight: HubFlight): void {
    this.flights.delete(flight.slot);
    this.flightsById.delete(flight.id);
  }

  private tellJoiners(flight: HubFlight, notice: ToMember): void {
    for (const id of flight.joiners) this.send(id, notice);
  }

  private lease(
    from: string,
    msg: Extract<Request, { op: "acquire" | "renew" | "release" | "close" }>,
  ): Partial<Response> {
    if (msg.op === "close") {
      this.releaseLeases(from);
      return {};
    }
    let held = this.leases.get(msg.name);
    if (!held) this.leases.set(msg.name, (held = new Map()));
    const current = held.get(msg.key);
    const live = current !== undefined && current.expiresAt > this.now();
    switch (msg.op) {
      case "acquire": {
        if (live) return {};
        // A token per grant: an owner whose lease expired and was taken can neither renew nor
        // release the new owner's.
        const token = ++this.nextToken;
        held.set(msg.key, { token, expiresAt: this.now() + msg.ttlMs, member: from });
        return { token };
      }
      case "renew": {
        const ok = live && current.token === msg.token;
        if (ok) current.expiresAt = this.now() + msg.ttlMs;
        return { ok };
      }
      case "release":
        if (current?.token === msg.token) held.delete(msg.key);
        return {};
    }
  }

  private releaseLeases(member: string): void {
    for (const held of this.leases.values()) {
      for (const [key, lease] of held) if (lease.member === member) held.delete(key);
    }
  }

  private answer(to: string, req: Request, res: Partial<Response>): void {
    this.send(to, { ...res, op: "res", id: req.id });
  }

  private send(to: string, msg: ToMember): void {
    try {
      this.members.get(to)?.channel.send(wrap(msg));
    } catch (err) {
      // A worker that is exiting: its detach() follows.
      this.onError(err);
    }
  }
}

/** Two ends of an in-process pipe for the primary's own member, async as a real pipe is. */
function loopback(): [Channel, Channel] {
  const handlers: [Set<(msg: unknown) => void>, Set<(msg: unknown) => void>] = [new Set(), new Set()];
  const end = (mine: 0 | 1): Channel => ({
    send: (msg) => void setImmediate(() => handlers[1 - mine]!.forEach((h) => h(msg))),
    onMessage: (handler) => {
      const own = (msg: unknown) => handler(msg);
      handlers[mine].add(own);
      return () => void handlers[mine].delete(own);
    },
  });
  return [end(0), end(1)];
}
