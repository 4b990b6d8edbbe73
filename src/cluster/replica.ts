import { randomBytes } from "node:crypto";
import { hostname } from "node:os";
import type { Logger } from "winston";
import type { Config } from "../config/schema.ts";
import { Redis } from "ioredis";
import { RedisCoordinator } from "../coordination/redis.ts";
import type { Metrics } from "../metrics/metrics.ts";
import type { FillOrigin } from "../mirror/remote-fill.ts";

// A replica of a cluster (cluster.redis): several mirrors sharing one Redis and one bucket act as
// one. Redis carries the coordination (coordination/redis.ts): one upstream fetch per blob and
// one tag revalidation per TTL cluster-wide, the eviction lease, and the events (purges, blob
// activity). A replica's fills are followed by the others over HTTP (http/fills.ts): its
// address and a token of its own go out with each fill's ticket.
//
// Without Redis a replica keeps serving what is cached and keeps filling, on its own (the
// coordinator runs flights locally while it is away); it logs it, counts it, and /readyz says
// so while staying ready.

/** The event every replica hears when a purge, gc or verify removed something. */
export const CACHE_CHANGED = "cache-changed";

/**
 * Tells the replicas sharing `redisUrl` that the cache changed, from a process that is not one
 * of them (`regmirror purge` in a shell). Fails if Redis cannot be reached in a few seconds: the
 * command then says that the replicas may go on serving what they hold in memory.
 */
export async function announceToCluster(config: Config): Promise<void> {
  const coordinator = new RedisCoordinator({ url: config.cluster.redis, prefix: clusterPrefix(config) });
  try {
    if (!(await coordinator.whenConnected(5000)))
      throw new Error(
        `cannot reach cluster.redis to tell the replicas; they may serve removed content from memory`,
      );
    await coordinator.events<{ at: number }>(CACHE_CHANGED).publish({ at: Date.now() });
  } finally {
    await coordinator.close();
  }
}

/**
 * The cluster's namespace in Redis: replicas sharing a bucket (and prefix) share a cache, so they
 * are one cluster; another cache on the same Redis never meets them.
 */
export function clusterPrefix(config: Config): string {
  return `regmirror:${config.storage.s3.bucket}/${config.storage.s3.prefix}:`;
}

export interface Replica {
  coordinator: RedisCoordinator;
  /** Where this replica serves its fills; `url` is known once it listens (listening()). */
  origin: FillOrigin;
  /** Sets the advertised address from the port it listens on, unless cluster.advertise names one. */
  listening(port: number): void;
  /** Why coordination is degraded, for /readyz; undefined when Redis is there. */
  problem(): string | undefined;
  /**
   * The key login tokens are signed with, the same in every replica (so a token from one is good
   * in all): made once by whichever replica comes first, kept in Redis.
   */
  tokenKey(): Promise<Buffer | undefined>;
}

export function joinCluster(config: Config, log: Logger, metrics: Metrics): Replica {
  const coordinator = new RedisCoordinator({
    url: config.cluster.redis,
    prefix: clusterPrefix(config),
    onError: (err) => log.debug("cluster coordination", { error: (err as Error).message }),
  });
  const origin: FillOrigin = {
    member: coordinator.memberId,
    url: config.cluster.advertise,
    token: randomBytes(24).toString("hex"),
  };
  let wasUp = false;
  metrics.clusterUp.set(0);
  coordinator.onStatus((up) => {
    metrics.clusterUp.set(up ? 1 : 0);
    if (up) log.info("cluster: Redis reached; coordinating with the other replicas");
    else if (wasUp) {
      metrics.clusterOutages.inc();
      log.warn("cluster: Redis lost; serving and filling on this replica alone until it is back");
    }
    wasUp = up;
  });
  return {
    coordinator,
    origin,
    listening(port) {
      if (origin.url) return;
      const host = config.listen.host;
      const name = host === "0.0.0.0" || host === "::" || host === "" ? hostname() : host;
      origin.url = `http://${name.includes(":") ? `[${name}]` : name}:${port}`;
    },
    problem: () =>
      coordinator.connected
        ? undefined
        : "Redis (cluster.redis) is out of reach: this replica serves and fills on its own",
    tokenKey: () => sharedTokenKey(config, log),
  };
}

async function sharedTokenKey(config: Config, log: Logger): Promise<Buffer | undefined> {
  const redis = new Redis(config.cluster.redis, {
    lazyConnect: true,
    connectTimeout: 3000,
    maxRetriesPerRequest: 1,
    retryStrategy: () => null,
  });
  redis.on("error", () => undefined);
  const key = `${clusterPrefix(config)}token-key`;
  try {
    await redis.connect();
    await redis.set(key, randomBytes(32).toString("hex"), "NX");
    const hex = await redis.get(key);
    return hex ? Buffer.from(hex, "hex") : undefined;
  } catch (err) {
    log.warn(
      "cluster: could not share the login token key through Redis; tokens from other replicas are refused",
      {
        error: (err as Error).message,
      },
    );
    return undefined;
  } finally {
    redis.disconnect();
  }
}
