// The coordination scope of every host that shares one Redis (6+, or a compatible server):
// replicas that act as one mirror (issue 12). Flights live in redis-flights.ts; leases and events
// here. Two connections per member: one for commands, one subscribed to two patterns (flight
// notices, events), made when it is ready, so subscribe() is local and instant as in member.ts.
//
// Keys, channels (all under `prefix`, names URI-encoded so that ":" in a name cannot meet a key):
//   prefix + "flight:" + name + ":" + key    a flight's claim, and the channel of its notices
//   prefix + "value:" + name + ":" + key     a flight's value, while it is in the air
//   prefix + "lease:" + name + ":" + key     "expiresAt:token", PX ttl + LEASE_MARGIN_MS
//   prefix + "event:" + name                 the channel of the name's events
//
// Redis unreachable (down, restarting, partitioned). Nothing waits for it: ioredis queues nothing
// offline, connects within 2 s, gives up a command after 2 s, and reconnects by itself every
// ≤ 1 s for ever; subscriptions are made again on each connection. While `connected` is false:
//   - flights run() locally: callers in this member still coalesce, not across members; a run
//     whose ask fails (the connection broke under it) runs locally too. join() answers
//     undefined (unless this member has the key in the air). Followers of another member's
//     flight that cannot reach Redis for a whole lease reject with MemberGoneError (or see
//     ended "failed" if they had the value), as when the owner dies.
//   - leases: acquire() and renew() reject with RedisUnavailableError (exclusivity cannot be
//     promised, nor denied); release() resolves, telling onError (the key expires by itself).
//   - events: publish() rejects with RedisUnavailableError; events published meanwhile are lost
//     for this member (at most once); subscribe() works, and hears again once reconnected.
// `connected` and onStatus() let the caller fall back (to in-process coordination) and report it.
import { randomBytes } from "node:crypto";
import { hostname } from "node:os";
import { deserialize, serialize } from "node:v8";
import { Redis, type RedisOptions } from "ioredis";
import type { Coordinator, Events, Flights, Lease, Leases } from "./coordinator.ts";
import { FLIGHT_SCRIPTS, RedisFlights, type FlightLink } from "./redis-flights.ts";

export { MemberGoneError } from "./protocol.ts";

export interface RedisCoordinatorOptions {
  /** redis:// or rediss:// (TLS), as ioredis takes it: host, port, password, db. */
  url: string;
  /** Namespace of every key and channel; members with the same prefix are one scope. Default "regmirror:". */
  prefix?: string;
  /** This member's name in the claims of flights it runs (who fills what). Default hostname:pid. */
  memberId?: string;
  /**
   * The clock leases expire by (tests move it on by hand). Default: Redis's own clock (TIME),
   * so that members' clocks never matter.
   */
  now?: () => number;
  /** Told of errors no caller can receive: a handler that threw, a notice or renewal that failed, Redis lost. */
  onError?: (err: unknown) => void;
  /**
   * The ttl of a flight's claim, renewed by its owner every third of it: an owner that dies is
   * noticed by joiners within about 4/3 of it. Default 10 s.
   */
  leaseTtlMs?: number;
}

/** Redis could not be asked (not connected, or it did not answer in time). */
export class RedisUnavailableError extends Error {
  readonly code = "REDIS_UNAVAILABLE";
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "RedisUnavailableError";
  }
}

/** Kept past a lease's ttl so a key whose owner died still vanishes from Redis, even with a test clock. */
const LEASE_MARGIN_MS = 1_000;

// Lease scripts: KEYS[1] the lease; ARGV token, now ("" = Redis's TIME), ttl, px.
const CLOCK = `
local function clock()
  if ARGV[2] ~= '' then return tonumber(ARGV[2]) end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function held(v, now)
  if not v then return nil end
  local exp, token = string.match(v, '^(%d+):(.*)$')
  if exp and tonumber(exp) > now then return token end
  return nil
end
local function grant(now)
  local exp = string.format('%.0f', now + tonumber(ARGV[3]))
  redis.call('SET', KEYS[1], exp .. ':' .. ARGV[1], 'PX', ARGV[4])
end`;
const LEASE_SCRIPTS = {
  leaseAcquire: `${CLOCK}
local now = clock()
if held(redis.call('GET', KEYS[1]), now) then return 0 end
grant(now)
return 1`,
  leaseRenew: `${CLOCK}
local now = clock()
if held(redis.call('GET', KEYS[1]), now) ~= ARGV[1] then return 0 end
grant(now)
return 1`,
  leaseRelease: `
local v = redis.call('GET', KEYS[1])
if v and string.match(v, '^%d+:(.*)$') == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1`,
};

