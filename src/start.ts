import cluster from "node:cluster";
import { readFileSync } from "node:fs";
import { ConfigError } from "./config/errors.ts";
import type { Config } from "./config/schema.ts";
import { createLogger } from "./log.ts";
import { Metrics } from "./metrics/metrics.ts";
import { openCache, type Cache } from "./storage/cache.ts";
import { BlobStore } from "./storage/blob-store.ts";
import { ManifestStore } from "./storage/manifest-store.ts";
import { UpstreamClient } from "./upstream/client.ts";
import type { Token } from "./upstream/auth.ts";
import type { Challenge } from "./upstream/challenge.ts";
import { BlobService, type FollowerChange } from "./mirror/blobs.ts";
import type { FillTicket } from "./mirror/fill-follower.ts";
import { ManifestService, type ManifestAnswer } from "./mirror/manifests.ts";
import { ReferrersService, type ReferrersAnswer } from "./mirror/referrers.ts";
import { InProcessCoordinator } from "./coordination/in-process.ts";
import type { Coordinator } from "./coordination/coordinator.ts";
import { WorkerCoordinator } from "./coordination/member.ts";
import { Evictor, type BlobIndex } from "./mirror/eviction.ts";
import { BLOB_ACTIVITY, BLOB_REMOVED, EvictionRelay, type BlobActivity } from "./mirror/eviction-relay.ts";

import { watchGeneration } from "./storage/generation.ts";
import { releaseWhenIdle } from "./memory.ts";
import { primaryChannel } from "./cluster/channel.ts";
import { workerMetrics } from "./cluster/metrics.ts";
import { Mirror, type UpstreamEntry } from "./mirror/mirror.ts";
import { createHandler } from "./http/app.ts";
import { openListeners } from "./http/listeners.ts";
import { primeHttpClient } from "./upstream/prime.ts";
import { readiness } from "./http/health.ts";
import { collectStats } from "./metrics/stats.ts";
import { History } from "./metrics/history.ts";
import { Gate, type FailedLogin } from "./access/gate.ts";
import { Htpasswd } from "./access/htpasswd.ts";
import { TokenIssuer } from "./access/tokens.ts";
import { RepoPolicy } from "./access/policy.ts";
import { PullLog } from "./metrics/pull-log.ts";
import { listCache, type Listing } from "./maintenance/ls.ts";
import { cacheOperations } from "./maintenance/operations.ts";
import { EvictionLeader } from "./cluster/eviction-leader.ts";
import { openHosted } from "./hosted/wiring.ts";

// The composition root: the one place that builds every part of a serving mirror and wires them
// together with plain constructor arguments. serve.ts loads it only in a process that serves
// (a single process, or a worker): a cluster's primary never needs express, undici and the rest.

/** How long fills must have stopped before their memory is given back (memory.ts). */
const TRIM_AFTER_FILLS_MS = 500;

export interface Running {
  url: string;
  /** The HTTPS listener's URL, when tls.cert is set. */
  tlsUrl: string | undefined;
  /** Re-reads tls.cert and tls.key (SIGHUP). */
  reloadTls(): void;
  /** Graceful: stop accepting, let responses finish (up to shutdownTimeout), stop fills. */
  close(): Promise<void>;
}

export interface StartOptions {
  processMetrics?: boolean;
  /** Tests swap in a store that fails writes, to play a full disk. */
  blobStore?: (cache: Cache) => BlobStore;
  /**
   * Run as one of `workers` cluster workers (cluster/primary.ts), sharing its scope with the
   * others. Undefined: a single process.
   */
  workers?: number;
  /** The key tokens are signed with; workers get the primary's, so all accept each other's. */
  tokenKey?: Buffer;
}

