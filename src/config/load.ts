import { existsSync, readFileSync } from "node:fs";
import yaml from "js-yaml";
import { ConfigSchema, type Config } from "./schema.ts";
import { ConfigError, validateConfig, type Sources } from "./validate.ts";

// Reads mirror.yml (or $REGMIRROR_CONFIG) and overlays REGMIRROR_* environment variables.
// The variable for a key is REGMIRROR_ + its path in upper snake case (cache.maxSize →
// REGMIRROR_CACHE_MAX_SIZE); a REGMIRROR_ variable that names no key is refused like an unknown
// key in the file, so a typo never silently leaves a default in place.

const PREFIX = "REGMIRROR_";
/** Short names the issue tracker and container users rely on. */
const ALIASES: Record<string, string> = { REGMIRROR_UPSTREAM: "upstream.url" };
const NOT_KEYS = new Set(["REGMIRROR_CONFIG"]);
/**
 * Kubernetes injects REGMIRROR_SERVICE_HOST, REGMIRROR_PORT_5555_TCP and the like into every pod
 * of a namespace with a Service named "regmirror": those are not settings, and must not stop
 * the start.
 */
const SERVICE_LINK = /^REGMIRROR_(SERVICE_HOST|SERVICE_PORT(_.*)?|PORT(_\d+_(TCP|UDP|SCTP)(_.*)?)?)$/;

export function envName(path: string): string {
  return (
    PREFIX +
    path
      .split(".")
      .map((p) => p.replace(/([a-z0-9])([A-Z])/g, "$1_$2").toUpperCase())
      .join("_")
  );
}

/** Every leaf key path of the config, e.g. "cache.maxSize". */
export function keyPaths(): string[] {
  const out: string[] = [];
  const walk = (o: Record<string, unknown>, prefix: string) => {
    for (const [k, v] of Object.entries(o)) {
      const p = prefix ? `${prefix}.${k}` : k;
      // listen parses to {host, port} but is one key in the file.
      if (typeof v === "object" && v !== null && !Array.isArray(v) && p !== "listen")
        walk(v as Record<string, unknown>, p);
      else out.push(p);
    }
  };
  walk(ConfigSchema.parse({}) as unknown as Record<string, unknown>, "");
  return out;
}

export interface Loaded {
  config: Config;
  file: string | undefined;
}

export function loadConfig(env: NodeJS.ProcessEnv = process.env, defaultFile = "mirror.yml"): Loaded {
  const explicit = env.REGMIRROR_CONFIG;
  const file = explicit ?? (existsSync(defaultFile) ? defaultFile : undefined);
  let raw: Record<string, unknown> = {};
  if (file !== undefined) {
    let text: string;
    try {
      text = readFileSync(file, "utf8");
    } catch (err) {
      throw new ConfigError([
        `REGMIRROR_CONFIG: cannot read config file "${file}": ${(err as Error).message}`,
      ]);
    }
    let doc: unknown;
    try {
      doc = yaml.load(text);
    } catch (err) {
      throw new ConfigError([`${file}: not valid YAML: ${(err as Error).message}`]);
    }
    if (doc !== undefined && doc !== null && (typeof doc !== "object" || Array.isArray(doc))) {
      throw new ConfigError([`${file}: the top level must be a mapping of keys`]);
    }
    raw = (doc ?? {}) as Record<string, unknown>;
  }
  const sources: Sources = new Map();
  const byEnv = new Map(keyPaths().map((p) => [envName(p), p]));
  for (const [name, p] of Object.entries(ALIASES)) byEnv.set(name, p);
  const unknown: string[] = [];
  for (const [name, value] of Object.entries(env)) {
    if (!name.startsWith(PREFIX) || NOT_KEYS.has(name) || SERVICE_LINK.test(name) || value === undefined)
      continue;
    const p = byEnv.get(name);
    if (!p) {
      unknown.push(`${name}: unknown setting (known: ${[...byEnv.keys(), ...NOT_KEYS].sort().join(", ")})`);
      continue;
    }
    setPath(raw, p, value);
    sources.set(p, name);
  }
  if (unknown.length) throw new ConfigError(unknown);
  return { config: validateConfig(raw, sources, file ?? "config"), file };
}

function setPath(o: Record<string, unknown>, path: string, value: string): void {
  const parts = path.split(".");
  let cur = o;
  for (const p of parts.slice(0, -1)) {
    const next = cur[p];
    if (typeof next !== "object" || next === null || Array.isArray(next)) cur[p] = {};
    cur = cur[p] as Record<string, unknown>;
  }
  cur[parts[parts.length - 1]!] = value;
}