type ScriptName = keyof typeof FLIGHT_SCRIPTS | keyof typeof LEASE_SCRIPTS;
type ScriptCall = (...args: Array<string | Buffer>) => Promise<unknown>;

export class RedisCoordinator implements Coordinator {
  readonly memberId: string;
  private readonly prefix: string;
  private readonly cmd: Redis;
  private readonly sub: Redis;
  private readonly now: (() => number) | undefined;
  private readonly onError: (err: unknown) => void;
  private readonly flightsOf: RedisFlights;
  /** A random part of every token: this process's, never a previous one's under the same memberId. */
  private readonly nonce = randomBytes(6).toString("base64url");
  private seq = 0;
  private subscribed = false;
  private closed = false;
  private wasConnected = false;
  private lastError: unknown;
  private readonly statusListeners = new Set<(connected: boolean) => void>();
  /** Event handlers by channel. */
  private readonly handlers = new Map<string, Set<(event: unknown) => void>>();
  /** This member's leases, released by close(). */
  private readonly held = new Set<Lease>();

  constructor(opts: RedisCoordinatorOptions) {
    this.prefix = opts.prefix ?? "regmirror:";
    this.memberId = opts.memberId ?? `${hostname()}:${process.pid}`;
    this.now = opts.now;
    this.onError = opts.onError ?? (() => undefined);
    const options: RedisOptions = {
      connectionName: `regmirror:${this.memberId}`.replace(/\s/g, "_"),
      enableOfflineQueue: false,
      maxRetriesPerRequest: 1,
      connectTimeout: 2_000,
      commandTimeout: 2_000,
      autoResubscribe: false, // done on "ready" below, so `connected` waits for it
      retryStrategy: (times) => Math.min(times * 100, 1_000),
    };
    this.cmd = new Redis(opts.url, options);
    this.sub = new Redis(opts.url, options);
    for (const [name, lua] of Object.entries({ ...FLIGHT_SCRIPTS, ...LEASE_SCRIPTS })) {
      this.cmd.defineCommand(name, { lua, numberOfKeys: name.startsWith("flight") ? 2 : 1 });
    }
    const flightChannels = `${this.prefix}flight:`;
    const eventChannels = `${this.prefix}event:`;
    for (const client of [this.cmd, this.sub]) {
      client.on("error", (err) => void (this.lastError = err));
      for (const ev of ["ready", "close", "end"]) client.on(ev, () => this.update());
    }
    this.sub.on("ready", () => {
      const glob = (s: string) => s.replace(/[*?[\]\\]/g, "\\$&") + "*";
      this.sub.psubscribe(glob(flightChannels), glob(eventChannels)).then(
        () => ((this.subscribed = true), this.update()),
        (err) => this.onError(err), // the connection broke again; the next "ready" retries
      );
    });
    this.sub.on("close", () => void (this.subscribed = false));
    this.sub.on("pmessageBuffer", (_pattern: Buffer, channel: Buffer, message: Buffer) => {
      const name = channel.toString();
      if (name.startsWith(eventChannels)) this.deliver(name, message);
      else if (name.startsWith(flightChannels)) this.flightsOf.receive(name, message);
    });
    const link: FlightLink = {
      isConnected: () => this.connected,
      isClosed: () => this.closed,
      script: (name, keys, args) => this.script(name, keys, args, true),
      barrier: async () => void (await this.sub.ping()),
      prefix: this.prefix,
      ttlMs: opts.leaseTtlMs ?? 10_000,
      newToken: () => this.newToken(),
      onError: (err) => this.onError(err),
    };
    this.flightsOf = new RedisFlights(link);
  }

  /** Both connections are up and subscribed: coordination is cluster-wide. */
  get connected(): boolean {
    return !this.closed && this.cmd.status === "ready" && this.sub.status === "ready" && this.subscribed;
  }

  /** Calls `listener` on every change of `connected`; returns the function that removes it. */
  onStatus(listener: (connected: boolean) => void): () => void {
    this.statusListeners.add(listener);
    return () => void this.statusListeners.delete(listener);
  }

  /** Resolves true once connected, or false after `timeoutMs` (a caller that wants to start coordinated). */
  whenConnected(timeoutMs = 5_000): Promise<boolean> {
    if (this.connected) return Promise.resolve(true);
    return new Promise((resolve) => {
      const timer = setTimeout(() => (off(), resolve(false)), timeoutMs);
      const off = this.onStatus((up) => {
        if (!up) return;
        clearTimeout(timer);
        off();
        resolve(true);
      });
    });
  }

