import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { createServer as createTlsServer, type Server as TlsServer } from "node:https";
import express, { type NextFunction, type Request, type Response, type Router } from "express";
import { ClientAddresses } from "../access/client-address.ts";
import { tokenRequest } from "../access/token-request.ts";
import { RegistryError } from "../oci/errors.ts";
import type { Metrics } from "../metrics/metrics.ts";
import { registryHandler, type RegistryDeps } from "./registry.ts";
import { API_VERSION, logFailure, NOSNIFF, sendError } from "./respond.ts";
import type { Readiness } from "./health.ts";
import type { Stats } from "../metrics/stats.ts";
import type { History } from "../metrics/history.ts";
import type { PullLog } from "../metrics/pull-log.ts";
import type { Listing } from "../maintenance/ls.ts";
import type { Flights } from "../coordination/coordinator.ts";
import type { AdminDeps } from "./admin.ts";
import { Repositories } from "./repositories.ts";
import { statusRoutes } from "./status-routes.ts";
import { serveFill, type FillServing } from "./fills.ts";
import { listHosted } from "../maintenance/hosted-ls.ts";
import { fastResponder } from "./fast-answer.ts";
import { frontConnections, type FastResponder } from "./fast-conn.ts";

// The HTTP servers: /v2/ goes straight to the registry handler (the hot path, see registry.ts);
// everything else — metrics, health, the status page, the admin API, the login endpoint — is an
// ordinary express app.

export interface ServerLimits {
  headersTimeoutMs: number;
  /**
   * Set when the server takes blob uploads (hosted repositories): an upload's body may take as
   * long as it keeps arriving, and is cut after this long without a byte. Other bodies keep the
   * whole-request limit.
   */
  uploadIdleMs?: number;
  /** Answer what memory holds before Node's HTTP parser (cache.fastPath; fast-conn.ts). */
  fastPath?: boolean;
  /** A client that takes no bytes for this long is cut off (limits.stallTimeout). */
  stallMs: number;
}

export type Handler = ((req: IncomingMessage, res: ServerResponse) => void) & {
  /** Answers from memory in front of Node's HTTP server (fast-conn.ts), when the server is given it. */
  fast?: FastResponder;
};

export interface OpsDeps {
  stats(): Promise<Stats>;
  history: History;
  ready(): Promise<Readiness>;
  /** What the cache holds (`regmirror ls`), for the status page and /api/repositories. */
  listCache(): Promise<Listing>;
  /** Merges concurrent listCache() walks. */
  listingWalks: Flights<Listing>;
}

export interface HandlerDeps extends RegistryDeps {
  metrics: Metrics;
  ops: OpsDeps;
  /** When clients last pulled each tag; the registry handler records, the status page reads. */
  pulls: PullLog;
  /** The admin API; absent (admin.token empty) means /admin/* is 404. */
  admin?: Omit<AdminDeps, "log" | "changed">;
  /** In a cluster: this replica's fills, for the other replicas (fills.ts). */
  fills?: FillServing;
}

export function createHandler(deps: HandlerDeps): Handler {
  const clients = new ClientAddresses(deps.trustedProxies ?? []);
  const clientOf = (req: IncomingMessage) => clients.of(req.socket.remoteAddress, req.headers);
  const inFlight = new Map<string, number>();
  const registry = registryHandler(deps, clients, inFlight);
  const hostedDriver = deps.hosted?.hosted.store.driver;
  const repositories = new Repositories(
    () => deps.ops.listCache(),
    deps.pulls,
    deps.ops.listingWalks,
    undefined,
    hostedDriver && (() => listHosted(hostedDriver)),
  );
  const app = express();
  app.disable("x-powered-by");
  app.disable("etag");
  app.get("/metrics", async (_req, res) => {
    const registry = await deps.metrics.view();
    res.type(registry.contentType).send(await registry.metrics());
  });
  app.get("/healthz", (_req, res) => {
    res.json({ status: "ok" });
  });
  app.get("/readyz", async (_req, res) => {
    const r = await deps.ops.ready();
    res.status(r.ready ? 200 : 503).json(r);
  });
  app.get("/stats", async (req, res) => {
    const stats = await deps.ops.stats();
    const pullsLastHour = deps.ops.history.pullsSince(3_600_000, stats);
    res.json({
      ...stats,
      pullsLastHour,
      ...(req.query.history !== undefined ? { history: deps.ops.history.list() } : {}),
    });
  });
  app.use(
    statusRoutes({ ops: deps.ops, repositories, gate: deps.gate, clientOf, admin: deps.admin !== undefined }),
  );
  if (deps.admin) {
    const adminDeps: AdminDeps = {
      ...deps.admin,
      log: deps.log,
      changed: () => {
        repositories.invalidate();
        deps.mirror.invalidateListing();
      },
    };
    // Loaded at its first request: it checks bodies with zod, which a worker otherwise never
    // loads (~150 ms and ~12 MB a process at start; its configuration comes validated).
    let admin: Promise<Router> | undefined;
    app.use("/admin", (req, res, next) => {
      admin ??= import("./admin.ts").then((m) => m.adminRouter(adminDeps));
      admin.then((router) => router(req, res, next), next);
    });
  }
  const gate = deps.gate;
  if (gate) {
    // GET with Basic, or POST with an OAuth2 form of a few hundred bytes (token-request.ts).
    const token = async (req: Request, res: Response, post?: { form: URLSearchParams | undefined }) => {
      const q = req.originalUrl.indexOf("?");
      const query = new URLSearchParams(q === -1 ? "" : req.originalUrl.slice(q + 1));
      const asked = tokenRequest(req.headers.authorization, query, post);
      res.set(API_VERSION).json(await gate.issue(asked, clientOf(req)));
    };
    app.get("/auth/token", (req, res) => token(req, res));
    app.post(
      "/auth/token",
      express.text({ type: "application/x-www-form-urlencoded", limit: "8kb" }),
      (req, res) =>
        token(req, res, { form: typeof req.body === "string" ? new URLSearchParams(req.body) : undefined }),
    );
  }
  app.use((_req, res) => {
    res
      .status(404)
      .set(API_VERSION)
      .json({ errors: [{ code: "UNSUPPORTED", message: "no such endpoint" }] });
  });
  // Every error of the express side, thrown or rejected (express 5 passes both here), in the
  // registry's JSON shape; express's own handler would answer HTML, with the stack outside
  // production.
  app.use((err: unknown, req: Request, res: Response, _next: NextFunction) => {
    const e = sendError(res, fromExpress(err));
    logFailure(deps.log, e, { client: clientOf(req), path: req.originalUrl });
  });

  const handler: Handler = (req, res) => {
    res.setHeader("x-content-type-options", NOSNIFF["x-content-type-options"]);
    const url = req.url ?? "/";
    if (url === "/v2" || url.startsWith("/v2/") || url.startsWith("/v2?")) registry(req, res);
    else if (!(deps.fills && url.startsWith("/_regmirror/") && serveFill(deps.fills, req, res)))
      app(req, res);
  };
  handler.fast = fastResponder(deps, clients, inFlight);
  return handler;
}

