// WWW-Authenticate parsing (RFC 7235 auth-params), pure. Registries send one of:
//   Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:x:pull"
//   Basic realm="Registry Realm"
// A header may hold several challenges; we keep every one and let the caller pick.

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
 * Whether a token realm may receive our credentials: same host as the upstream, or the same
 * registrable domain (auth.docker.io for registry-1.docker.io), and no downgrade from https.
 * The last two labels stand in for the registrable domain; that refuses more than the public
 * suffix list would (e.g. two hosts under co.uk are refused), never less.
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
  const isName = (h: string) => /[a-z]/i.test(h) && !h.includes(":") && h.includes(".");
  if (!isName(r.hostname) || !isName(u.hostname)) return false;
  const base = (h: string) => h.toLowerCase().split(".").slice(-2).join(".");
  return base(r.hostname) === base(u.hostname);
}
