import bcrypt from "bcryptjs";
import { createHash } from "node:crypto";
import { LRUCache } from "lru-cache";

// Client credentials from an htpasswd file (bcrypt entries only: `htpasswd -B`). A bcrypt check
// costs tens of milliseconds on purpose; a successful one is remembered briefly, keyed by a hash
// of the credentials, so a client that sends Basic on every request does not pay it every time.

export class Htpasswd {
  private readonly users: Map<string, string>;
  private readonly verified = new LRUCache<string, true>({ max: 1000, ttl: 5 * 60_000 });

  constructor(text: string) {
    this.users = parseHtpasswd(text);
  }

  check(username: string, password: string): boolean {
    const hash = this.users.get(username);
    if (!hash) return false;
    const key = createHash("sha256").update(`${username}\0${password}\0${hash}`).digest("hex");
    if (this.verified.get(key)) return true;
    const ok = bcrypt.compareSync(password, hash);
    if (ok) this.verified.set(key, true);
    return ok;
  }
}

/** user:$2y$... lines; blank lines and # comments skipped; non-bcrypt entries refused. */
export function parseHtpasswd(text: string): Map<string, string> {
  const users = new Map<string, string>();
  text.split(/\r?\n/).forEach((raw, i) => {
    const line = raw.trim();
    if (!line || line.startsWith("#")) return;
    const colon = line.indexOf(":");
    const user = line.slice(0, colon);
    const hash = line.slice(colon + 1);
    if (colon <= 0 || !/^\$2[aby]\$\d\d\$/.test(hash)) {
      throw new Error(`line ${i + 1}: not a "user:bcrypt-hash" entry (create them with htpasswd -B)`);
    }
    users.set(user, hash);
  });
  return users;
}
