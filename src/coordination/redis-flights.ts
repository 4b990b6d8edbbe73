// Flights across hosts, through Redis: the part of RedisCoordinator (redis.ts) that merges runs.
//
// Per flight, two keys and one channel (K = prefix + "flight:" + name + ":" + key):
//   K (string)           the claim: the owner's token ("memberId/nonce#n"), PX leaseTtlMs, renewed
//                        by the owner every third of that until the flight ends;
//   prefix + "value:…"   the value, v8-serialized, once the owner has it (for late joiners);
//   channel K            the owner's notices: value, fail (with the error), end (with the outcome).
// Every member is subscribed to all flight channels (one pattern, made when the connection is
// ready), so a member never has to subscribe before asking; notices carry the owner's token, and
// the owner publishes them in the same script that changes the keys, so what a joiner reads and
// what it hears agree.
//
// Callers of one key in this member coalesce here first (as member.ts): one entry, one round trip.
import { deserialize, serialize } from "node:v8";
import type { Flight, FlightRun, Flights } from "./coordinator.ts";
import { flightOf, newEntry, type FlightEntry } from "./flight-entry.ts";
import { fromWire, MemberGoneError, toWire, type Ended, type WireError } from "./protocol.ts";

/** What an owner publishes on its flight's channel. */
type Notice =
  // last: nothing holds the flight, its end follows at once (see member.ts on the workers' pipe).
  | { t: string; op: "value"; v: Buffer; last?: boolean }
  | { t: string; op: "fail"; error: WireError }
  | { t: string; op: "end"; outcome: Ended };

// enter(claim, value; token, ttl, claim?): "1" → claimed; [] → no flight; [owner, value?] → follow.
const ENTER = `
local owner = redis.call('GET', KEYS[1])
if not owner then
  if ARGV[3] == '1' then
    redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
    return 1
  end
  return {}
end
return {owner, redis.call('GET', KEYS[2])}`;

// renew(claim, value; token, ttl): 1 while the claim is this owner's.
const RENEW = `
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return 1`;

// value(claim, value; token, ttl, bytes, notice): stores the value for late joiners, tells joiners.
const VALUE = `
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[2])
end
redis.call('PUBLISH', KEYS[1], ARGV[4])
return 1`;

// finish(claim, value; token, notice): frees the key and tells joiners, in one step, so a joiner
// that finds the claim gone has been sent the notice already.
const FINISH = `
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1], KEYS[2])
end
redis.call('PUBLISH', KEYS[1], ARGV[2])
return 1`;

/** The scripts, defined on the command connection by RedisCoordinator. */
export const FLIGHT_SCRIPTS = {
  flightEnter: ENTER,
  flightRenew: RENEW,
  flightValue: VALUE,
  flightFinish: FINISH,
};

/** What RedisFlights needs of the coordinator's connections. */
export interface FlightLink {
  /** Both connections ready and the notice pattern subscribed: a flight can be coordinated. */
  isConnected(): boolean;
  /** The member was closed (or abandoned): nothing more is sent. */
  isClosed(): boolean;
  /** Calls a script of FLIGHT_SCRIPTS with Buffer replies. */
  script(name: keyof typeof FLIGHT_SCRIPTS, keys: string[], args: Array<string | Buffer>): Promise<unknown>;
  /** Resolves once every message published before now has been received on the subscriber connection. */
  barrier(): Promise<void>;
  readonly prefix: string;
  readonly ttlMs: number;
  newToken(): string;
  onError(err: unknown): void;
}

export class RedisFlights {
  /** This member's entries by claim key, while their flight is in the air. */
  private readonly entries = new Map<string, FlightEntry>();
  /** Who hears the notices of a claim key: entries asking Redis, and followers. */
  private readonly listeners = new Map<string, Set<(notice: Notice) => void>>();

  constructor(private readonly link: FlightLink) {}

  for<T>(name: string): Flights<T> {
    const base = `${this.link.prefix}%s:${encodeURIComponent(name)}:`;
    const keys = (key: string) => [base.replace("%s", "flight") + key, base.replace("%s", "value") + key];
    return {
      run: (key, fn) => this.run<T>(keys(key), fn),
      join: (key) => this.join<T>(keys(key)),
    };
  }

  /** A notice from the subscriber connection, on the channel of claim key `claim`. */
  receive(claim: string, message: Buffer): void {
    const set = this.listeners.get(claim);
    if (!set) return;
    let notice: Notice;
    try {
      notice = deserialize(message) as Notice;
    } catch (err) {
      return this.link.onError(err);
    }
    for (const listener of [...set]) listener(notice);
  }

