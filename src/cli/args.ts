import { InvalidArgumentError } from "commander";
import { parseDuration } from "../config/units.ts";
import { describeError, UsageError } from "./errors.ts";
import { parsePlatform, type Platform } from "../maintenance/image-ref.ts";

// Option values, checked as commander parses them (a bad one is commander's "invalid argument"
// error, which the subcommands turn into exit code 2), and warm's --user credentials.

export function mirrorUrl(value: string): string {
  let u: URL;
  try {
    u = new URL(value);
  } catch {
    throw new InvalidArgumentError("not a URL (e.g. http://mirror.local:5555)");
  }
  if (u.protocol !== "http:" && u.protocol !== "https:") throw new InvalidArgumentError("not an http(s) URL");
  return u.origin + u.pathname.replace(/\/+$/, "");
}

export function platforms(value: string, previous: Platform[] | undefined): Platform[] {
  try {
    return [...(previous ?? []), parsePlatform(value)];
  } catch (err) {
    throw new InvalidArgumentError(describeError(err));
  }
}

export function duration(value: string): number {
  const ms = parseDuration(value);
  if (ms === undefined) throw new InvalidArgumentError("not a duration (e.g. 90s, 12h, 30d)");
  return ms;
}

/**
 * The Basic credentials for --user. A password can come after a colon, or from stdin (as with
 * `docker login --password-stdin`), which keeps it out of the process list and shell history.
 */
export async function basicAuth(o: { user?: string; passwordStdin?: boolean }): Promise<string | undefined> {
  if (o.user === undefined) {
    if (o.passwordStdin) throw new UsageError("--password-stdin needs --user NAME");
    return undefined;
  }
  const colon = o.user.indexOf(":");
  if (colon === 0) throw new UsageError("--user needs a name before the colon");
  let name = o.user;
  let password: string;
  if (o.passwordStdin) {
    if (colon > 0)
      throw new UsageError("--user NAME:PASSWORD and --password-stdin both give a password: use one");
    const chunks: Buffer[] = [];
    for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
    password = Buffer.concat(chunks)
      .toString("utf8")
      .replace(/\r?\n$/, "");
  } else if (colon > 0) {
    name = o.user.slice(0, colon);
    password = o.user.slice(colon + 1);
  } else {
    throw new UsageError("--user NAME needs a password: NAME:PASSWORD, or --password-stdin");
  }
  return "Basic " + Buffer.from(`${name}:${password}`).toString("base64");
}
