// WWW-Authenticate parsing (RFC 7235 auth-params), pure. Registries send one of:
//   Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:x:pull"
//   Basic realm="Registry Realm"
// A header may hold several challenges; we keep every one and let the caller pick.
import { isIP } from "node:net";
import { getDomain } from "tldts";

export interface Challenge {
  scheme: string; // lower case: "bearer", "basic"
  params: Record<string, string>; // keys lower case
}

export function parseChallenges(header: string | string[] | undefined): Challenge[] {
  if (header === undefined) return [];
  const lines = Array.isArray(header) ? header : [header];
  return lines.flatMap(parseLine);
}

function parseLine(s: string): Challenge[] {
  const out: Challenge[] = [];
  let i = 0;
  let current: Challenge | undefined;
  const skipWs = () => {
    while (i < s.length && (s[i] === " " || s[i] === "\t" || s[i] === ",")) i++;
  };
  const token = () => {
    const start = i;
    while (i < s.length && /[!#$%&'*+.^_`|~0-9A-Za-z-]/.test(s[i]!)) i++;
    return s.slice(start, i);
  };
  while (i < s.length) {
    skipWs();
    const word = token();
    if (!word) {
      i++; // garbage: skip a character rather than loop forever
      continue;
    }
    let j = i;
    while (j < s.length && (s[j] === " " || s[j] === "\t")) j++;
    if (s[j] === "=" && current) {
      // auth-param of the current challenge
      i = j + 1;
      while (i < s.length && (s[i] === " " || s[i] === "\t")) i++;
      let value: string;
      if (s[i] === '"') {
        i++;
        value = "";
        while (i < s.length && s[i] !== '"') {
          if (s[i] === "\\" && i + 1 < s.length) i++;
          value += s[i];
          i++;
        }
        i++; // closing quote
      } else {
        // RFC 7235 says token, but servers send bare URLs too: read up to the next separator.
        const start = i;
        while (i < s.length && s[i] !== "," && s[i] !== " " && s[i] !== "\t") i++;
        value = s.slice(start, i);
      }
      current.params[word.toLowerCase()] = value;
    } else {
      current = { scheme: word.toLowerCase(), params: {} };
      out.push(current);
    }
  }
  return out;
}

/**
 * Suffixes under which each label is a different customer, but which the Public Suffix List does
 * not (yet) list: Azure Container Registry gives every customer <name>.azurecr.io, so without
 * this attacker.azurecr.io would share a registrable domain with mycompany.azurecr.io.
 */
const EXTRA_PUBLIC_SUFFIXES = ["azurecr.io", "azurecr.cn", "azurecr.us"];

/**
 * The registrable domain of a host name ("docker.io" for auth.docker.io), by the Public Suffix
 * List with its private section, so that someone.github.io and evil.co.uk are domains of their
 * own. Null for IP literals and for names that are a public suffix or have no dot (localhost).
 */
export function registrableDomain(hostname: string): string | null {
  const host = hostname.toLowerCase().replace(/\.$/, "");
  if (isIP(host.replace(/^\[|\]$/g, "")) !== 0) return null;
  for (const suffix of EXTRA_PUBLIC_SUFFIXES) {
    if (host === suffix) return null;
    if (host.endsWith(`.${suffix}`)) {
      const label = host
        .slice(0, -suffix.length - 1)
        .split(".")
        .pop();
      return `${label}.${suffix}`;
    }
  }
  return getDomain(host, { allowPrivateDomains: true });
}

/**
 * Whether a token realm may receive our credentials: the same host as the upstream, or a host of
 * the same registrable domain (auth.docker.io for registry-1.docker.io), and no downgrade from
 * https. IP literals and single-label names match their own host only.
 */
export function isTrustedRealm(realm: string, upstream: string): boolean {
  let r: URL;
  let u: URL;
  try {
    r = new URL(realm);
    u = new URL(upstream);
  } catch {
    return false;
  }
  if (r.protocol !== "https:" && r.protocol !== "http:") return false;
  if (u.protocol === "https:" && r.protocol !== "https:") return false;
  if (r.hostname === u.hostname) return true;
  const domain = registrableDomain(u.hostname);
  return domain !== null && registrableDomain(r.hostname) === domain;
}
