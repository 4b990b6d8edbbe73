import type { IncomingMessage, ServerResponse } from "node:http";
import { randomUUID } from "node:crypto";
import type { Logger } from "winston";
import { RegistryError } from "../oci/errors.ts";
import { parseAccept } from "../oci/media-types.ts";
import { assertRequestName, parseReference, requireDigest } from "../oci/reference.ts";
import type { BlobAnswer } from "../mirror/blobs.ts";
import type { Mirror } from "../mirror/mirror.ts";
import { answerReferrers } from "../mirror/referrers.ts";
import type { Routed } from "../mirror/routing.ts";
import { ClientAddresses } from "../access/client-address.ts";
import type { Gate } from "../access/gate.ts";
import type { RepoPolicy } from "../access/policy.ts";
import type { PushRights } from "../access/push-rights.ts";
import type { PullLog } from "../metrics/pull-log.ts";
import type { Metrics } from "../metrics/metrics.ts";
import { API_VERSION, logFailure, sendError, sendJson } from "./respond.ts";
import { BASE_BODY, BASE_HEADERS, blobHeaders, headerObject, manifestHeaders } from "./answer-headers.ts";
import { parseRange } from "./range.ts";
import { route } from "./route.ts";
import { serveHosted, type HostedDeps } from "./hosted.ts";

// The Registry HTTP API v2, pull side, as a plain Node request handler. It parses, asks the
// mirror services, and writes headers and bodies; it never knows whether an answer came from the
// cache. It bypasses express on purpose: this is the hot path (manifests are served at tens of
// thousands per second, blobs at GB/s), and the routing is our own grammar anyway.

export interface RegistryDeps {
  mirror: Mirror;
  /** Client authentication; absent for an open mirror. */
  gate?: Gate;
  policy: RepoPolicy;
  /** Repositories hosted here (hosted.repositories); absent when none are. */
  hosted?: HostedDeps & { rights: PushRights };
  /** Most requests one client address may have in flight. */
  perClient: number;
  /** Proxies whose X-Forwarded-For / Forwarded name the client (see client-address.ts). */
  trustedProxies?: readonly string[];
  /** When each repository was last pulled, for the status page. */
  pulls?: PullLog;
  metrics: Metrics;
  log: Logger;
}

type Outcome = { cache?: "hit" | "miss" | "stale"; bytes: number };

/** One id per request, in the response and in the log line, so a user's report can be found. */
export function requestId(given: string | string[] | undefined): string {
  return typeof given === "string" && /^[\w.-]{1,64}$/.test(given) ? given : randomUUID();
}

/**
 * `inFlight` counts each client address's requests in flight (limits.perClient); the fast path
 * (fast-answer.ts) reads the same counts.
 */
export function registryHandler(
  deps: RegistryDeps,
  clients = new ClientAddresses(deps.trustedProxies ?? []),
  inFlight = new Map<string, number>(),
) {
  // winston builds and pipes the entry before it looks at the level: ask first, once.
  const logRequests = deps.log.isInfoEnabled();
  const serve = (req: IncomingMessage, res: ServerResponse): void => {
    const started = performance.now();
    const outcome: Outcome = { bytes: 0 };
    const id = requestId(req.headers["x-request-id"]);
    res.setHeader("x-request-id", id);
    // One client cannot take every connection to the upstream or every file descriptor.
    const client = clients.of(req.socket.remoteAddress, req.headers);
    const mine = (inFlight.get(client) ?? 0) + 1;
    inFlight.set(client, mine);
    let counted = true;
    const release = () => {
      if (!counted) return;
      counted = false;
      const left = (inFlight.get(client) ?? 1) - 1;
      if (left === 0) inFlight.delete(client);
      else inFlight.set(client, left);
    };
    // A pipelined request still queued when its connection ends (a TLS client that half-closes
    // after sending thousands) never gets a response 'close'; its request's 'close' does come.
    // Counting on the response alone left such requests in flight for good, and the client's
    // address refused with 429 from then on. (For a GET the request closes after the response.)
    req.once("close", release);
    res.once("close", () => {
      release();
      if (!logRequests) return;
      deps.log.info("request", {
        id,
        client,
        method: req.method,
        path: req.url,
        status: res.statusCode,
        bytes: outcome.bytes,
        ms: Math.round((performance.now() - started) * 10) / 10,
        cache: outcome.cache,
        aborted: !res.writableFinished || undefined,
      });
    });
    if (mine > deps.perClient) {
      sendError(
        res,
        new RegistryError("TOOMANYREQUESTS", "too many requests in flight from this client", {
          headers: { "retry-after": "1" },
        }),
      );
      return;
    }
    handle(deps, req, res, outcome, client).catch((err: unknown) => {
      try {
        logFailure(deps.log, sendError(res, err), { id, client, path: req.url });
      } catch {
        // Only the log could have thrown (sendError cannot); the answer is out or cut.
      }
    });
  };
  // Nothing a request does may end the process: a throw here would be an uncaught exception.
  return (req: IncomingMessage, res: ServerResponse): void => {
    try {
      serve(req, res);
    } catch (err) {
      try {
        logFailure(deps.log, sendError(res, err), { path: req.url });
      } catch {
        res.destroy();
      }
    }
  };
}

