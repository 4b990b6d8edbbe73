import type { Server as HttpServer } from "node:http";
import type { Socket } from "node:net";
import { parseRequest, type PlainRequest } from "./fast-parse.ts";

// The fast path: a connection is read here first, and each plain request (fast-parse.ts) that
// the cache answers from memory (a manifest, a small blob, /v2/) is answered here, as one
// write of prepared bytes. Node's HTTP server costs about as much again as the rest of such a
// request (an IncomingMessage and a ServerResponse, both streams, header objects validated one
// by one): on a 2-core machine this path serves about twice the requests per second.
//
// The first request that is not plain, or that the cache cannot answer from memory, hands the
// connection to Node's HTTP server for good, with the bytes not yet parsed: from there on it is
// an ordinary Node connection (uploads, ranges, misses, logins, errors). A connection never
// comes back, so what this file must get right is small: timeouts, backpressure, pipelining and
// the hand-over.

export interface FastAnswer {
  /** Status line and header lines, each ending in CRLF; Date and Connection are added here. */
  head: string;
  /** Absent for HEAD. */
  body?: Buffer;
}

/**
 * Answers `request` from the cache, or returns undefined: Node's handler takes it. A promise
 * (a manifest or small blob read from disk first) holds the connection's later requests back;
 * undefined or a rejection hands this request over.
 */
export type FastResponder = (
  request: PlainRequest,
  socket: Socket,
) => FastAnswer | undefined | Promise<FastAnswer | undefined>;

export interface FastLimits {
  /** A request's header section must be complete this long after its first byte (Node's headersTimeout). */
  headersTimeoutMs: number;
  /** An idle connection is closed after this long (Node's keepAliveTimeout). */
  keepAliveTimeoutMs: number;
  /** A client that takes none of our answers for this long is cut off (limits.stallTimeout). */
  stallMs: number;
}

/** Unparsed bytes past which a connection stops reading until the client takes its answers. */
const MAX_PENDING = 64 * 1024;

/** What a server's shutdown needs of the connections the fast path holds. */
interface Held {
  /** Ends the connection now if it has nothing under way, else after its next answer. */
  closeIfIdle(): void;
  destroy(): void;
}

/**
 * Puts the fast path in front of `server`'s own connection listener (an http.Server's
 * "connection", an https.Server's "secureConnection"), which then gets the connections handed
 * over. Returns false, changing nothing, when the server does not have exactly one.
 *
 * Node's closeIdleConnections() and closeAllConnections() know only Node's connections: they are
 * wrapped to close the fast path's as well, or a shutdown would wait its whole deadline for every
 * kept-alive client (dockerd, containerd and undici keep them), and the server never close.
 */
export function frontConnections(
  server: HttpServer,
  event: "connection" | "secureConnection",
  respond: FastResponder,
  limits: FastLimits,
): boolean {
  const listeners = server.listeners(event);
  if (listeners.length !== 1) return false;
  const node = listeners[0] as (socket: Socket) => void;
  server.removeListener(event, node);
  const held = new Set<Held>();
  let closing = false;
  server.on(event, (socket: Socket) => {
    const conn: Held = fastConnection(socket, respond, limits, {
      handOver: (s) => node.call(server, s),
      closing: () => closing,
      left: () => held.delete(conn),
    });
    held.add(conn);
  });
  const closeIdle = server.closeIdleConnections.bind(server);
  const closeAll = server.closeAllConnections.bind(server);
  server.closeIdleConnections = () => {
    closing = true;
    for (const c of held) c.closeIfIdle();
    closeIdle();
  };
  server.closeAllConnections = () => {
    closing = true;
    for (const c of held) c.destroy();
    closeAll();
  };
  return true;
}

interface ConnectionHooks {
  /** Gives the connection to Node's HTTP server. */
  handOver(socket: Socket): void;
  /** The server is shutting down: answer with Connection: close. */
  closing(): boolean;
  /** The connection closed or went to Node's server. */
  left(): void;
}

