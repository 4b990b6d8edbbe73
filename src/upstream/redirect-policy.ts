import { lookup as dnsLookup, type LookupAddress, type LookupAllOptions } from "node:dns";
import { BlockList, isIP, type LookupFunction } from "node:net";
import { RegistryError } from "../oci/errors.ts";

// Where an upstream's redirect may send us. A blob GET answered with a Location is followed to
// whatever host it names, so an upstream (or whoever can bend its answers) could point the mirror
// at the cloud metadata service (169.254.169.254), at the mirror's own loopback admin port, or at
// anything else on the private network, and have the answer served back as a blob. Public
// addresses are always fine; the rest only when the upstream itself lives on such an address (an
// internal registry redirecting to internal storage), or when the operator said so
// (privateRedirects). The classification is pure: addresses are data here.

export type AddressClass = "public" | "loopback" | "private" | "link-local" | "unspecified" | "reserved";

function blockList(v4: string[], v6: string[]): BlockList {
  const list = new BlockList();
  for (const cidr of v4) list.addSubnet(cidr.split("/")[0]!, Number(cidr.split("/")[1]), "ipv4");
  for (const cidr of v6) list.addSubnet(cidr.split("/")[0]!, Number(cidr.split("/")[1]), "ipv6");
  return list;
}

// BlockList matches IPv4-mapped IPv6 (::ffff:127.0.0.1) against the IPv4 rules by itself.
const CLASSES: Array<[Exclude<AddressClass, "public">, BlockList]> = [
  ["unspecified", blockList(["0.0.0.0/8"], ["::/128"])],
  ["loopback", blockList(["127.0.0.0/8"], ["::1/128"])],
  ["link-local", blockList(["169.254.0.0/16"], ["fe80::/10"])],
  [
    "private",
    // RFC 1918, carrier-grade NAT (RFC 6598), unique local and the old site-local IPv6.
    blockList(["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10"], ["fc00::/7", "fec0::/10"]),
  ],
  [
    "reserved",
    // Protocol assignments, documentation, benchmarking, multicast, class E and broadcast; IPv4-
    // compatible IPv6, discard, documentation and multicast IPv6. None is a storage host.
    blockList(
      [
        "192.0.0.0/24",
        "192.0.2.0/24",
        "198.18.0.0/15",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "224.0.0.0/4",
        "240.0.0.0/4",
      ],
      ["::/96", "100::/64", "2001:db8::/32", "ff00::/8"],
    ),
  ],
];

/** The class of an IP address (v4 or v6, with or without brackets); "reserved" when unparsable. */
export function classifyAddress(address: string): AddressClass {
  const a = address.replace(/^\[|\]$/g, "").replace(/%.*$/, "");
  const family = isIP(a);
  if (family === 0) return "reserved";
  const type = family === 4 ? "ipv4" : "ipv6";
  for (const [cls, list] of CLASSES) if (list.check(a, type)) return cls;
  // NAT64 (64:ff9b::/96) and 6to4 (2002::/16) carry an IPv4 address that decides where it goes.
  const embedded = family === 6 ? embeddedV4(a) : undefined;
  return embedded === undefined ? "public" : classifyAddress(embedded);
}

const NAT64 = blockList([], ["64:ff9b::/96"]);
const SIX_TO_FOUR = blockList([], ["2002::/16"]);

function embeddedV4(v6: string): string | undefined {
  const groups = expandV6(v6);
  if (groups === undefined) return undefined;
  const v4 = (hi: number, lo: number) => `${hi >> 8}.${hi & 255}.${lo >> 8}.${lo & 255}`;
  if (NAT64.check(v6, "ipv6")) return v4(groups[6]!, groups[7]!);
  if (SIX_TO_FOUR.check(v6, "ipv6")) return v4(groups[1]!, groups[2]!);
  return undefined;
}