  flights<T>(name: string): Flights<T> {
    return this.flightsOf.for<T>(name);
  }

  leases(name: string): Leases {
    const base = `${this.prefix}lease:${encodeURIComponent(name)}:`;
    return {
      acquire: async (key, ttlMs) => {
        const token = this.newToken();
        const lua = (script: ScriptName) => {
          const ttl = Math.ceil(ttlMs);
          const now = this.now ? String(Math.round(this.now())) : "";
          return this.script(script, [base + key], [token, now, String(ttl), String(ttl + LEASE_MARGIN_MS)]);
        };
        if ((await lua("leaseAcquire")) !== 1) return undefined;
        const lease: Lease = {
          key,
          renew: async () => {
            const ok = (await lua("leaseRenew")) === 1;
            if (!ok) this.held.delete(lease);
            return ok;
          },
          release: async () => {
            this.held.delete(lease);
            await this.script("leaseRelease", [base + key], [token]).catch(this.onError);
          },
        };
        this.held.add(lease);
        return lease;
      },
    };
  }

  events<E>(name: string): Events<E> {
    const channel = `${this.prefix}event:${encodeURIComponent(name)}`;
    return {
      publish: async (event) => {
        const bytes = serialize(event);
        await this.cmd.publish(channel, bytes).catch((err: unknown) => {
          throw unavailable(err);
        });
      },
      subscribe: (handler) => {
        let set = this.handlers.get(channel);
        if (!set) this.handlers.set(channel, (set = new Set()));
        // Wrapped, so the same function subscribed twice is two subscriptions, each removed once.
        const own = (event: unknown) => handler(event as E);
        set.add(own);
        return () => void set.delete(own);
      },
    };
  }

  /**
   * Releases this member's leases, drops its subscribers and quits both connections. Flights in
   * the air run on in this process; other members stop hearing of them (their claims expire).
   */
  async close(): Promise<void> {
    if (this.closed) return;
    this.handlers.clear();
    await Promise.all([...this.held].map((lease) => lease.release()));
    this.closed = true;
    await Promise.all(
      [this.cmd, this.sub].map((c) => (c.status === "ready" ? c.quit().catch(() => undefined) : null)),
    );
    this.cmd.disconnect();
    this.sub.disconnect();
    this.update();
  }

  /**
   * For tests: this member dies as a killed process would. Both connections drop at once; no
   * lease is released, no claim renewed, nothing more is sent or heard.
   */
  abandon(): void {
    this.closed = true;
    this.handlers.clear();
    this.cmd.disconnect();
    this.sub.disconnect();
    this.update();
  }

  private newToken(): string {
    return `${this.memberId}/${this.nonce}#${++this.seq}`;
  }

  private script(name: ScriptName, keys: string[], args: string[] | Array<string | Buffer>, buffers = false) {
    if (this.closed) return Promise.reject(new RedisUnavailableError("the Redis coordinator is closed"));
    const call = (this.cmd as unknown as Record<string, ScriptCall>)[buffers ? `${name}Buffer` : name]!;
    return call.call(this.cmd, ...keys, ...args).catch((err: unknown) => {
      throw unavailable(err);
    });
  }

  private deliver(channel: string, message: Buffer): void {
    const set = this.handlers.get(channel);
    if (!set || set.size === 0) return;
    let event: unknown;
    try {
      event = deserialize(message);
    } catch (err) {
      return this.onError(err);
    }
    for (const handler of [...set]) {
      if (!set.has(handler)) continue; // unsubscribed by an earlier handler
      try {
        handler(event);
      } catch (err) {
        this.onError(err);
      }
    }
  }

  private update(): void {
    const up = this.connected;
    if (up === this.wasConnected) return;
    this.wasConnected = up;
    if (!up && !this.closed) {
      this.onError(
        new RedisUnavailableError("lost Redis; coordinating in this member only", { cause: this.lastError }),
      );
    }
    for (const listener of [...this.statusListeners]) {
      try {
        listener(up);
      } catch (err) {
        this.onError(err);
      }
    }
  }
}

function unavailable(err: unknown): RedisUnavailableError {
  if (err instanceof RedisUnavailableError) return err;
  return new RedisUnavailableError(`Redis: ${err instanceof Error ? err.message : String(err)}`, {
    cause: err,
  });
}
