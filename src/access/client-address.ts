import { BlockList, isIP } from "node:net";
import type { IncomingHttpHeaders } from "node:http";

// Which address a request comes from, for the per-client limits, the failed-login limit and
// the request log. Pure.
//
// The socket peer is the answer unless it is one of `trustedProxies`: only then do the
// forwarding headers count, and they are read from the right, hop by hop, skipping trusted
// proxies, because every hop appends the address it saw. The left-most entries are whatever the
// client wrote, so the right-most address that is not a trusted proxy is the client; anything
// further left is never believed. Without trustedProxies the headers are never read, so a
// client cannot pick its own address.
//
// X-Forwarded-For is what almost every proxy (nginx, HAProxy, Envoy, cloud load balancers)
// maintains; RFC 7239 `Forwarded: for=` is read only when X-Forwarded-For is absent, so a client
// cannot slip a made-up Forwarded header past a proxy that maintains only X-Forwarded-For.

/** Longest chain of hops we walk: headers are at most 16 KiB, but no real chain is this long. */
const MAX_HOPS = 32;

export class ClientAddresses {
  private readonly trusted: BlockList | undefined;

  /** `trustedProxies`: IP addresses and CIDRs (as config validates them). */
  constructor(trustedProxies: readonly string[]) {
    if (trustedProxies.length === 0) return;
    const list = new BlockList();
    for (const entry of trustedProxies) {
      const slash = entry.indexOf("/");
      const address = normalize(slash === -1 ? entry : entry.slice(0, slash));
      if (address === undefined) throw new Error(`trustedProxies: not an address or CIDR: ${entry}`);
      const type = isIP(address) === 4 ? "ipv4" : "ipv6";
      if (slash === -1) list.addAddress(address, type);
      else list.addSubnet(address, subnetPrefix(entry, address, slash), type);
    }
    this.trusted = list;
  }

  /** The client behind a request whose socket peer is `peer`. */
  of(peer: string | undefined, headers: IncomingHttpHeaders): string {
    // The usual case, on every request: no proxies to look through, and the peer is an address
    // Node wrote itself. Only its IPv4-mapped form (a dual-stack listener) needs folding.
    if (!this.trusted)
      return peer?.startsWith("::ffff:") && peer.includes(".") ? peer.slice(7) : (peer ?? "");
    const direct = normalize(peer ?? "");
    if (direct === undefined) return peer ?? "";
    if (!this.isTrusted(direct)) return direct;
    const hops = forwardedChain(headers);
    // The nearest address we know for sure; a hop that is not an address ("unknown", an
    // obfuscated name, garbage) ends the walk there rather than naming a client by it.
    let known = direct;
    for (let i = hops.length - 1; i >= 0 && i >= hops.length - MAX_HOPS; i--) {
      const hop = normalize(hops[i]!);
      if (hop === undefined) return known;
      if (!this.isTrusted(hop)) return hop;
      known = hop;
    }
    return known;
  }

  private isTrusted(address: string): boolean {
    return this.trusted?.check(address, isIP(address) === 4 ? "ipv4" : "ipv6") ?? false;
  }
}

/** The forwarded-for addresses, left (client side) to right (nearest hop), unparsed. */
export function forwardedChain(headers: IncomingHttpHeaders): string[] {
  const xff = headers["x-forwarded-for"];
  if (xff !== undefined) {
    return [xff]
      .flat()
      .join(",")
      .split(",")
      .map((s) => s.trim());
  }
  const fwd = headers.forwarded;
  if (fwd === undefined) return [];
  return splitOutsideQuotes(fwd, ",").map((element) => {
    for (const pair of splitOutsideQuotes(element, ";")) {
      const eq = pair.indexOf("=");
      if (eq !== -1 && pair.slice(0, eq).trim().toLowerCase() === "for") {
        return unquote(pair.slice(eq + 1).trim());
      }
    }
    // An element without for= is a hop that did not say: not an address.
    return "";
  });
}

/**
 * An address in the one form we compare and log: IPv4-mapped IPv6 (::ffff:10.0.0.1, how a
 * dual-stack socket reports IPv4 peers) as plain IPv4, and RFC 7239's "[v6]:port" and
 * "v4:port" without brackets and port. undefined when it is not an IP address.
 */
export function normalize(text: string): string | undefined {
  let s = text.trim();
  const bracketed = /^\[([^\]]+)\](?::\d{1,5})?$/.exec(s);
  if (bracketed) s = bracketed[1]!;
  else if (/^[\d.]+:\d{1,5}$/.test(s)) s = s.slice(0, s.indexOf(":"));
  const family = isIP(s);
  if (family === 0) return undefined;
  if (family === 6) {
    const mapped = /^([0:]*):ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(s);
    if (mapped) return mapped[2]!;
    return s.toLowerCase();
  }
  return s;
}

function subnetPrefix(entry: string, address: string, slash: number): number {
  let prefix = Number(entry.slice(slash + 1));
  // An IPv4-mapped IPv6 subnet (::ffff:10.0.0.0/104) became IPv4: its prefix counts from bit 96.
  if (isIP(address) === 4 && isIP(entry.slice(0, slash)) === 6) prefix = Math.max(0, prefix - 96);
  return prefix;
}

function splitOutsideQuotes(text: string, sep: string): string[] {
  const out: string[] = [];
  let quoted = false;
  let start = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === '"' && text[i - 1] !== "\\") quoted = !quoted;
    else if (c === sep && !quoted) {
      out.push(text.slice(start, i));
      start = i + 1;
    }
  }
  out.push(text.slice(start));
  return out;
}

function unquote(s: string): string {
  return s.length >= 2 && s.startsWith('"') && s.endsWith('"') ? s.slice(1, -1).replace(/\\(.)/g, "$1") : s;
}
