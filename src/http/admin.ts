import { createHash, timingSafeEqual } from "node:crypto";
import express, { type NextFunction, type Request, type Response } from "express";
import type { Logger } from "winston";
import { z } from "zod";
import type { CacheOperations } from "../maintenance/operations.ts";
import { parseDuration } from "../config/units.ts";
import { RegistryError } from "../oci/errors.ts";
import { logFailure, sendError } from "./respond.ts";

// The admin API: what `regmirror purge`, `gc` and `warm` do, against this running mirror.
// Mounted only when admin.token is set (else /admin/* is the generic 404), and every request,
// known path or not, must carry `Authorization: Bearer <admin.token>` before its body is even
// read. Bodies are JSON; answers are JSON saying what was done, errors the registry's shape.
//
//   POST /admin/purge  {"ref": "alpine:3.20"} | {"repo": "alpine"} | {"olderThan": "30d"}, "dryRun"?
//   POST /admin/gc     {"dryRun"?, "minAge"?: "1h", "keepUntagged"?, "hostedGrace"?: "1h"}
//                      (the hosted repositories too, when configured: figures apart, in "hosted")
//   GET  /admin/hosted                          the hosted repositories, tags and sizes
//   POST /admin/hosted/delete {"repo", "reference": tag | digest}   as DELETE of a manifest
//   POST /admin/warm   {"images": ["alpine:3.20", ...], "platform"?: "linux/amd64" | [...]}

export interface AdminDeps {
  token: string;
  ops: CacheOperations;
  log: Logger;
  /** The cache changed (purge, gc): cached listings must be read again. */
  changed?: () => void;
}

const BODY_LIMIT = "64kb";
const MAX_IMAGES = 100;

const duration = z.string().transform((v, ctx) => {
  const ms = parseDuration(v);
  if (ms === undefined) {
    ctx.addIssue({ code: "custom", message: "not a duration (e.g. 90s, 12h, 30d)" });
    return z.NEVER;
  }
  return ms;
});

const PurgeBody = z.strictObject({
  ref: z.string().min(1).optional(),
  repo: z.string().min(1).optional(),
  olderThan: duration.optional(),
  dryRun: z.boolean().optional(),
});
const GcBody = z.strictObject({
  dryRun: z.boolean().optional(),
  minAge: duration.optional(),
  keepUntagged: z.boolean().optional(),
  hostedGrace: duration.optional(),
});
const HostedDeleteBody = z.strictObject({
  repo: z.string().min(1),
  reference: z.string().min(1),
});
const WarmBody = z.strictObject({
  images: z.array(z.string().min(1)).min(1).max(MAX_IMAGES),
  platform: z.union([z.string().min(1), z.array(z.string().min(1)).min(1)]).optional(),
});

