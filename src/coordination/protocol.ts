// The messages between the cluster primary's CoordinationHub (hub.ts) and each worker's
// WorkerCoordinator (member.ts). Every message is one object under the key TAG, so the pipe can
// carry other traffic (cluster's own, a metrics aggregator's) that both ends ignore.
//
// A member asks with a request id of its own and the hub answers once with { op: "res", id };
// flight outcomes and events come from the hub unasked. Node's IPC keeps the order of messages
// on one pipe, which the protocol relies on: a member's "fail" reaches the hub before a retry's
// "run", so the retry starts afresh.
import { ERROR_STATUS, RegistryError, type ErrorCode } from "../oci/errors.ts";

export const TAG = "regmirrorCoord";

/** A message pipe to one peer; messages are structured-clonable objects. */
export interface Channel {
  send(msg: object): void;
  /**
   * Registers a handler; returns the function that removes it. The handler sees all traffic on
   * the pipe: what is not tagged TAG must be ignored.
   */
  onMessage(handler: (msg: unknown) => void): () => void;
}

/** A flight's outcome as joiners in other members learn it. */
export type Ended = "done" | "failed";

/** Member → hub. */
export type Request =
  | { op: "run"; id: number; name: string; key: string }
  | { op: "join"; id: number; name: string; key: string }
  | { op: "acquire"; id: number; name: string; key: string; ttlMs: number }
  | { op: "renew"; id: number; name: string; key: string; token: number; ttlMs: number }
  | { op: "release"; id: number; name: string; key: string; token: number }
  | { op: "close"; id: number }
  | { op: "publish"; id: number; name: string; event: unknown };

/**
 * Member → hub, unanswered: what the owner of a flight tells. `last`: nothing holds the flight,
 * so its end follows at once; a joiner takes the flight as over with the value (the hub passes
 * the flag on untouched, so a hub or member without it still works by the end that follows).
 */
export type Report =
  | { op: "value"; flight: number; value: unknown; last?: boolean }
  | { op: "fail"; flight: number; error: WireError }
  | { op: "end"; flight: number; outcome: Ended };

/** The hub's answers; what each carries depends on the request. */
export interface Response {
  op: "res";
  id: number;
  /** run, join: the flight's id (join: none when there is no flight). */
  flight?: number;
  /** run: this member runs it. */
  owner?: boolean;
  /** run, join of a held flight: its value, already known. */
  value?: { v: unknown };
  /** acquire: the grant's token (none when held); renew: whether it was still held. */
  token?: number;
  ok?: boolean;
}

/** Hub → member, unasked: a flight this member joined, and events. */
export type Notice =
  | { op: "value"; flight: number; value: unknown; last?: boolean }
  | { op: "fail"; flight: number; error: WireError }
  | { op: "ended"; flight: number; outcome: Ended }
  | { op: "event"; name: string; event: unknown };

export type ToHub = Request | Report;
export type ToMember = Response | Notice;

export function wrap(msg: ToHub | ToMember): object {
  return { [TAG]: msg };
}

/** The payload of one of ours, or undefined for other traffic on the pipe. */
export function unwrap<M>(raw: unknown): M | undefined {
  if (typeof raw !== "object" || raw === null || !(TAG in raw)) return undefined;
  return (raw as Record<string, M>)[TAG];
}

/**
 * A rejection as it crosses: structured clone keeps an Error's message but not its class, nor
 * `code` (Node's and undici's errors) nor a RegistryError's status, which the mirror answers
 * clients with. So the fields travel as plain data and the error is rebuilt on the other side.
 */
export interface WireError {
  name: string;
  message: string;
  code?: string;
  status?: number;
  detail?: unknown;
  headers?: Record<string, string>;
}

/** The member running a flight went away (its worker exited) before the flight's value was known. */
export class MemberGoneError extends Error {
  readonly code = "MEMBER_GONE";
  constructor(message = "the worker running this flight went away") {
    super(message);
    this.name = "MemberGoneError";
  }
}

export function toWire(err: unknown): WireError {
  if (!(err instanceof Error)) return { name: "Error", message: String(err) };
  const wire: WireError = { name: err.name, message: err.message };
  const { code } = err as { code?: unknown };
  if (typeof code === "string") wire.code = code;
  if (err instanceof RegistryError) {
    wire.status = err.status;
    wire.headers = err.headers;
    // Detail is free-form: kept only when it is plain data.
    if (err.detail !== undefined && isCloneable(err.detail)) wire.detail = err.detail;
  }
  return wire;
}

export function fromWire(wire: WireError): Error {
  if (wire.name === "RegistryError" && wire.code !== undefined && wire.code in ERROR_STATUS) {
    return new RegistryError(wire.code as ErrorCode, wire.message, {
      status: wire.status,
      detail: wire.detail,
      headers: wire.headers,
    });
  }
  if (wire.name === "MemberGoneError") return new MemberGoneError(wire.message);
  const err = new Error(wire.message);
  err.name = wire.name;
  if (wire.code !== undefined) Object.assign(err, { code: wire.code });
  return err;
}

function isCloneable(value: unknown): boolean {
  try {
    structuredClone(value);
    return true;
  } catch {
    return false;
  }
}
