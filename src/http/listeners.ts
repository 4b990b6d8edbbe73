import { once } from "node:events";
import { readFileSync } from "node:fs";
import type { Server } from "node:http";
import type { Server as TlsServer } from "node:https";
import { ConfigError } from "../config/errors.ts";
import type { Config } from "../config/schema.ts";
import { createHttpServer, createHttpsServer, type Handler, type ServerLimits } from "./app.ts";

// The mirror's listeners: plain HTTP on `listen`, and HTTPS on `tls.listen` when a certificate is
// set. Both serve the same handler; SIGHUP re-reads the certificate; close() lets responses in
// flight finish up to a deadline, then cuts what is left.

export interface Listeners {
  /** http://host:port, with the port actually bound (listen: …:0 in tests). */
  url: string;
  port: number;
  tlsUrl: string | undefined;
  reloadTls(): boolean;
  close(deadlineMs: number): Promise<void>;
}

export async function openListeners(
  handler: Handler,
  limits: ServerLimits,
  config: Pick<Config, "listen" | "tls">,
): Promise<Listeners> {
  const servers: Array<Server | TlsServer> = [];
  const http = createHttpServer(handler, limits);
  servers.push(http);
  const port = await listen(http, config.listen);
  let tlsServer: TlsServer | undefined;
  let tlsUrl: string | undefined;
  if (config.tls.cert) {
    tlsServer = createHttpsServer(handler, limits, readTls(config.tls));
    servers.push(tlsServer);
    tlsUrl = `https://${displayHost(config.tls.listen.host)}:${await listen(tlsServer, config.tls.listen)}`;
  }
  return {
    url: `http://${displayHost(config.listen.host)}:${port}`,
    port,
    tlsUrl,
    reloadTls() {
      if (!tlsServer) return false;
      tlsServer.setSecureContext(readTls(config.tls));
      return true;
    },
    async close(deadlineMs) {
      const closed = Promise.all(
        servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve()))),
      );
      for (const s of servers) s.closeIdleConnections();
      const deadline = new Promise<void>((resolve) => setTimeout(resolve, deadlineMs).unref());
      await Promise.race([closed, deadline]);
      for (const s of servers) s.closeAllConnections();
    },
  };
}

async function listen(server: Server | TlsServer, at: { host: string; port: number }): Promise<number> {
  server.listen(at.port, at.host);
  await once(server, "listening");
  const addr = server.address();
  return typeof addr === "object" && addr ? addr.port : at.port;
}

function displayHost(host: string): string {
  if (host === "0.0.0.0" || host === "::") return "127.0.0.1";
  return host.includes(":") ? `[${host}]` : host;
}

function readTls(tls: Config["tls"]): { cert: Buffer; key: Buffer } {
  try {
    return { cert: readFileSync(tls.cert), key: readFileSync(tls.key) };
  } catch (err) {
    throw new ConfigError([`tls.cert / tls.key: cannot read: ${(err as Error).message}`]);
  }
}
