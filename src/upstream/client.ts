import { finished, type Readable } from "node:stream";
import type { IncomingHttpHeaders } from "node:http";
import { Agent, request, type Dispatcher } from "undici";
import pLimit from "p-limit";
import { RegistryError } from "../oci/errors.ts";
import type { Metrics } from "../metrics/metrics.ts";
import type { Events, Flights } from "../coordination/coordinator.ts";
import { parseChallenges, type Challenge } from "./challenge.ts";
import { Breaker, errorOutcome, isOutage, type BreakerOptions } from "./breaker.ts";
import { TokenCache, basic, tokenKey, type Credentials, type Token } from "./auth.ts";
import {
  RedirectRefusedError,
  checkedLookup,
  literalRefusal,
  privateTargetsAllowed,
  redirectRefused,
} from "./redirect-policy.ts";

// The remote registry, as one object: keep-alive connections, a bound on requests in flight,
// authentication (bearer tokens from the challenge, or Basic), and redirects to blob storage.
// It knows nothing of the cache.

export interface UpstreamOptions {
  /** The registry host clients know it by (docker.io); the label on its metrics. */
  name: string;
  url: string;
  credentials?: Credentials;
  concurrency: number;
  /** Time allowed for response headers, and between body chunks. */
  timeoutMs: number;
  /** Follow redirects to loopback, link-local and private addresses even from a public upstream. */
  privateRedirects?: boolean;
  /** Threshold and cool-down of the circuit breaker (tests shorten the cool-down). */
  breaker?: Pick<BreakerOptions, "threshold" | "coolDownMs" | "now">;
  metrics: Metrics;
  /** Merges concurrent negotiations of one token (by tokenKey); its keys are this upstream's alone. */
  tokenFlights: Flights<Token>;
  /**
   * The challenges this upstream sent, told to every worker: one that has never asked the
   * upstream then sends its first request with a token, not a bare one that earns a 401 (and
   * the upstream sees two requests where one process would have sent one).
   */
  challenges?: Events<Challenge>;
}

export interface UpstreamRequest {
  method: "GET" | "HEAD";
  /** Repository name, for the token scope. */
  repo: string;
  /** Path below the upstream URL, e.g. /v2/library/alpine/manifests/latest. */
  path: string;
  headers?: Record<string, string | string[]>;
  /** Aborts the request and its body (a fill passes its own time limit, not the client's). */
  signal?: AbortSignal;
  /** This request's own limit for headers and between body chunks (a tag revalidation's is short). */
  timeoutMs?: number;
}

export interface UpstreamResponse {
  status: number;
  headers: IncomingHttpHeaders;
  /** Must be consumed or destroyed: it holds a concurrency slot until it ends. */
  body: Readable;
}

const MAX_REDIRECTS = 5;

export class UpstreamClient {
  readonly url: string;
  readonly name: string;
  /** The upstream's own origin: credentials and the plain agent stay on it. */
  private readonly origin: URL;
  private readonly agent: Agent;
  /** For hops to other hosts: its sockets connect only to addresses the redirect policy allows. */
  private readonly redirectAgent: Agent;
  /** Whether redirects may go to non-public addresses (asks DNS about the upstream once). */
  private readonly allowPrivateRedirects: () => Promise<boolean>;
  private readonly limit;
  private readonly breaker: Breaker;
  private readonly tokens: TokenCache;
  /** The last challenge seen, so later requests can carry a token without a 401 round trip first. */
  private challenge: Challenge | undefined;
  /** Anonymous tokens for redirect targets that challenge, per origin. */
  private readonly foreignTokens = new Map<string, TokenCache>();
  private readonly unsubscribe: () => void;

  constructor(private readonly opts: UpstreamOptions) {
    this.url = opts.url;
    this.name = opts.name;
    this.origin = new URL(opts.url);
    this.agent = new Agent({ keepAliveTimeout: 30_000, connections: opts.concurrency * 2 });
    this.allowPrivateRedirects = privateTargetsAllowed(opts.url, opts.privateRedirects ?? false);
    this.redirectAgent = new Agent({
      keepAliveTimeout: 30_000,
      connections: opts.concurrency * 2,
      connect: { lookup: checkedLookup(() => this.allowPrivateRedirects()) },
    });
    this.limit = pLimit(opts.concurrency);
    this.breaker = new Breaker({
      ...opts.breaker,
      onChange: (open) => opts.metrics.upstreamUp.set({ upstream: opts.name }, open ? 0 : 1),
    });
    this.tokens = new TokenCache(opts.url, opts.credentials, this.agent, opts.timeoutMs);
    this.unsubscribe = opts.challenges?.subscribe((c) => (this.challenge = c)) ?? (() => undefined);
  }