export function adminRouter(deps: AdminDeps): express.Router {
  const router = express.Router();
  router.use(requireToken(deps.token));
  // Any content type: `curl -d '{...}'` sends form-urlencoded, and the body is JSON regardless.
  router.use(express.json({ limit: BODY_LIMIT, type: () => true }));

  // purge and gc one at a time: two sweeps over one directory do the same work twice.
  let queue: Promise<unknown> = Promise.resolve();
  const serial = <T>(run: () => Promise<T>): Promise<T> => {
    const p = queue.then(run, run);
    queue = p.catch(() => undefined);
    return p;
  };

  router.post("/purge", async (req, res) => {
    const b = parse(PurgeBody, req.body);
    const r = await serial(() =>
      deps.ops.purge({
        ...(b.ref !== undefined ? { ref: b.ref } : {}),
        ...(b.repo !== undefined ? { repo: b.repo } : {}),
        ...(b.olderThan !== undefined ? { olderThanMs: b.olderThan } : {}),
        dryRun: b.dryRun === true,
      }),
    );
    if (!r.dryRun) deps.changed?.();
    deps.log.info("admin purge", {
      target: r.target,
      dryRun: r.dryRun,
      files: r.removed.length,
      freedBytes: r.freedBytes,
    });
    // As `regmirror purge` exits 1: a REF that matched nothing is most likely a typo.
    if (!r.matched) {
      throw new RegistryError("NAME_UNKNOWN", `nothing in the cache matches ${r.target}`, { detail: r });
    }
    res.json(r);
  });

  router.post("/gc", async (req, res) => {
    const b = parse(GcBody, req.body);
    const r = await serial(() =>
      deps.ops.gc({
        dryRun: b.dryRun === true,
        // The CLI's default, and for the same reason: a running mirror writes as we sweep.
        minAgeMs: b.minAge ?? 3_600_000,
        keepUntagged: b.keepUntagged === true,
        ...(b.hostedGrace !== undefined ? { hostedGraceMs: b.hostedGrace } : {}),
      }),
    );
    if (!r.dryRun) deps.changed?.();
    deps.log.info("admin gc", {
      dryRun: r.dryRun,
      freedBytes: r.freedBytes,
      blobs: r.blobs.removed.length,
      ...(r.hosted
        ? {
            hostedFreedBytes: r.hosted.freedBytes,
            hostedBlobs: r.hosted.blobs.removed.length,
            hostedManifests: r.hosted.manifests.removed.length,
          }
        : {}),
    });
    res.json(r);
  });

  // The status page's view and delete buttons (status-page.ts), and scripts'.
  router.get("/hosted", async (_req, res) => {
    res.set("cache-control", "no-store").json(await deps.ops.listHosted());
  });
  router.post("/hosted/delete", async (req, res) => {
    const b = parse(HostedDeleteBody, req.body);
    const r = await serial(() => deps.ops.deleteHosted(b.repo, b.reference));
    deps.changed?.();
    deps.log.info("admin hosted delete", { ...r });
    res.json(r);
  });

  router.post("/warm", async (req, res) => {
    const b = parse(WarmBody, req.body);
    const platforms = b.platform === undefined ? undefined : [b.platform].flat();
    let r: Awaited<ReturnType<CacheOperations["warm"]>>;
    try {
      r = await deps.ops.warm(b.images, platforms);
    } catch (err) {
      // Not reaching itself is not the client's fault, and its message says why.
      if (err instanceof RegistryError) throw err;
      throw new RegistryError("UNAVAILABLE", (err as Error).message, { cause: err });
    }
    deps.log.info("admin warm", { images: b.images.length, ok: r.ok });
    // 200 with "ok": false when some image failed: the others were warmed, and each says why.
    res.json(r);
  });

  router.use((err: unknown, req: Request, res: Response, _next: NextFunction) => {
    const status = (err as { status?: unknown; type?: unknown }).status;
    // body-parser's own errors: malformed JSON (400) or too large (413).
    if (!(err instanceof RegistryError) && (status === 400 || status === 413)) {
      sendError(
        res,
        new RegistryError("UNSUPPORTED", `the request body: ${(err as Error).message}`, { status }),
      );
      return;
    }
    logFailure(deps.log, sendError(res, err), { path: req.originalUrl });
  });
  return router;
}

/** 401 unless the request carries the token. Both sides are hashed first: equal lengths, compared in constant time. */
function requireToken(token: string): express.RequestHandler {
  const want = createHash("sha256").update(token).digest();
  const challenge = (error?: string) => ({
    "www-authenticate": `Bearer realm="regmirror-admin"${error ? `, error="${error}"` : ""}`,
  });
  return (req, res, next) => {
    const m = /^Bearer\s+(\S+)\s*$/i.exec(req.headers.authorization ?? "");
    if (!m) {
      sendError(
        res,
        new RegistryError("UNAUTHORIZED", "the admin API needs its token", { headers: challenge() }),
      );
      return;
    }
    const got = createHash("sha256").update(m[1]!).digest();
    if (!timingSafeEqual(got, want)) {
      sendError(
        res,
        new RegistryError("UNAUTHORIZED", "wrong admin token", { headers: challenge("invalid_token") }),
      );
      return;
    }
    next();
  };
}

/** A body that does not fit is a 400 naming each problem (`olderThan: not a duration`). */
function parse<T extends z.ZodType>(schema: T, body: unknown): z.output<T> {
  const r = schema.safeParse(body ?? {});
  if (r.success) return r.data;
  const problems = r.error.issues.map((i) =>
    i.path.length > 0 ? `${i.path.join(".")}: ${i.message}` : i.message,
  );
  throw new RegistryError("UNSUPPORTED", `the request body: ${problems.join("; ")}`, {
    status: 400,
    detail: { problems },
  });
}