async function handle(
  deps: RegistryDeps,
  req: IncomingMessage,
  res: ServerResponse,
  out: Outcome,
  client: string,
): Promise<void> {
  const url = req.url ?? "/";
  const q = url.indexOf("?");
  const r = route(q === -1 ? url : url.slice(0, q));
  // containerd names the registry it wants in ?ns= (see docs/containerd.md).
  const ns = q === -1 ? undefined : (new URLSearchParams(url.slice(q + 1)).get("ns") ?? undefined);
  if (!r) throw new RegistryError("UNSUPPORTED", "no such endpoint", { status: 404 });
  const method = req.method ?? "GET";
  const read = method === "GET" || method === "HEAD";
  const name = "name" in r ? r.name : undefined;
  // Checked before anything uses it: the name goes into the challenge header, log lines, paths.
  if (name !== undefined) assertRequestName(name);
  // containerd's ?ns= names the registry it means: one this mirror mirrors is never hosted here.
  // Any other (the mirror's own host, when a hosts.toml lists it as a mirror of itself) is.
  const hosted =
    deps.hosted &&
    name !== undefined &&
    (ns === undefined || !deps.mirror.mirrors(ns)) &&
    deps.hosted.hosted.names.matches(name)
      ? deps.hosted
      : undefined;
  // Only a hosted repository can be changed; anything else is refused below, after the login.
  // Every request of an upload is a push: its progress is the pusher's business alone.
  const action = !hosted
    ? "pull"
    : r.kind === "upload"
      ? "push"
      : read
        ? "pull"
        : method === "DELETE"
          ? "delete"
          : "push";
  // No await at all for an open mirror, nor for a token: a microtask hop on every request is
  // not free. Only a password check answers with a promise.
  if (deps.gate) {
    const who = deps.gate.authorize(req, name, action, client, hosted?.rights);
    if (typeof who !== "string") await who;
  } else if (hosted && action !== "pull") hosted.rights.checkAnonymous(action, name!);
  if (hosted && r.kind !== "base" && r.kind !== "catalog") {
    const query = new URLSearchParams(q === -1 ? "" : url.slice(q + 1));
    return serveHosted(hosted, req, res, r, query, out, (b) =>
      sendBlob(deps, req, res, b, (r as { digest: string }).digest, out),
    );
  }
  /** Routes the name to an upstream and checks the repository policy. */
  const locate = (n: string): Routed => {
    const at = deps.mirror.route(ns, n);
    if (!deps.policy.permits(at.upstream, at.repo)) {
      throw new RegistryError("DENIED", "pulling this repository through the mirror is not allowed", {
        detail: { repository: at.repo },
      });
    }
    return at;
  };

  switch (r.kind) {
    case "base":
      if (!read) throw unsupported();
      res.writeHead(200, headerObject(BASE_HEADERS));
      return void res.end(BASE_BODY);
    case "upload":
      throw unsupported();
    case "manifest": {
      const at = locate(r.name);
      const ref = parseReference(r.reference);
      if (!read) throw unsupported();
      if (ref.kind === "tag") {
        deps.metrics.pullsOf(at.upstream).inc();
        deps.pulls?.record(at.upstream, at.repo, ref.tag);
      }
      // headers, not headersDistinct (which builds an array for every header of the request):
      // Node joins repeated Accept lines with ", ", and parseAccept splits on commas anyway.
      const m = await deps.mirror.manifest(at, ref, parseAccept(req.headers.accept));
      out.cache = m.stale ? "stale" : m.source === "cache" ? "hit" : "miss";
      res.writeHead(200, headerObject(manifestHeaders(m)));
      if (method === "HEAD") return void res.end();
      out.bytes = m.bytes.length;
      deps.metrics.servedFrom(m.source === "cache" ? "cache" : "upstream").inc(m.bytes.length);
      res.end(m.bytes);
      return;
    }
    case "blob": {
      const at = locate(r.name);
      const digest = requireDigest(r.digest);
      if (!read) throw unsupported();
      const b = await deps.mirror.blob(at, digest, method);
      out.cache = b.source === "cache" ? "hit" : "miss";
      return sendBlob(deps, req, res, b, r.digest, out);
    }
    case "tags":
    case "catalog": {
      if (!read) throw unsupported();
      const query = new URLSearchParams(q === -1 ? "" : url.slice(q + 1));
      const n = pageSize(query.get("n"));
      const last = query.get("last") ?? undefined;
      const page =
        r.kind === "tags"
          ? await deps.mirror.tags(locate(r.name), n, last)
          : await deps.mirror.catalog(ns, n, last, ns === undefined ? deps.hosted?.hosted : undefined);
      const headers: Record<string, string> = {};
      if (page.next !== undefined) {
        const base = r.kind === "tags" ? `/v2/${r.name}/tags/list` : "/v2/_catalog";
        const more = new URLSearchParams({ ...(n === undefined ? {} : { n: String(n) }), last: page.next });
        if (ns !== undefined) more.set("ns", ns);
        headers.link = `<${base}?${more}>; rel="next"`;
      }
      return sendJson(
        res,
        200,
        r.kind === "tags" ? { name: r.name, tags: page.items } : { repositories: page.items },
        headers,
      );
    }
    case "referrers": {
      const at = locate(r.name);
      const subject = requireDigest(r.digest);
      if (!read) throw unsupported();
      const artifactType = new URLSearchParams(q === -1 ? "" : url.slice(q + 1)).get("artifactType");
      const a = await deps.mirror.referrers(at, subject);
      out.cache = a.stale ? "stale" : a.source === "cache" ? "hit" : "miss";
      const { body, headers } = answerReferrers(a, artifactType ?? undefined);
      res.writeHead(200, { ...API_VERSION, ...headers });
      if (method === "HEAD") return void res.end();
      out.bytes = body.length;
      res.end(body);
      return;
    }
  }
}

