import { createHash, randomInt } from "node:crypto";
import { LRUCache } from "lru-cache";
import { BcryptPool, type PasswordChecker } from "./bcrypt-pool.ts";

// Client credentials from an htpasswd file (bcrypt entries only: `htpasswd -B`). A bcrypt check
// costs tens of milliseconds on purpose, so it runs off the event loop (bcrypt-pool.ts); a
// successful one is remembered briefly, keyed by a hash of the credentials, so a client that
// sends Basic on every request does not pay it every time.
//
// An unknown user costs the same as a wrong password: the password is checked against a dummy
// hash of the file's highest cost, so the time of the answer does not tell which names exist
// (distribution's auth/htpasswd does the same).

/** One checker for the process: the threads are the scarce resource, not the files. */
let shared: BcryptPool | undefined;

export class Htpasswd {
  private readonly users: Map<string, string>;
  private readonly verified = new LRUCache<string, true>({ max: 1000, ttl: 5 * 60_000 });
  private readonly dummy: string;

  constructor(
    text: string,
    private readonly checker: PasswordChecker = (shared ??= new BcryptPool()),
  ) {
    this.users = parseHtpasswd(text);
    // The highest cost in the file (bcryptjs's default for an empty one): an unknown name never
    // answers faster than a known one.
    this.dummy = dummyHash(this.users.size > 0 ? Math.max(...[...this.users.values()].map(cost)) : 10);
  }

  /** Whether the file has this user. */
  has(username: string): boolean {
    return this.users.has(username);
  }

  /** Whether these credentials were verified a moment ago: no bcrypt needed. */
  remembered(username: string, password: string): boolean {
    const hash = this.users.get(username);
    return hash !== undefined && this.verified.has(cacheKey(username, password, hash));
  }

  async check(username: string, password: string): Promise<boolean> {
    const hash = this.users.get(username);
    if (!hash) {
      await this.checker.compare(password, this.dummy);
      return false;
    }
    const key = cacheKey(username, password, hash);
    if (this.verified.get(key)) return true;
    const ok = await this.checker.compare(password, hash);
    if (ok) this.verified.set(key, true);
    return ok;
  }
}

function cacheKey(username: string, password: string, hash: string): string {
  return createHash("sha256").update(`${username}\0${password}\0${hash}`).digest("hex");
}

function cost(hash: string): number {
  return Number(hash.slice(4, 6));
}

/**
 * A well-formed bcrypt hash that no password matches in practice (random salt and digest):
 * checking against it costs exactly what checking a real hash of that cost does.
 */
export function dummyHash(rounds: number): string {
  const alphabet = "./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
  const random = Array.from({ length: 53 }, () => alphabet[randomInt(alphabet.length)]).join("");
  return `$2b$${String(rounds).padStart(2, "0")}$${random}`;
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
