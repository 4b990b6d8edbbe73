import type { z } from "zod";
import { ConfigSchema, type Config } from "./schema.ts";
import { ConfigError } from "./errors.ts";
import { HIDDEN, isSecretPath, redact } from "./redact.ts";

// Pure validation: raw values in (from YAML and the environment), a typed Config out, or a
// ConfigError whose lines each name the bad key, the value, and where it came from.

/** Where a key's value came from, for messages: "mirror.yml" or "REGMIRROR_TAG_TTL". */
export type Sources = Map<string, string>;

export function validateConfig(raw: unknown, sources: Sources = new Map(), file = "config"): Config {
  const result = ConfigSchema.safeParse(raw ?? {});
  if (result.success) return result.data;
  throw new ConfigError(result.error.issues.map((issue) => describe(issue, raw, sources, file)));
}

function describe(issue: z.core.$ZodIssue, raw: unknown, sources: Sources, file: string): string {
  const path = issue.path.map(String);
  if (issue.code === "unrecognized_keys") {
    return issue.keys.map((k) => `${file}: unknown key "${[...path, k].join(".")}"`).join("\n");
  }
  const key = path.join(".") || "(top level)";
  // Secrets are never echoed, not even when they are wrong, nor inside a bigger value.
  const value = isSecretPath(path) ? HIDDEN : redact(lookup(raw, path), path.at(-1));
  const from = sources.get(key) ?? file;
  return `${from}: bad value for "${key}": ${truncate(JSON.stringify(value)) ?? "(missing)"} — ${issue.message}`;
}

function lookup(raw: unknown, path: string[]): unknown {
  let v = raw;
  for (const p of path) {
    if (typeof v !== "object" || v === null) return undefined;
    v = (v as Record<string, unknown>)[p];
  }
  return v;
}

/** A whole list given where one entry was wrong is shown in part: the key says which. */
function truncate(text: string | undefined): string | undefined {
  return text !== undefined && text.length > 200 ? `${text.slice(0, 200)}…` : text;
}