  async close(): Promise<void> {
    this.unsubscribe();
    await Promise.all([this.agent.close(), this.redirectAgent.close()]);
  }

  /** Sends a request, negotiating auth and following redirects; any answer is returned, errors thrown. */
  fetch(req: UpstreamRequest): Promise<UpstreamResponse> {
    // An upstream known to be down is neither asked nor queued for: the caller serves a stale
    // tag or answers 503 at once, instead of waiting out the timeout again.
    if (this.breaker.blocked()) return Promise.reject(this.downError());
    // Hold a p-limit slot until the body is done, not merely until headers arrive: the bound is
    // on transfers in flight.
    return new Promise<UpstreamResponse>((resolve, reject) => {
      void this.limit(
        () =>
          new Promise<void>((release) => {
            const permit = this.breaker.acquire();
            if (permit === undefined) {
              release();
              reject(this.downError());
              return;
            }
            this.fetchAuthed(req).then(
              (res) => {
                this.breaker.settle(permit, isOutage(res.status) ? "failure" : "success");
                finished(res.body, () => release());
                resolve(res);
              },
              (err: unknown) => {
                this.breaker.settle(permit, errorOutcome(err, req.signal?.aborted ?? false));
                release();
                reject(err);
              },
            );
          }),
      );
    });
  }

  private downError(): RegistryError {
    const seconds = Math.max(1, Math.ceil(this.breaker.retryInMs() / 1000));
    return new RegistryError("UNAVAILABLE", "the upstream registry is down; not asking it again yet", {
      detail: { upstream: this.name, retryInSeconds: seconds },
      headers: { "retry-after": String(seconds) },
    });
  }

  private async fetchAuthed(req: UpstreamRequest): Promise<UpstreamResponse> {
    const scope = `repository:${req.repo}:pull`;
    let auth = await this.authorization(scope, false);
    let res = await this.send(req, new URL(this.url + req.path), auth);
    if (res.status === 401) {
      const fresh = parseChallenges(res.headers["www-authenticate"]);
      await drain(res.body);
      const bearer = fresh.find((c) => c.scheme === "bearer");
      const basicChallenge = fresh.find((c) => c.scheme === "basic");
      if (bearer) {
        if (this.challenge && auth) this.tokens.drop(this.challenge, scope);
        this.learn(bearer);
      } else if (basicChallenge && this.opts.credentials) {
        this.learn(basicChallenge);
      } else {
        return unauthorized(req);
      }
      auth = await this.authorization(scope, true);
      res = await this.send(req, new URL(this.url + req.path), auth);
      if (res.status === 401) {
        await drain(res.body);
        return unauthorized(req);
      }
    }
    return this.followRedirects(req, res, auth);
  }

  private async followRedirects(
    req: UpstreamRequest,
    res: UpstreamResponse,
    auth: string | undefined,
  ): Promise<UpstreamResponse> {
    let url = new URL(this.url + req.path);
    for (let hops = 0; isRedirect(res.status) && hops < MAX_REDIRECTS; hops++) {
      const location = res.headers.location;
      await drain(res.body);
      if (typeof location !== "string")
        throw new RegistryError("UPSTREAM_ERROR", "upstream redirect without a Location");
      const next = new URL(location, url);
      if (next.protocol !== "http:" && next.protocol !== "https:") {
        throw new RegistryError("UPSTREAM_ERROR", "upstream redirected to a non-http(s) URL");
      }
      // Credentials go to the upstream's own origin only; storage URLs are pre-signed.
      const sameOrigin = next.origin === this.origin.origin;
      const sameHost = next.hostname === this.origin.hostname;
      // A name is checked by what it resolves to, when redirectAgent connects; a literal here.
      if (!sameHost) {
        const why = literalRefusal(next.hostname, await this.allowPrivateRedirects());
        if (why !== undefined) throw redirectRefused(why);
      }
      url = next;
      const dispatcher = sameHost ? this.agent : this.redirectAgent;
      res = await this.send(req, url, sameOrigin ? auth : undefined, dispatcher);
      if (res.status === 401 && !sameOrigin) res = await this.anonymousRetry(req, url, res);
    }
    if (isRedirect(res.status)) {
      await drain(res.body);
      throw new RegistryError("UPSTREAM_ERROR", "too many upstream redirects");
    }
    return res;
  }