/** Starts a mirror from a validated config; used by `serve` and by the tests. */
export async function startMirror(config: Config, opts: StartOptions = {}): Promise<Running> {
  const worker = opts.workers !== undefined;
  // cache.blobMemory and cache.manifestMemory are the mirror's, not each worker's: N workers
  // each keeping the whole budget would hold N copies of the same hot blobs.
  const share = (bytes: number) => Math.floor(bytes / (opts.workers ?? 1));
  const log = createLogger(
    config.log.level,
    config.log.format,
    worker ? { worker: cluster.worker?.id, pid: process.pid } : undefined,
  );
  const metrics = new Metrics({ processMetrics: opts.processMetrics });
  if (worker) metrics.view = workerMetrics(metrics.registry);
  const cache = await openCache(config);
  const { driver, paths } = cache;
  const onError = (err: unknown) => log.error("an event handler failed", { error: (err as Error).message });
  // A replica of a cluster (cluster.redis) shares its scope with the other replicas through Redis.
  // Loaded only then: the Redis client (ioredis) alone is ~16 MB of a worker's memory.
  const clustering = config.cluster.redis && !worker ? await loadClustering() : undefined;
  const replica = clustering?.joinCluster(config, log, metrics);
  // Every "one in flight per key" in the mirror goes through this: one process is one scope; a
  // worker shares its scope with the other workers through the primary, a replica with the
  // other replicas through Redis.
  const coordinator: Coordinator = worker
    ? new WorkerCoordinator(primaryChannel(), { onError })
    : (replica?.coordinator ?? new InProcessCoordinator({ onError }));
  // Where the eviction index lives: here (one process), in the primary (workers), or in the
  // replica holding the eviction lease (cluster); the others pass their activity on.
  const shared = worker || replica !== undefined;
  const blobStore = opts.blobStore?.(cache) ?? new BlobStore(driver, paths);
  await blobStore.init({ clearTemp: !worker });
  const manifestStore = new ManifestStore(driver, share(config.cache.manifestMemory));
  const removed = coordinator.events<{ hex: string }>(BLOB_REMOVED);
  const newEvictor = () =>
    new Evictor({
      store: blobStore,
      metrics,
      log,
      maxSizeBytes: config.cache.maxSize,
      blobTtlMs: config.cache.blobTTL,
      onRemove: replica
        ? (hex) =>
            void removed
              .publish({ hex })
              .catch((err: Error) =>
                log.warn("could not tell the replicas of an eviction", { error: err.message }),
              )
        : (hex) => blobs.forgetCached(hex),
    });
  // The eviction index exists once: here, for all the workers in the primary, or for the whole
  // cluster in the replica holding the eviction lease.
  const evictor = shared ? undefined : newEvictor();
  const activity = coordinator.events<BlobActivity>(BLOB_ACTIVITY);
  const leader = replica
    ? new EvictionLeader(coordinator.leases("cluster"), activity, newEvictor, log)
    : undefined;
  const relay = shared
    ? new EvictionRelay(activity, (err) =>
        // Without Redis a replica's activity is lost (and said so once, as Redis going away).
        replica && !replica.coordinator.connected
          ? log.debug("could not pass on blob activity", { error: err.message })
          : log.error("could not pass on blob activity", { error: err.message }),
      )
    : undefined;
  const index: BlobIndex = (evictor ?? relay)!;
  if (shared) removed.subscribe(({ hex }) => blobs.forgetCached(hex));
  // `regmirror purge`/`gc`/`verify`, from a shell or the admin API of any worker (or replica).
  const cacheChanged = () => {
    manifestStore.forgetMemory();
    blobs.forgetAllCached();
    (evictor ?? leader?.current)
      ?.reload()
      .catch((err: Error) => log.error("could not index the cache", { error: err.message }));
  };
  const stopWatching = watchGeneration(paths, cacheChanged);
  // The other replicas see no file of ours: they hear of a purge through Redis.
  const changes = clustering && coordinator.events<{ at: number }>(clustering.CACHE_CHANGED);
  const stopHearing = changes ? changes.subscribe(cacheChanged) : () => undefined;
  // Done, whatever Redis says: the purge stands, and the other replicas' memory is what is at stake.
  if (changes)
    cache.announce = async () => {
      await changes.publish({ at: Date.now() }).catch((err: Error) => {
        log.warn("could not tell the other replicas what was removed; they may serve it from memory", {
          error: err.message,
        });
      });
    };
  // Once fills and their readers stop for a moment, the memory their chunks took goes back to
  // the system: V8 and glibc would keep it, 40–60 MB a worker after four 64 MiB fills.
  const trim = releaseWhenIdle(() => blobs.idle(), TRIM_AFTER_FILLS_MS);
  const blobs = new BlobService({
    store: blobStore,
    evictor: index,
    metrics,
    log,
    fillTimeoutMs: config.cache.fillTimeout,
    abandonedFillTimeoutMs: config.cache.abandonedFillTimeout,
    memoryBytes: share(config.cache.blobMemory),
    sendfile: config.cache.sendfile,
    sendfileThreads: config.cache.sendfileThreads,
    redirect: config.storage.driver === "s3" && config.storage.s3.redirect,
    stallTimeoutMs: config.limits.stallTimeout,
    fills: coordinator.flights<FillTicket>("blob-fills"),
    ...(shared ? { followChanges: coordinator.events<FollowerChange>("blob-fill-followers") } : {}),
    ...(replica ? { origin: replica.origin, fillsChanged: () => registry?.changed() } : {}),
    fillsIdle: trim.fillsIdle,
  });
  const upstreams = new Map<string, UpstreamEntry>();
  for (const u of [config.upstream, ...config.upstreams]) {
    const client = new UpstreamClient({
      name: u.name,
      url: u.url,
      credentials: u.username ? { username: u.username, password: u.password } : undefined,
      concurrency: u.concurrency,
      timeoutMs: u.timeout,
      privateRedirects: u.privateRedirects,
      metrics,
      // Not "tokens/", where the value was a bare string: replicas of two versions (a rolling
      // update) must not join each other's negotiations.
      tokenFlights: coordinator.flights<Token>(`token-grants/${u.name}`),
      challenges: coordinator.events<Challenge>(`challenges/${u.name}`),
    });
    const manifests = new ManifestService({
      store: manifestStore,
      upstream: client,
      upstreamName: u.name,
      metrics,
      log,
      tagTtlMs: u.tagTTL ?? config.tag.ttl,
      maxStaleMs: config.tag.maxStale,
      maxManifestBytes: config.limits.maxManifestSize,
      revalidateTimeoutMs: u.revalidateTimeout,
      flights: coordinator.flights<ManifestAnswer>(`manifests/${u.name}`),
    });
    const referrers = new ReferrersService({
      driver,
      upstream: client,
      upstreamName: u.name,
      manifests,
      metrics,
      log,
      tagTtlMs: u.tagTTL ?? config.tag.ttl,
      maxStaleMs: config.tag.maxStale,
      maxBytes: config.limits.maxManifestSize,
      revalidateTimeoutMs: u.revalidateTimeout,
      flights: coordinator.flights<ReferrersAnswer>(`referrers/${u.name}`),
    });
    upstreams.set(u.name, { client, manifests, referrers });
  }
  const mirror = new Mirror(upstreams, config.upstream.name, blobs, driver, manifestStore);
  const allUpstreams = [config.upstream, ...config.upstreams];
  const startedAt = Date.now();
  const stats = () => collectStats(metrics, allUpstreams, startedAt);
  const history = new History(stats);
  history.start();
  const pulls = new PullLog();
  const registry =
    clustering && replica
      ? new clustering.ReplicaRegistry(
          config.cluster.redis,
          clustering.clusterPrefix(config),
          () => ({ member: replica.origin.member, url: replica.origin.url, filling: blobs.runningFills() }),
          log,
        )
      : undefined;
  const ops = {
    // /stats and the status page; the history keeps to this replica's own figures.
    stats: registry
      ? async () => ({ ...(await stats()), cluster: { replicas: (await registry.list()) ?? null } })
      : stats,
    history,
    listCache: () => listCache(driver),
    listingWalks: coordinator.flights<Listing>("repositories"),
    ready: () =>
      readiness({
        tmpDir: paths.tmpDir,
        minFreeBytes: config.cache.minFree,
        staleServing: config.tag.maxStale > 0,
        storageProblem: () => driver.problem(),
        ...(replica ? { notes: () => ({ cluster: replica.problem() }) } : {}),
        downUpstreams: async () => (await stats()).upstreams.filter((u) => u.up === false).map((u) => u.name),
      }),
  };
  const tokens = new TokenIssuer(
    config.auth.tokenTTL,
    opts.tokenKey ?? (replica && config.auth.htpasswd ? await replica.tokenKey() : undefined),
  );
  const gate = config.auth.htpasswd
    ? new Gate(readHtpasswd(config.auth.htpasswd), tokens, coordinator.flights<boolean>("logins"), {
        limits: {
          maxFailedLogins: config.auth.maxFailedLogins,
          failedLoginWindowMs: config.auth.failedLoginWindow,
        },
        shared: coordinator.events<FailedLogin>("failed-logins"),
        anonymousPull: config.auth.anonymousPull,
      })
    : undefined;
  const hosted = openHosted(config, cache, (what, err) => log.warn(what, { error: err.message }), metrics);
  // The admin API's warm pulls through this mirror's own listener, known once it listens.
  let selfUrl = "";
  const admin = config.admin.token
    ? {
        token: config.admin.token,
        ops: cacheOperations({
          cache,
          resolve: (name) => mirror.route(undefined, name),
          selfUrl: () => selfUrl,
          maxManifestBytes: config.limits.maxManifestSize,
          // With logins on, warm shows the mirror a token of its own making.
          ...(gate ? { authorization: () => `Bearer ${tokens.issue("regmirror-admin").token}` } : {}),
          ...(hosted ? { hosted: { store: hosted.hosted.store, graceMs: config.hosted.gcGrace } } : {}),
        }),
      }
    : undefined;
  const handler = createHandler({
    mirror,
    hosted,
    metrics,
    log,
    ops,
    pulls,
    admin,
    gate,
    ...(replica
      ? {
          fills: {
            token: replica.origin.token,
            running: (hex: string) => blobs.runningFill(hex),
            stallTimeoutMs: config.limits.stallTimeout,
          },
        }
      : {}),
    policy: new RepoPolicy(config.access.allow, config.access.deny),
    // The bound is the mirror's: with N workers each takes its share, so one client cannot hold
    // N × perClient upstream connections and descriptors (its connections spread over the workers).
    perClient: Math.max(1, Math.ceil(config.limits.perClient / (opts.workers ?? 1))),
    trustedProxies: config.trustedProxies,
  });
  // Uploads to hosted repositories may take as long as their bytes keep coming (app.ts).
  const limits = {
    headersTimeoutMs: config.limits.headersTimeout,
    stallMs: config.limits.stallTimeout,
    fastPath: config.cache.fastPath,
    ...(hosted ? { uploadIdleMs: config.limits.stallTimeout } : {}),
  };
  const listeners = await openListeners(handler, limits, config);
  replica?.listening(listeners.port);
  const { url, tlsUrl } = listeners;
  selfUrl = url;
  // The index of what is on disk loads after we listen: a large cache must not delay the start.
  const indexed = evictor
    ?.start()
    .catch((err: Error) => log.error("could not index the cache", { error: err.message }));
  leader?.start();
  registry?.start();
  void primeHttpClient();
  if (
    config.upstream.name === "docker.io" &&
    !/(^|\.)docker\.io$/.test(new URL(config.upstream.url).hostname)
  ) {
    log.warn(
      "upstream.name is docker.io but upstream.url is not Docker Hub: Docker Hub's rules (alpine → library/alpine, ?ns=docker.io) apply to it; set upstream.name to its host",
      { url: config.upstream.url },
    );
  }
  log.info("regmirror listening", {
    url,
    tls: tlsUrl,
    upstreams: allUpstreams.map((u) => `${u.name}=${u.url}`),
    cache: config.cache.dir,
    clientAuth: Boolean(config.auth.htpasswd),
  });
  return {
    url,
    tlsUrl,
    reloadTls() {
      if (listeners.reloadTls()) log.info("TLS certificate reloaded");
    },
    async close() {
      await listeners.close(config.shutdownTimeout);
      history.stop();
      trim.stop();
      hosted?.close();
      stopWatching();
      stopHearing();
      await mirror.close();
      relay?.flush();
      await leader?.stop();
      await registry?.stop();
      await coordinator.close();
      await indexed;
      await evictor?.close();
      log.info("regmirror stopped");
      log.close();
    },
  };
}

/** A replica's own modules (cluster.redis), with the Redis client they bring. */
async function loadClustering() {
  const [replica, registry] = await Promise.all([
    import("./cluster/replica.ts"),
    import("./cluster/registry.ts"),
  ]);
  return { ...replica, ...registry };
}

function readHtpasswd(path: string): Htpasswd {
  try {
    return new Htpasswd(readFileSync(path, "utf8"));
  } catch (err) {
    throw new ConfigError([`auth.htpasswd: cannot use "${path}": ${(err as Error).message}`]);
  }
}
