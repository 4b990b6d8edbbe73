import type { Config } from "../config/schema.ts";
import type { Cache } from "../storage/cache.ts";
import { PushRights } from "../access/push-rights.ts";
import { uploadRoutes } from "../http/uploads.ts";
import type { HostedDeps } from "../http/hosted.ts";
import { HostedNames } from "./names.ts";
import { Hosted } from "./service.ts";
import { HostedStore } from "./store.ts";

// The hosted repositories, built from the config for the composition root (start.ts);
// undefined when hosted.repositories is empty.

export function openHosted(config: Config, cache: Cache): (HostedDeps & { rights: PushRights }) | undefined {
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
  return {
    hosted,
    uploads: uploadRoutes(),
    maxManifestBytes: config.limits.maxManifestSize,
    rights: new PushRights(config.hosted.pushers, config.hosted.anonymousPush),
  };
}
