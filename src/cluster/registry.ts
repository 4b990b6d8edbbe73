import { readFileSync } from "node:fs";
import { Redis } from "ioredis";
import type { Logger } from "winston";

// Who is in the cluster: each replica keeps a record of itself in Redis (its address, version,
// start time, and the blobs it is filling), renewed every few seconds and gone a while after
// the replica is. /stats shows the records of all of them. Never on a request's path.

export interface ReplicaRecord {
  member: string;
  url: string;
  version: string;
  startedAt: string;
  /** Digests (sha256:…) of the blob fills this replica runs for the cluster. */
  filling: string[];
}

const RENEW_MS = 10_000;
const TTL_MS = 30_000;

const VERSION = (() => {
  try {
    const pkg = JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8")) as {
      version?: string;
    };
    return pkg.version ?? "unknown";
  } catch {
    return "unknown";
  }
})();

export class ReplicaRegistry {
  private readonly redis: Redis;
  private timer: NodeJS.Timeout | undefined;
  private soon: NodeJS.Timeout | undefined;
  private readonly startedAt = new Date().toISOString();

  constructor(
    url: string,
    private readonly prefix: string,
    private readonly self: () => Omit<ReplicaRecord, "version" | "startedAt">,
    private readonly log: Logger,
  ) {
    // Fails fast while Redis is away (the coordinator says so); reconnects by itself.
    this.redis = new Redis(url, {
      lazyConnect: true,
      enableOfflineQueue: false,
      maxRetriesPerRequest: 1,
      connectTimeout: 2000,
      retryStrategy: () => 1000,
    });
    this.redis.on("error", () => undefined);
  }

  private key(member: string): string {
    return `${this.prefix}replica:${member}`;
  }

  /** Something in this replica's record changed (a fill began or ended): write it soon. */
  changed(): void {
    this.soon ??= setTimeout(() => {
      this.soon = undefined;
      void this.renew();
    }, 50);
  }

  start(): void {
    this.redis.connect().catch(() => undefined);
    const renew = () => void this.renew();
    this.redis.on("ready", renew);
    this.timer = setInterval(renew, RENEW_MS);
    this.timer.unref();
  }

  private async renew(): Promise<void> {
    const me = this.self();
    const record: ReplicaRecord = { ...me, version: VERSION, startedAt: this.startedAt };
    try {
      await this.redis.set(this.key(me.member), JSON.stringify(record), "PX", TTL_MS);
    } catch (err) {
      this.log.debug("cluster: could not renew this replica's record", { error: (err as Error).message });
    }
  }

  /** Every replica with a live record, by address; undefined while Redis cannot be asked. */
  async list(): Promise<ReplicaRecord[] | undefined> {
    try {
      const keys: string[] = [];
      let cursor = "0";
      do {
        const [next, found] = await this.redis.scan(cursor, "MATCH", `${this.prefix}replica:*`, "COUNT", 100);
        keys.push(...found);
        cursor = next;
      } while (cursor !== "0");
      if (keys.length === 0) return [];
      const records = (await this.redis.mget(keys)).flatMap((v) => {
        try {
          return v ? [JSON.parse(v) as ReplicaRecord] : [];
        } catch {
          return [];
        }
      });
      return records.sort((a, b) => a.url.localeCompare(b.url));
    } catch {
      return undefined;
    }
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    if (this.soon) clearTimeout(this.soon);
    await this.redis.del(this.key(this.self().member)).catch(() => undefined);
    this.redis.disconnect();
  }
}
