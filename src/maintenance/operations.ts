import { RegistryError } from "../oci/errors.ts";
import type { Cache } from "../storage/cache.ts";
import { UsageError } from "./errors.ts";
import { collectGarbage, type GcOptions, type GcResult } from "./gc.ts";
import { parseImageRef, parsePlatform } from "./image-ref.ts";
import { purgeCache, type PurgeOptions, type PurgeResult, type RepoResolver } from "./purge.ts";
import { warmImages, type WarmReport } from "./warm.ts";
import { assertName, parseReference } from "../oci/reference.ts";
import type { HostedStore } from "../hosted/store.ts";
import { deleteManifest } from "../hosted/manifest-push.ts";
import { listHosted, type HostedListing } from "./hosted-ls.ts";

// The maintenance commands as a running mirror offers them through the admin API (http/admin.ts):
// the same functions as `regmirror purge`, `gc` and `warm`, bound to this mirror's cache
// directory, its routing and its own URL. start.ts builds this; the HTTP layer only calls it.

export interface OperationsDeps {
  cache: Cache;
  /** The mirror's own routing, so that `alpine:3.20` means what it means to a client. */
  resolve: RepoResolver;
  /** Where this mirror listens (known once it does); warm pulls through it like a client. */
  selfUrl: () => string;
  /** limits.maxManifestSize: warm takes no bigger manifest than the mirror does. */
  maxManifestBytes: number;
  /** Credentials for warm when the mirror has client logins on: a token the mirror issues itself. */
  authorization?: () => string;
  /** The hosted repositories, when hosted.repositories names any: gc collects them too. */
  hosted?: { store: HostedStore; graceMs: number };
}

export interface HostedDeleted {
  repo: string;
  reference: string;
  /** A tag: the tag alone; a digest: the manifest, with every tag pointing to it. */
  removed: "tag" | "manifest";
}

export interface CacheOperations {
  purge(o: PurgeOptions): Promise<PurgeResult>;
  /** `hostedGraceMs` overrides hosted.gcGrace; hosted content is collected only when configured. */
  gc(o: GcOptions): Promise<GcResult>;
  /** The status page's delete of a hosted tag or manifest (the bytes go at the next gc). */
  deleteHosted(repo: string, reference: string): Promise<HostedDeleted>;
  listHosted(): Promise<HostedListing>;
  warm(images: string[], platforms: string[] | undefined): Promise<WarmReport>;
}

// What the mirror holds in memory of removed files is dropped by every process of it through the
// cache's generation file (storage/generation.ts), which purge and gc rewrite themselves.
export function cacheOperations(deps: OperationsDeps): CacheOperations {
  return {
    purge: (o) => asRequestErrors(() => purgeCache(deps.cache, deps.resolve, o)),
    gc: async ({ hostedGraceMs, ...o }) => {
      // As the CLI's --hosted-grace: asking for what cannot be done is an error, not a no-op.
      if (hostedGraceMs !== undefined && !deps.hosted)
        throw new RegistryError("UNSUPPORTED", "hostedGrace: this mirror hosts no repositories", {
          status: 400,
        });
      return collectGarbage(deps.cache, {
        ...o,
        ...(deps.hosted ? { hostedGraceMs: hostedGraceMs ?? deps.hosted.graceMs } : {}),
      });
    },
    deleteHosted: async (repo, reference) => {
      const store = hostedStore(deps);
      assertName(repo);
      const ref = parseReference(reference);
      await deleteManifest(store, repo, ref);
      return { repo, reference, removed: ref.kind === "tag" ? "tag" : "manifest" };
    },
    listHosted: () => listHosted(hostedStore(deps).driver),
    warm: (images, platforms) =>
      asRequestErrors(() => {
        const refs = images.map(parseImageRef);
        const only = platforms?.map(parsePlatform);
        const authorization = deps.authorization?.();
        return warmImages(refs, {
          mirror: deps.selfUrl(),
          maxManifestBytes: deps.maxManifestBytes,
          platforms: only,
          ...(authorization !== undefined ? { authorization } : {}),
        });
      }),
  };
}

function hostedStore(deps: OperationsDeps): HostedStore {
  if (!deps.hosted)
    throw new RegistryError("NAME_UNKNOWN", "this mirror hosts no repositories (hosted.repositories)", {
      status: 404,
    });
  return deps.hosted.store;
}

/** What is a usage error on the command line is a bad request over HTTP: 400, naming the problem. */
async function asRequestErrors<T>(run: () => Promise<T>): Promise<T> {
  try {
    return await run();
  } catch (err) {
    if (err instanceof UsageError) throw new RegistryError("NAME_INVALID", err.message, { status: 400 });
    throw err;
  }
}
