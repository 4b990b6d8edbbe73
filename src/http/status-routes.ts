import { randomBytes } from "node:crypto";
import express from "express";
import type { Gate } from "../access/gate.ts";
import { RegistryError } from "../oci/errors.ts";
import type { OpsDeps } from "./app.ts";
import type { Repositories } from "./repositories.ts";
import { sendError } from "./respond.ts";
import { renderStatusPage } from "./status-page.ts";

// GET / and /ui (the status page) and GET /api/repositories (its repository data as JSON).
//
// They name what the cache holds, as /v2/_catalog does, so when client logins are on
// (auth.htpasswd) they ask for the same login; the challenge is Basic, which a browser answers
// with its own prompt (it would not answer the Bearer challenge registry clients get).

export function statusRoutes(deps: {
  ops: OpsDeps;
  repositories: Repositories;
  gate: Gate | undefined;
  /** The client's address, for the failed-login limit. */
  clientOf: (req: express.Request) => string;
  /** The admin API is on: the page offers its login and the hosted deletes. */
  admin?: boolean;
}): express.Router {
  const router = express.Router();
  const { gate } = deps;
  const login: express.RequestHandler = async (req, res, next) => {
    if (!gate) return next();
    try {
      await gate.authenticate(req, undefined, deps.clientOf(req));
    } catch (err) {
      // A 429 (too many failed logins) or an internal error is said as it is.
      if (!(err instanceof RegistryError) || err.code !== "UNAUTHORIZED") return next(err);
      sendError(
        res,
        new RegistryError("UNAUTHORIZED", "log in to see the status page", {
          headers: { "www-authenticate": 'Basic realm="regmirror", charset="UTF-8"' },
        }),
      );
      return;
    }
    next();
  };

  const page = async (_req: express.Request, res: express.Response) => {
    const [stats, repositories] = await Promise.all([deps.ops.stats(), deps.repositories.summary()]);
    const nonce = randomBytes(16).toString("base64");
    const body = renderStatusPage(
      {
        stats,
        pullsLastHour: deps.ops.history.pullsSince(3_600_000, stats),
        history: deps.ops.history.listWithNow(stats),
        repositories,
        now: Date.now(),
        admin: deps.admin === true,
      },
      nonce,
    );
    res
      .set({
        "content-type": "text/html; charset=utf-8",
        // Defence in depth behind the escaping: only our own nonce'd style and script run, and
        // the page loads nothing from anywhere (it fetches only itself, to refresh).
        "content-security-policy": [
          "default-src 'none'",
          `style-src 'nonce-${nonce}'`,
          `script-src 'nonce-${nonce}'`,
          "connect-src 'self'",
          "img-src data:",
          "base-uri 'none'",
          "form-action 'none'",
          "frame-ancestors 'none'",
        ].join("; "),
        "x-content-type-options": "nosniff",
        "referrer-policy": "no-referrer",
        "cache-control": "no-store",
      })
      .send(body);
  };
  router.get(["/", "/ui"], login, page);
  router.get("/api/repositories", login, async (_req, res) => {
    res.set("cache-control", "no-store").json(await deps.repositories.summary());
  });
  return router;
}