  private run<T>(keys: string[], fn: (run: FlightRun) => Promise<T>): Flight<T> {
    const [claim] = keys as [string, string];
    const local = this.entries.get(claim);
    if (local) return flightOf<T>(local, true);
    const entry = newEntry();
    this.entries.set(claim, entry);
    const drop = () => void (this.entries.get(claim) === entry && this.entries.delete(claim));
    if (!this.link.isConnected()) {
      // Redis is away: the flight is this member's alone (coalesced here, not cluster-wide).
      this.own(entry, keys, undefined, drop, fn);
      return flightOf<T>(entry);
    }
    // Listen before asking: the owner's notice may arrive before Redis's answer does.
    const heard: Notice[] = [];
    const unlisten = this.listen(claim, (n) => heard.push(n));
    const token = this.link.newToken();
    // Sent now, not a tick later: the order of callers is the order Redis sees.
    this.link.script("flightEnter", keys, [token, String(this.link.ttlMs), "1"]).then(
      (reply) => {
        unlisten();
        if (reply === 1) return this.own(entry, keys, token, drop, fn);
        const [owner, value] = reply as [Buffer, Buffer | null];
        this.follow(entry, keys, owner.toString(), value, heard, drop);
      },
      (err) => {
        unlisten();
        this.link.onError(err);
        this.own(entry, keys, undefined, drop, fn);
      },
    );
    return flightOf<T>(entry);
  }

  private async join<T>(keys: string[]): Promise<Flight<T> | undefined> {
    const [claim] = keys as [string, string];
    const local = this.entries.get(claim);
    if (local) return flightOf<T>(local, true);
    if (!this.link.isConnected()) return undefined;
    const heard: Notice[] = [];
    const unlisten = this.listen(claim, (n) => heard.push(n));
    let reply: unknown;
    try {
      reply = await this.link.script("flightEnter", keys, ["", "0", "0"]);
    } catch (err) {
      unlisten();
      this.link.onError(err);
      return undefined;
    }
    unlisten();
    // A local run() may have entered the key meanwhile: it is in (or is) the same flight.
    const entered = this.entries.get(claim);
    if (entered) return flightOf<T>(entered, true);
    const [owner, value] = reply as [Buffer?, Buffer?];
    if (!owner) return undefined;
    const entry = newEntry();
    this.entries.set(claim, entry);
    const drop = () => void (this.entries.get(claim) === entry && this.entries.delete(claim));
    this.follow(entry, keys, owner.toString(), value ?? null, heard, drop);
    return flightOf<T>(entry, true);
  }

  /**
   * This member runs the flight. With a token the claim is ours in Redis: renew it, store and
   * announce the value, announce the end. Without one (Redis unreachable) the flight is local.
   */
  private own<T>(
    entry: FlightEntry,
    keys: string[],
    token: string | undefined,
    drop: () => void,
    fn: (run: FlightRun) => Promise<T>,
  ): void {
    const holds: Array<Promise<unknown>> = [];
    let settled = false;
    const run: FlightRun = { holdUntil: (done) => void (settled || holds.push(done)) };
    const ttl = String(this.link.ttlMs);
    const renewal = token === undefined ? undefined : setInterval(() => renew(), this.link.ttlMs / 3);
    renewal?.unref();
    const renew = () => {
      if (this.link.isClosed()) return clearInterval(renewal);
      this.link.script("flightRenew", keys, [token!, ttl]).then(
        (ok) => {
          if (ok === 1) return;
          // Expired (this process stalled longer than the ttl, or Redis lost it): others may run
          // the key now. Ours still ends for its own callers.
          clearInterval(renewal);
          this.link.onError(new Error(`lost the claim on flight ${keys[0]}`));
        },
        (err) => this.link.onError(err),
      );
    };
    // Not awaited: sent in order on the command connection, which is what the next ask relies on.
    const tell = (script: "flightValue" | "flightFinish", args: (t: string) => Array<string | Buffer>) => {
      if (token === undefined) return;
      this.link.script(script, keys, [token, ...args(token)]).catch((e) => this.link.onError(e));
    };
    const stop = (notice: (t: string) => Notice) => {
      clearInterval(renewal);
      // The key is free here, and the freeing is sent to Redis, before any caller's reaction
      // runs: a retry from a rejection handler starts afresh (its ask follows on the same connection).
      drop();
      tell("flightFinish", (t) => [serialize(notice(t))]);
    };
    const fail = (err: unknown) => {
      settled = true;
      stop((t) => ({ t, op: "fail", error: toWire(err) }));
      entry.reject(err);
      entry.end("failed");
    };
    (async () => fn(run))().then((value) => {
      settled = true;
      let bytes: Buffer;
      try {
        bytes = serialize(value);
      } catch (err) {
        // A value that cannot cross (not structured-clonable) is the caller's bug: fail it
        // everywhere, here too, whether Redis is up or not.
        return fail(err);
      }
      const last = holds.length === 0;
      tell("flightValue", (t) => [
        ttl,
        bytes,
        serialize({ t, op: "value", v: bytes, last } satisfies Notice),
      ]);
      const finish = (outcome: Ended) => {
        stop((t) => ({ t, op: "end", outcome }));
        entry.end(outcome);
      };
      // Unheld, the flight ends before any caller sees the value: one that asks again then starts afresh.
      if (last) finish("done");
      entry.resolve(value);
      if (!last) {
        void Promise.allSettled(holds).then((results) =>
          finish(results.some((r) => r.status === "rejected") ? "failed" : "done"),
        );
      }
    }, fail);
  }

