import { existsSync, readFileSync } from "node:fs";
import yaml from "js-yaml";
import { z } from "zod";
import { ConfigSchema, type Config } from "./schema.ts";
import { ConfigError } from "./errors.ts";
import { validateConfig, type Sources } from "./validate.ts";
import { credentialsFromDockerConfig, interpolate } from "./credentials.ts";
import { redactText } from "./redact.ts";

// Reads mirror.yml (or $REGMIRROR_CONFIG) and overlays REGMIRROR_* environment variables.
// The variable for a key is REGMIRROR_ + its path in upper snake case (cache.maxSize →
// REGMIRROR_CACHE_MAX_SIZE); a REGMIRROR_ variable that names no key is refused like an unknown
// key in the file, so a typo never silently leaves a default in place.

const PREFIX = "REGMIRROR_";
/** Short names the issue tracker and container users rely on. */
const ALIASES: Record<string, string> = { REGMIRROR_UPSTREAM: "upstream.url" };
const NOT_KEYS = new Set(["REGMIRROR_CONFIG"]);
/**
 * Kubernetes injects service-link variables into every pod of a namespace: for a Service named
 * "regmirror-tls", REGMIRROR_TLS_SERVICE_HOST, REGMIRROR_TLS_SERVICE_PORT(_<port name>),
 * REGMIRROR_TLS_PORT and REGMIRROR_TLS_PORT_5443_TCP(_ADDR|_PORT|_PROTO). They are not settings
 * and must not stop the start. A name that is a setting is always read as one (none of ours ends
 * like these).
 */
const SERVICE_LINK =
  /^REGMIRROR(_[A-Z0-9_]+?)?_(SERVICE_HOST|SERVICE_PORT(_[A-Z0-9_]+)?|PORT(_\d+_(TCP|UDP|SCTP)(_[A-Z]+)?)?)$/;

export function envName(path: string): string {
  return (
    PREFIX +
    path
      .split(".")
      .map((p) => p.replace(/([a-z0-9])([A-Z])/g, "$1_$2").toUpperCase())
      .join("_")
  );
}

/** Every leaf key path of the config, e.g. "cache.maxSize", read off the schema itself. */
export function keyPaths(): string[] {
  const out: string[] = [];
  const walk = (schema: z.ZodType, prefix: string): void => {
    let s = schema;
    while (s instanceof z.ZodPrefault || s instanceof z.ZodDefault || s instanceof z.ZodOptional)
      s = s.unwrap() as z.ZodType;
    if (!(s instanceof z.ZodObject)) {
      out.push(prefix);
      return;
    }
    for (const [k, v] of Object.entries(s.shape)) walk(v as z.ZodType, prefix ? `${prefix}.${k}` : k);
  };
  walk(ConfigSchema, "");
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
      throw new ConfigError([`${file}: not valid YAML: ${yamlProblem(err)}`]);
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
    if (!name.startsWith(PREFIX) || NOT_KEYS.has(name) || value === undefined) continue;
    const p = byEnv.get(name);
    if (!p && SERVICE_LINK.test(name)) continue;
    if (!p) {
      unknown.push(`${name}: unknown setting (known: ${[...byEnv.keys(), ...NOT_KEYS].sort().join(", ")})`);
      continue;
    }
    // A list (upstreams) comes as YAML or JSON text in one variable.
    setPath(raw, p, LIST_KEYS.has(p) ? parseListEnv(name, value, unknown) : value);
    sources.set(p, name);
  }
  if (unknown.length) throw new ConfigError(unknown);
  interpolateCredentials(raw, env);
  const config = validateConfig(raw, sources, file ?? "config");
  readCredentialFiles(config);
  return { config, file };
}

/** ${VAR} in upstream usernames and passwords, so secrets can stay out of mirror.yml. */
function interpolateCredentials(raw: Record<string, unknown>, env: NodeJS.ProcessEnv): void {
  const problems: string[] = [];
  const login = ["username", "password"];
  const entries: Array<[string, unknown, string[]]> = [["upstream", raw.upstream, login]];
  if (Array.isArray(raw.upstreams))
    raw.upstreams.forEach((u, i) => entries.push([`upstreams.${i}`, u, login]));
  const storage = raw.storage as { s3?: unknown } | undefined;
  entries.push(["storage.s3", storage?.s3, ["accessKeyId", "secretAccessKey"]]);
  for (const [path, entry, fields] of entries) {
    if (typeof entry !== "object" || entry === null) continue;
    const e = entry as Record<string, unknown>;
    for (const field of fields) {
      const v = e[field];
      if (typeof v !== "string") continue;
      const { value, missing } = interpolate(v, env);
      for (const name of missing) problems.push(`"${path}.${field}" refers to \${${name}}, which is not set`);
      e[field] = value;
    }
  }
  if (problems.length) throw new ConfigError(problems);
}

/** Fills username and password from each upstream's credentialsFile, where they are not set. */
function readCredentialFiles(config: Config): void {
  const problems: string[] = [];
  const all: Array<[string, Config["upstream"] | Config["upstreams"][number]]> = [
    ["upstream", config.upstream],
    ...config.upstreams.map((u, i) => [`upstreams.${i}`, u] as [string, Config["upstreams"][number]]),
  ];
  for (const [path, u] of all) {
    if (!u.credentialsFile || u.username) continue;
    try {
      const found = credentialsFromDockerConfig(readFileSync(u.credentialsFile, "utf8"), u.name);
      if (!found)
        problems.push(`"${path}.credentialsFile": no credentials for ${u.name} in ${u.credentialsFile}`);
      else Object.assign(u, found);
    } catch (err) {
      problems.push(`"${path}.credentialsFile": cannot use ${u.credentialsFile}: ${(err as Error).message}`);
    }
  }
  if (problems.length) throw new ConfigError(problems);
}

const LIST_KEYS = new Set([
  "upstreams",
  "access.allow",
  "access.deny",
  "trustedProxies",
  "hosted.repositories",
  "hosted.pushers",
]);

function parseListEnv(name: string, value: string, problems: string[]): unknown {
  try {
    return yaml.load(value);
  } catch (err) {
    problems.push(`${name}: not valid YAML: ${yamlProblem(err)}`);
    return undefined;
  }
}

function setPath(o: Record<string, unknown>, path: string, value: unknown): void {
  const parts = path.split(".");
  let cur = o;
  for (const p of parts.slice(0, -1)) {
    const next = cur[p];
    if (typeof next !== "object" || next === null || Array.isArray(next)) cur[p] = {};
    cur = cur[p] as Record<string, unknown>;
  }
  cur[parts[parts.length - 1]!] = value;
}

/**
 * js-yaml's message quotes the offending lines, which may hold a password: say what and where,
 * not the text itself.
 */
function yamlProblem(err: unknown): string {
  if (err instanceof yaml.YAMLException) {
    const at = err.mark ? ` at line ${err.mark.line + 1}, column ${err.mark.column + 1}` : "";
    return `${err.reason}${at}`;
  }
  return redactText((err as Error).message);
}