  /**
   * A redirect target that wants a token of its own (registry.k8s.io sends every request on to a
   * regional Artifact Registry, which challenges even anonymous pulls): negotiate an anonymous
   * token with that host's realm — never with our credentials — and try once more.
   */
  private async anonymousRetry(
    req: UpstreamRequest,
    url: URL,
    res: UpstreamResponse,
  ): Promise<UpstreamResponse> {
    const bearer = parseChallenges(res.headers["www-authenticate"]).find((c) => c.scheme === "bearer");
    if (!bearer) return res;
    await drain(res.body);
    let tokens = this.foreignTokens.get(url.origin);
    if (!tokens) {
      tokens = new TokenCache(url.origin, undefined, this.redirectAgent, this.opts.timeoutMs);
      this.foreignTokens.set(url.origin, tokens);
    }
    const scope = bearer.params.scope ?? `repository:${req.repo}:pull`;
    const token = tokens.cached(bearer, scope) ?? (await tokens.fetch(bearer, scope)).token;
    return this.send(req, url, `Bearer ${token}`, this.redirectAgent);
  }

  /** A challenge from the upstream: used here at once, and told to the other workers. */
  private learn(c: Challenge): void {
    this.challenge = c;
    // Not told: each of the others learns it from its own first 401 instead.
    this.opts.challenges?.publish(c).catch(() => undefined);
  }

  private async authorization(scope: string, force: boolean): Promise<string | undefined> {
    const c = this.challenge;
    if (!c) return undefined;
    if (c.scheme === "basic") return this.opts.credentials ? basic(this.opts.credentials) : undefined;
    const cached = this.tokens.cached(c, scope);
    if (cached && !force) return `Bearer ${cached}`;
    // Many requests for one repository start together, in every worker: negotiate its token
    // once. Each worker keeps it, so its next request to that repository needs no token again.
    const flight = this.opts.tokenFlights.run(tokenKey(c, scope), () => this.tokens.fetch(c, scope));
    const token = await flight.promise;
    if (flight.joined) this.tokens.remember(c, scope, token);
    return `Bearer ${token.token}`;
  }

  private async send(
    req: UpstreamRequest,
    url: URL,
    auth: string | undefined,
    dispatcher: Dispatcher = this.agent,
  ): Promise<UpstreamResponse> {
    const headers: Record<string, string | string[]> = { ...req.headers, "user-agent": "regmirror" };
    if (auth) headers.authorization = auth;
    const started = performance.now();
    let res: Dispatcher.ResponseData;
    try {
      res = await request(url, {
        method: req.method,
        headers,
        signal: req.signal,
        dispatcher,
        headersTimeout: req.timeoutMs ?? this.opts.timeoutMs,
        bodyTimeout: req.timeoutMs ?? this.opts.timeoutMs,
      });
    } catch (err) {
      // Refused by our policy, not unreachable: the upstream answered, with a bad redirect.
      if (err instanceof RedirectRefusedError) throw redirectRefused(err.message);
      this.opts.metrics.upstreamRequests.inc({ upstream: this.name, method: req.method, status: "0" });
      if (!req.signal?.aborted) this.opts.metrics.upstreamUp.set({ upstream: this.name }, 0);
      if (req.signal?.aborted) throw err;
      throw new RegistryError("UNAVAILABLE", "upstream registry unreachable", {
        detail: { reason: (err as Error).message },
        cause: err,
      });
    }
    const status = String(res.statusCode);
    const labels = { upstream: this.name, method: req.method, status };
    const m = this.opts.metrics;
    m.upstreamRequests.inc(labels);
    m.upstreamDuration.observe(labels, (performance.now() - started) / 1000);
    m.upstreamUp.set({ upstream: this.name }, isOutage(res.statusCode) ? 0 : 1);
    // Docker Hub: "ratelimit-remaining: 76;w=21600".
    const remaining = parseInt(String(res.headers["ratelimit-remaining"] ?? ""), 10);
    if (Number.isFinite(remaining)) m.rateLimitRemaining.set({ upstream: this.name }, remaining);
    return { status: res.statusCode, headers: res.headers as IncomingHttpHeaders, body: res.body };
  }
}

function isRedirect(status: number): boolean {
  return status === 301 || status === 302 || status === 303 || status === 307 || status === 308;
}

async function drain(body: Readable): Promise<void> {
  body.resume();
  await new Promise<void>((resolve) => finished(body, () => resolve()));
}

/**
 * Docker Hub answers 401 both for private and for nonexistent repositories; to a client of an
 * open mirror either way the repository is not there (and a 401 from us would need a challenge
 * of our own that no credentials could satisfy).
 */
function unauthorized(req: UpstreamRequest): never {
  throw new RegistryError("NAME_UNKNOWN", "repository not found upstream, or access to it was denied", {
    detail: { repository: req.repo },
  });
}