/** Timeouts against slow clients; header size stays at Node's 16 KiB (larger gets 431). */
function harden(server: Server | TlsServer, limits: ServerLimits): void {
  server.headersTimeout = limits.headersTimeoutMs;
  // GETs carry no body: a request that is not fully in after this long is a slowloris.
  const wholeRequestMs = limits.headersTimeoutMs + 10_000;
  const idleMs = limits.uploadIdleMs;
  if (idleMs === undefined) server.requestTimeout = wholeRequestMs;
  else {
    // Node's limit is one per server, and would cut a large upload at ~30 s: each request with a
    // body gets its own instead (headersTimeout still holds for every request).
    server.requestTimeout = 0;
    server.on("request", (req: IncomingMessage) => guardBody(req, wholeRequestMs, idleMs));
  }
  // Keep idle client connections longer than Node's 5 s: dockerd and containerd reuse them.
  server.keepAliveTimeout = 65_000;
}

/** The fast path in front of Node's own connection listener (fast-conn.ts). */
function front(
  server: Server | TlsServer,
  handler: Handler,
  limits: ServerLimits,
  event: "connection" | "secureConnection",
) {
  if (!limits.fastPath || !handler.fast) return;
  frontConnections(server, event, handler.fast, {
    headersTimeoutMs: limits.headersTimeoutMs,
    keepAliveTimeoutMs: server.keepAliveTimeout,
    stallMs: limits.stallMs,
  });
}

const UPLOAD_PATH = /^\/v2\/.+\/blobs\/uploads(?:[/?]|$)/;

/**
 * A request body that is not in within `wholeRequestMs` cuts the connection, as Node's
 * requestTimeout would; a blob upload's only when no byte came for `idleMs`. Bytes waiting in
 * the request's buffer are our delay (a slow disk), not the client's, and do not count as idle.
 */
function guardBody(req: IncomingMessage, wholeRequestMs: number, idleMs: number): void {
  const length = req.headers["content-length"];
  if (req.headers["transfer-encoding"] === undefined && (length === undefined || length === "0")) return;
  const socket = req.socket;
  const cut = () => {
    if (!req.complete) socket.destroy();
  };
  if (!UPLOAD_PATH.test(req.url ?? "")) {
    const timer = setTimeout(cut, wholeRequestMs).unref();
    req.once("end", () => clearTimeout(timer));
    return;
  }
  let seen = socket.bytesRead;
  let quietSince = Date.now();
  const timer = setInterval(
    () => {
      if (req.complete || socket.destroyed) return clearInterval(timer);
      const now = Date.now();
      if (socket.bytesRead !== seen || req.readableLength > 0) {
        seen = socket.bytesRead;
        quietSince = now;
      } else if (now - quietSince >= idleMs) {
        clearInterval(timer);
        cut();
      }
    },
    Math.max(100, Math.min(idleMs / 4, 5000)),
  ).unref();
}

/** Node checks header and request timeouts on this interval (30 s by default: too coarse). */
function checkEvery(limits: ServerLimits): number {
  return Math.max(250, Math.min(limits.headersTimeoutMs / 2, 5000));
}

export function createHttpServer(handler: Handler, limits: ServerLimits): Server {
  const server = createServer({ connectionsCheckingInterval: checkEvery(limits) }, handler);
  harden(server, limits);
  front(server, handler, limits, "connection");
  return server;
}

export function createHttpsServer(
  handler: Handler,
  limits: ServerLimits,
  tls: { cert: Buffer; key: Buffer },
): TlsServer {
  const server = createTlsServer(
    { cert: tls.cert, key: tls.key, connectionsCheckingInterval: checkEvery(limits) },
    handler,
  );
  harden(server, limits);
  front(server, handler, limits, "secureConnection");
  return server;
}

/** express's and body-parser's own errors carry a 4xx status: the client's fault, said so. */
function fromExpress(err: unknown): unknown {
  const status = (err as { status?: unknown } | undefined)?.status;
  if (err instanceof RegistryError || typeof status !== "number" || status < 400 || status >= 500) return err;
  return new RegistryError("UNSUPPORTED", (err as Error).message, { status });
}
