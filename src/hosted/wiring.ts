import type { Config } from "../config/schema.ts";
import type { Cache } from "../storage/cache.ts";
import { PushRights } from "../access/push-rights.ts";
import { RepoPolicy } from "../access/policy.ts";
import { routeRepo } from "../mirror/routing.ts";
import { uploadRoutes } from "../http/uploads.ts";
import type { HostedDeps } from "../http/hosted.ts";
import { HostedNames } from "./names.ts";
import { Hosted } from "./service.ts";
import { HostedStore } from "./store.ts";
import { UploadSessions } from "./uploads.ts";
import type { Metrics } from "../metrics/metrics.ts";

// The hosted repositories, built from the config for the composition root (start.ts);
// undefined when hosted.repositories is empty.

export interface HostedParts extends HostedDeps {
  rights: PushRights;
  /** Stops the sweep of idle uploads. */
  close(): void;
}

export function openHosted(
  config: Config,
  cache: Cache,
  onError: (what: string, err: Error) => void = () => undefined,
  metrics?: Metrics,
): HostedParts | undefined {
  const names = new HostedNames(config.hosted.repositories);
  if (!names.any) return undefined;
  const store = new HostedStore(cache.driver, cache.paths);
  const hosted = new Hosted(store, names, {
    deleteEnabled: config.hosted.delete,
    send: {
      kernel: config.cache.sendfile,
      maxKernelTransfers: config.cache.sendfileThreads,
      stallMs: config.limits.stallTimeout,
    },
  });
  const sessions = new UploadSessions({
    dir: cache.paths.uploadsDir,
    maxBlobSize: config.hosted.maxBlobSize,
    minFreeBytes: config.cache.minFree,
    idleTimeoutMs: config.hosted.uploadTimeout,
  });
  // Mounts from mirrored names obey the same allow and deny lists as pulls of them.
  const policy = new RepoPolicy(config.access.allow, config.access.deny);
  const upstreams = new Set([config.upstream.name, ...config.upstreams.map((u) => u.name)]);
  const mirrorPermits = (name: string): boolean => {
    try {
      const at = routeRepo(upstreams, config.upstream.name, undefined, name);
      return policy.permits(at.upstream, at.repo);
    } catch {
      return false;
    }
  };
  const pushed = (kind: "blob" | "manifest", via: string, bytes: number) => {
    metrics?.hostedPushes.inc({ kind, via });
    metrics?.hostedPushedBytes.inc(bytes);
  };
  // Every process sweeps (at start, then now and then): removing a session twice is harmless.
  const sweep = () =>
    void sessions.sweep().catch((err: Error) => onError("could not sweep idle uploads", err));
  sweep();
  const timer = setInterval(
    sweep,
    Math.max(1000, Math.min(config.hosted.uploadTimeout, 10 * 60_000)),
  ).unref();
  return {
    hosted,
    pushed,
    uploads: uploadRoutes({
      sessions,
      pushed,
      mount: {
        store,
        names,
        cache: cache.driver,
        mirrorPermits,
        maxBlobSize: config.hosted.maxBlobSize,
        requireSpace: () => sessions.requireSpace(),
      },
    }),
    maxManifestBytes: config.limits.maxManifestSize,
    rights: new PushRights(config.hosted.pushers, config.hosted.anonymousPush),
    close: () => clearInterval(timer),
  };
}