/** The eight 16-bit groups of an IPv6 address (a trailing dotted quad included). */
function expandV6(v6: string): number[] | undefined {
  let s = v6.toLowerCase();
  const quad = /(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(s);
  if (quad) {
    const [a, b, c, d] = quad.slice(1).map(Number) as [number, number, number, number];
    s = s.slice(0, quad.index) + `${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
  }
  const [head = "", tail] = s.split("::");
  const parts = (x: string) => (x === "" ? [] : x.split(":").map((g) => parseInt(g, 16)));
  const h = parts(head);
  const t = tail === undefined ? [] : parts(tail);
  const groups = tail === undefined ? h : [...h, ...Array<number>(8 - h.length - t.length).fill(0), ...t];
  return groups.length === 8 ? groups : undefined;
}

/**
 * Why a redirect to this address is refused, or undefined when it may be followed. An
 * unspecified address (0.0.0.0, ::) is never a storage host, and Linux connects it to the local
 * machine, so it is refused even where private targets are allowed.
 */
export function redirectRefusal(address: string, allowPrivate: boolean): string | undefined {
  const cls = classifyAddress(address);
  if (cls === "public") return undefined;
  if (cls === "unspecified") return `redirect to an unspecified address (${address})`;
  if (allowPrivate) return undefined;
  return `redirect to a ${cls} address (${address}); set privateRedirects to allow it`;
}

/** The refusal for a redirect to an IP literal (names are checked when they resolve). */
export function literalRefusal(hostname: string, allowPrivate: boolean): string | undefined {
  const host = hostname.replace(/^\[|\]$/g, "");
  return isIP(host) === 0 ? undefined : redirectRefusal(host, allowPrivate);
}

/**
 * Whether redirect targets on non-public addresses are allowed for this upstream: when the
 * operator said so, or when the upstream itself is on such an address (an internal registry
 * sending us to internal storage). A named upstream is resolved once, when first needed.
 */
export function privateTargetsAllowed(
  upstreamUrl: string,
  privateRedirects: boolean,
  resolve: Resolve = systemResolve,
): () => Promise<boolean> {
  if (privateRedirects) return () => Promise.resolve(true);
  const host = new URL(upstreamUrl).hostname.replace(/^\[|\]$/g, "");
  if (isIP(host) !== 0) {
    const answer = Promise.resolve(classifyAddress(host) !== "public");
    return () => answer;
  }
  let known: Promise<boolean> | undefined;
  return () =>
    (known ??= resolve(host, { all: true }).then(
      (addresses) => addresses.some((a) => classifyAddress(a.address) !== "public"),
      () => {
        // Remember only an answer: a DNS hiccup must not decide for the life of the process.
        known = undefined;
        return false;
      },
    ));
}

export function redirectRefused(reason: string): RegistryError {
  return new RegistryError("UPSTREAM_ERROR", "upstream redirected to an address this mirror does not reach", {
    detail: { reason },
  });
}

/** A redirect the policy refused: an upstream error for our client, not an outage. */
export class RedirectRefusedError extends Error {
  readonly code = "ERR_REDIRECT_REFUSED";
}

export type Resolve = (hostname: string, options: LookupAllOptions) => Promise<LookupAddress[]>;

export const systemResolve: Resolve = (hostname, options) =>
  new Promise((resolve, reject) =>
    dnsLookup(hostname, options, (err, addresses) => (err ? reject(err) : resolve(addresses))),
  );

/**
 * A `lookup` for the sockets of redirected requests: it resolves the name, checks every address it
 * got, and hands only checked addresses to the connection. Checking at connect time, on the very
 * addresses connected to, leaves no gap for DNS rebinding between a check and the connection.
 */
export function checkedLookup(
  allowPrivate: () => Promise<boolean>,
  resolve: Resolve = systemResolve,
): LookupFunction {
  return (hostname, options, callback) => {
    void (async () => {
      const addresses = await resolve(hostname, { ...options, all: true });
      if (addresses.length === 0) throw new Error(`${hostname} resolved to no address`);
      const allow = await allowPrivate();
      for (const a of addresses) {
        const why = redirectRefusal(a.address, allow);
        if (why !== undefined) throw new RedirectRefusedError(`${hostname}: ${why}`);
      }
      return addresses;
    })().then(
      (addresses) => {
        if ((options as { all?: boolean }).all) {
          (callback as unknown as (err: null, a: LookupAddress[]) => void)(null, addresses);
        } else callback(null, addresses[0]!.address, addresses[0]!.family);
      },
      (err: NodeJS.ErrnoException) => callback(err, "", 0),
    );
  };
}