function sendBlob(
  deps: RegistryDeps,
  req: IncomingMessage,
  res: ServerResponse,
  b: BlobAnswer,
  digest: string,
  out: Outcome,
): void {
  if (b.redirect !== undefined && req.method === "GET") {
    // As distribution's redirect option: the client fetches the bytes (its Range included) there.
    res.writeHead(307, {
      ...API_VERSION,
      "docker-content-digest": digest,
      location: b.redirect,
      "content-length": 0,
    });
    res.end();
    return;
  }
  const range = parseRange(req.headers.range, b.size);
  if (range.kind === "unsatisfiable") {
    b.release();
    throw new RegistryError("RANGE_INVALID", "requested range not satisfiable", {
      headers: { "content-range": `bytes */${b.size}` },
    });
  }
  let status = 200;
  let start = 0;
  let end = b.size === undefined ? undefined : b.size - 1;
  let contentRange: string | undefined;
  if (range.kind === "partial") {
    status = 206;
    ({ start, end } = range);
    contentRange = `bytes ${start}-${end}/${b.size}`;
  }
  const length = end === undefined ? undefined : end - start + 1;
  res.writeHead(status, headerObject(blobHeaders(digest, length, contentRange)));
  if (req.method === "HEAD" || length === 0) {
    b.release();
    res.end();
    return;
  }
  // On a miss, the headers go now, not with the first body bytes: a client learns at once that
  // its blob is coming (containerd gives up after 30 s without headers).
  if (b.source === "upstream") res.flushHeaders();
  // What we set out to send; the request log marks a transfer that did not finish as aborted.
  out.bytes = length ?? 0;
  // Counted at 'finish' (all handed to the OS), which comes before the client can have read it all.
  res.once("finish", () => deps.metrics.servedFrom(b.source).inc(out.bytes));
  b.send(res, start, end);
}

function pageSize(n: string | null): number | undefined {
  if (n === null) return undefined;
  if (!/^\d{1,6}$/.test(n))
    throw new RegistryError("PAGINATION_NUMBER_INVALID", "n must be a whole number", { detail: { n } });
  return Number(n);
}

function unsupported(): RegistryError {
  return new RegistryError("UNSUPPORTED", "this is a pull-through mirror: push and delete are not supported");
}
