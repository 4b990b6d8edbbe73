import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import express from "express";
import type { Metrics } from "../metrics/metrics.ts";
import { registryHandler, type RegistryDeps } from "./registry.ts";
import { API_VERSION } from "./respond.ts";

// The HTTP server: /v2/ goes straight to the registry handler (the hot path, see registry.ts);
// everything else — metrics, health — is an ordinary express app.

export function createApp(deps: RegistryDeps & { metrics: Metrics }): Server {
  const registry = registryHandler(deps);
  const app = express();
  app.disable("x-powered-by");
  app.get("/metrics", async (_req, res) => {
    res.type(deps.metrics.registry.contentType).send(await deps.metrics.registry.metrics());
  });
  app.get("/healthz", (_req, res) => {
    res.json({ status: "ok" });
  });
  app.use((_req, res) => {
    res
      .status(404)
      .set(API_VERSION)
      .json({ errors: [{ code: "UNSUPPORTED", message: "no such endpoint" }] });
  });

  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const url = req.url ?? "/";
    if (url === "/v2" || url.startsWith("/v2/") || url.startsWith("/v2?")) registry(req, res);
    else app(req, res);
  });
  // Keep idle client connections a little longer than Node's 5 s: dockerd and containerd reuse them.
  server.keepAliveTimeout = 65_000;
  return server;
}