  /**
   * Another member owns the flight under `token`: its notices settle the entry. Every third of
   * the ttl we look at the claim: gone (or another's) with no end heard means the owner died
   * (its claim expired) or Redis lost it; unreachable for a whole ttl counts the same.
   */
  private follow(
    entry: FlightEntry,
    keys: string[],
    token: string,
    value: Buffer | null,
    heard: Notice[],
    drop: () => void,
  ): void {
    entry.joined = true;
    let hasValue = false;
    let done = false;
    const take = (bytes: Buffer) => {
      if (hasValue) return;
      hasValue = true;
      try {
        entry.resolve(deserialize(bytes));
      } catch (err) {
        entry.reject(err);
      }
    };
    const close = () => {
      done = true;
      clearInterval(timer);
      unlisten();
      drop();
    };
    const gone = (why: string) => {
      close();
      // Holders of the value learn it from `ended`; callers still waiting reject.
      if (!hasValue) entry.reject(new MemberGoneError(`the member running this flight went away: ${why}`));
      entry.end("failed");
    };
    const hear = (notice: Notice) => {
      if (done || notice.t !== token) return;
      if (notice.op === "value") {
        take(notice.v);
        // Unheld: over here with its value, so a caller that asks again at once starts afresh
        // rather than joining a flight whose end is still on its way. The end then finds us done.
        if (!notice.last) return;
      }
      close();
      if (notice.op === "value") {
        entry.end("done");
      } else if (notice.op === "fail") {
        entry.reject(fromWire(notice.error));
        entry.end("failed");
      } else {
        if (!hasValue)
          entry.reject(new MemberGoneError("the flight ended before its value reached this member"));
        entry.end(notice.outcome);
      }
    };
    let confirmed = Date.now();
    let checking = false;
    const check = async () => {
      if (checking || done) return;
      checking = true;
      try {
        const [owner, bytes] = (await this.link.script("flightEnter", keys, ["", "0", "0"])) as [
          Buffer?,
          Buffer?,
        ];
        if (owner?.toString() === token) {
          confirmed = Date.now();
          // A value notice lost while the subscriber reconnected is read here instead.
          if (bytes) take(bytes);
          return;
        }
        // The owner frees its claim and publishes its end in one script: once we have received
        // everything published before now, an end we have not heard was never sent.
        await this.link.barrier();
        if (!done) gone("its claim in Redis expired");
      } catch {
        if (!done && Date.now() - confirmed >= this.link.ttlMs)
          gone("Redis has been unreachable for a whole lease");
      } finally {
        checking = false;
      }
    };
    const timer = setInterval(() => void check(), this.link.ttlMs / 3);
    timer.unref();
    const unlisten = this.listen(keys[0]!, hear);
    if (value) take(value);
    for (const notice of heard) hear(notice);
  }

  private listen(claim: string, listener: (notice: Notice) => void): () => void {
    let set = this.listeners.get(claim);
    if (!set) this.listeners.set(claim, (set = new Set()));
    const own = (n: Notice) => listener(n);
    set.add(own);
    return () => {
      set.delete(own);
      if (set.size === 0 && this.listeners.get(claim) === set) this.listeners.delete(claim);
    };
  }
}