function fastConnection(
  socket: Socket,
  respond: FastResponder,
  limits: FastLimits,
  hooks: ConnectionHooks,
): Held {
  /** Bytes read and not yet answered, latin1 (one char per byte). */
  let pending = "";
  /** Our answers wait in Node's buffer: no further answer until 'drain'. */
  let blocked = false;
  /** An answer is being read from disk: the requests after it wait. */
  let waiting = false;
  /** The client sent its last byte (a half-close): answer what is complete, then end. */
  let ended = false;
  /** Set while a request's header section is incomplete: its deadline. */
  let partial: NodeJS.Timeout | undefined;
  /** Closed, closing, or Node's: nothing more to do here. */
  let gone = false;
  /** Node's HTTP server has the connection now. */
  let handed = false;

  const onData = (chunk: Buffer) => {
    pending += chunk.toString("latin1");
    if (blocked || waiting) {
      // A client that pipelines without reading: stop reading, so memory stays bounded.
      if (pending.length > MAX_PENDING) socket.pause();
      return;
    }
    serve();
  };
  const onDrain = () => {
    blocked = false;
    if (socket.isPaused()) socket.resume();
    if (!waiting) serve();
  };
  const onTimeout = () => socket.destroy();
  const onEnd = () => {
    ended = true;
    if (!blocked && !waiting) serve();
  };
  const onError = () => socket.destroy();
  const onClose = () => {
    gone = true;
    clearTimeout(partial);
    hooks.left();
  };

  /** The responder, which must not throw here: a throw in a 'data' handler ends the process. */
  const ask = (request: PlainRequest): ReturnType<FastResponder> => {
    try {
      return respond(request, socket);
    } catch {
      return undefined;
    }
  };

  const serve = () => {
    socket.cork();
    try {
      while (!blocked && !waiting && !gone && pending.length > 0) {
        const p = parseRequest(pending);
        if (p.kind === "partial") {
          if (ended) break;
          // Node's headersTimeout: counted from the first byte, however slowly the rest trickles.
          partial ??= setTimeout(() => {
            if (!gone && socket.writable)
              socket.end("HTTP/1.1 408 Request Timeout\r\nConnection: close\r\n\r\n");
            socket.destroy();
          }, limits.headersTimeoutMs).unref();
          return;
        }
        clearTimeout(partial);
        partial = undefined;
        if (p.kind === "other") return giveToNode();
        const answer = ask(p.request);
        if (answer instanceof Promise) {
          waiting = true;
          answer.then(
            (a) => later(a, p.request.close, p.length),
            () => later(undefined, false, 0),
          );
          return;
        }
        if (!answer) return giveToNode();
        send(answer, p.request.close, p.length);
      }
    } finally {
      // After the hand-over the socket's corking is Node's.
      if (!handed) socket.uncork();
    }
    if (gone) return;
    if ((ended || hooks.closing()) && !blocked) {
      // Everything complete is answered; a request cut short by the half-close (or the server's
      // shutdown) gets nothing.
      gone = true;
      socket.end();
      return;
    }
    // Idle, or waiting for the client to take our answers: both are bounded.
    socket.setTimeout(blocked ? limits.stallMs : limits.keepAliveTimeoutMs);
  };

  /** The answer read from disk for the request at the front of `pending`. */
  const later = (answer: FastAnswer | undefined, close: boolean, length: number) => {
    waiting = false;
    if (gone) return;
    if (!answer) return giveToNode();
    socket.cork();
    try {
      send(answer, close, length);
    } finally {
      socket.uncork();
    }
    if (!blocked && socket.isPaused()) socket.resume();
    serve();
  };

  /** Writes an answer to the request at the front of `pending`, `length` bytes long. */
  const send = (answer: FastAnswer, asked: boolean, length: number) => {
    pending = pending.slice(length);
    const close = asked || hooks.closing();
    const tail = close ? "Connection: close\r\n\r\n" : keepAliveLines(limits.keepAliveTimeoutMs);
    let ok = socket.write(`${answer.head}Date: ${httpDate()}\r\n${tail}`, "latin1");
    if (answer.body) ok = socket.write(answer.body);
    if (close) {
      gone = true;
      socket.end();
    } else if (!ok) blocked = true;
  };

  const giveToNode = () => {
    gone = true;
    handed = true;
    clearTimeout(partial);
    socket.setTimeout(0);
    for (const [event, listener] of listeners) socket.removeListener(event, listener);
    socket.uncork();
    const rest = pending;
    pending = "";
    hooks.left();
    hooks.handOver(socket);
    // Node's listener reads the socket from now on; the bytes we hold are the first it gets,
    // synchronously, before any more can arrive, and then the half-close if it came already.
    if (rest.length > 0) socket.emit("data", Buffer.from(rest, "latin1"));
    if (ended) socket.emit("end");
    else if (socket.isPaused()) socket.resume();
  };

  const listeners: Array<[string, (...args: Buffer[]) => void]> = [
    ["data", onData],
    ["drain", onDrain],
    ["timeout", onTimeout],
    ["end", onEnd],
    ["error", onError],
    ["close", onClose],
  ];
  for (const [event, listener] of listeners) socket.on(event, listener);
  socket.setTimeout(limits.keepAliveTimeoutMs);
  return {
    closeIfIdle() {
      if (gone) return;
      // Under way: an answer being read, waiting for the client, or requests not yet answered.
      if (waiting || blocked || pending.length > 0) return;
      gone = true;
      socket.end();
    },
    destroy: () => socket.destroy(),
  };
}

/** What Node sends on a kept-alive connection. */
function keepAliveLines(ms: number): string {
  return `Connection: keep-alive\r\nKeep-Alive: timeout=${Math.floor(ms / 1000)}\r\n\r\n`;
}

let dateSecond = 0;
let dateText = "";

/** The Date header's value, formatted once a second (as Node does). */
function httpDate(): string {
  const now = Date.now();
  const second = Math.floor(now / 1000);
  if (second !== dateSecond) {
    dateSecond = second;
    dateText = new Date(now).toUTCString();
  }
  return dateText;
}
