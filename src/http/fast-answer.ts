import type { IncomingMessage } from "node:http";
import { parseAccept } from "../oci/media-types.ts";
import { assertRequestName, parseReference, requireDigest } from "../oci/reference.ts";
import type { ClientAddresses } from "../access/client-address.ts";
import type { Routed } from "../mirror/routing.ts";
import type { ManifestAnswer } from "../mirror/manifests.ts";
import type { Reference } from "../oci/reference.ts";
import type { FastAnswer, FastResponder } from "./fast-conn.ts";
import type { PlainRequest } from "./fast-parse.ts";
import { requestId, type RegistryDeps } from "./registry.ts";
import { NOSNIFF } from "./respond.ts";
import { route } from "./route.ts";
import { BASE_BODY, BASE_HEADERS, blobHeaders, headerText, manifestHeaders } from "./answer-headers.ts";

// What the fast path (fast-conn.ts) may answer: GET and HEAD of /v2/, of a manifest and of a
// blob, when everything the answer needs is in memory — the mirror's own checks passed (name,
// login by token, repository policy, the client's share of requests) and the cache holds the
// bytes (Mirror.peekManifest, peekBlob). Anything else, a refusal included, is undefined: the
// full handler (registry.ts) takes the request and answers it as always. So this file never
// writes an error, and does nothing (no counter, no log line) before it knows it answers.
//
// The bytes are the ones registry.ts would send through Node: both take their headers from
// answer-headers.ts.

const NOSNIFF_LINE = headerText(Object.entries(NOSNIFF));
const BASE = { headers: headerText(BASE_HEADERS), body: Buffer.from(BASE_BODY) };

export function fastResponder(
  deps: RegistryDeps,
  clients: ClientAddresses,
  inFlight: ReadonlyMap<string, number>,
): FastResponder {
  const logRequests = deps.log.isInfoEnabled();
  return (request, socket) => {
    const started = performance.now();
    const client = clients.of(socket.remoteAddress, request.headers);
    const send = (answered: Answered | undefined): FastAnswer | undefined => {
      if (!answered) return undefined;
      const id = requestId(request.headers["x-request-id"]);
      const head = `HTTP/1.1 200 OK\r\n${NOSNIFF_LINE}x-request-id: ${id}\r\n${answered.headers}`;
      const body = request.method === "GET" ? answered.body : undefined;
      if (body) deps.metrics.servedFrom("cache").inc(body.length);
      deps.metrics.fastAnswers.inc();
      if (logRequests)
        deps.log.info("request", {
          id,
          client,
          method: request.method,
          path: request.url,
          status: 200,
          bytes: body?.length ?? 0,
          ms: Math.round((performance.now() - started) * 10) / 10,
          cache: answered.cache,
        });
      return body ? { head, body } : { head };
    };
    let answered: Answered | undefined | Promise<Answered | undefined>;
    try {
      // At its limit, the client gets the full handler's 429.
      if ((inFlight.get(client) ?? 0) >= deps.perClient) return undefined;
      answered = answer(deps, request, client);
    } catch {
      // A name, tag or digest the grammar refuses, a login refused: the full handler says so.
      return undefined;
    }
    // A rejection is the full handler's to report (fast-conn.ts hands the request over).
    return answered instanceof Promise ? answered.then(send) : send(answered);
  };
}

interface Answered {
  /** Header lines after the request id, each ending in CRLF. */
  headers: string;
  body: Buffer;
  cache?: "hit";
}

type Maybe = Answered | undefined | Promise<Answered | undefined>;

function answer(deps: RegistryDeps, request: PlainRequest, client: string): Maybe {
  const url = request.url;
  const q = url.indexOf("?");
  const r = route(q === -1 ? url : url.slice(0, q));
  if (!r || (r.kind !== "base" && r.kind !== "manifest" && r.kind !== "blob")) return undefined;
  const ns = q === -1 ? undefined : (new URLSearchParams(url.slice(q + 1)).get("ns") ?? undefined);
  const name = r.kind === "base" ? undefined : r.name;
  if (name !== undefined) {
    assertRequestName(name);
    const hosted = deps.hosted;
    if (hosted && (ns === undefined || !deps.mirror.mirrors(ns)) && hosted.hosted.names.matches(name))
      return undefined;
  }
  if (deps.gate) {
    // A token is checked in memory; a password check is a promise (and counts failed logins).
    const auth = request.headers.authorization;
    if (auth !== undefined && auth.trim() !== "" && !/^Bearer\s/i.test(auth.trim())) return undefined;
    const req = { headers: request.headers } as unknown as IncomingMessage;
    if (typeof deps.gate.authorize(req, name, "pull", client) !== "string") return undefined;
  }
  if (r.kind === "base") return BASE;
  const at = deps.mirror.route(ns, r.name);
  if (!deps.policy.permits(at.upstream, at.repo)) return undefined;
  return r.kind === "manifest" ? manifest(deps, request, at, r.reference) : blob(deps, request, at, r.digest);
}

function manifest(deps: RegistryDeps, request: PlainRequest, at: Routed, reference: string): Maybe {
  const ref = parseReference(reference);
  const accept = parseAccept(request.headers.accept);
  const m = deps.mirror.peekManifest(at, ref, accept);
  if (m) return manifestAnswer(deps, at, ref, m);
  // On disk and not yet in memory (a restart, another worker's fetch): read, then answer.
  return deps.mirror.manifestFromCache(at, ref, accept).then((m) => m && manifestAnswer(deps, at, ref, m));
}

function manifestAnswer(deps: RegistryDeps, at: Routed, ref: Reference, m: ManifestAnswer): Answered {
  if (ref.kind === "tag") {
    deps.metrics.pullsOf(at.upstream).inc();
    deps.pulls?.record(at.upstream, at.repo, ref.tag);
  }
  return { headers: headerText(manifestHeaders(m)), body: m.bytes, cache: "hit" };
}

function blob(deps: RegistryDeps, request: PlainRequest, at: Routed, digest: string): Maybe {
  // A range is a 206 (or a 416): the full handler's.
  if (request.headers.range !== undefined) return undefined;
  const d = requireDigest(digest);
  const bytes = deps.mirror.peekBlob(at, d);
  if (bytes) return blobAnswer(digest, bytes);
  // A small blob on disk is read into memory, as the full handler would; anything else is its.
  return deps.mirror.loadSmallBlob(at, d).then((b) => b && blobAnswer(digest, b));
}

function blobAnswer(digest: string, bytes: Buffer): Answered {
  return { headers: headerText(blobHeaders(digest, bytes.length)), body: bytes, cache: "hit" };
}
