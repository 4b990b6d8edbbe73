import { readFileSync } from "node:fs";
import type { Config } from "./schema.ts";
import { ConfigError } from "./errors.ts";

/**
 * The files the config names must be readable: checked by a cluster's primary before it forks,
 * since a worker that cannot read them would only die at start (start.ts reads them for real).
 */
export function checkFilesReadable(config: Config): void {
  const problems: string[] = [];
  const check = (key: string, path: string) => {
    try {
      readFileSync(path);
    } catch (err) {
      problems.push(`${key}: cannot read "${path}": ${(err as Error).message}`);
    }
  };
  if (config.tls.cert) check("tls.cert", config.tls.cert);
  if (config.tls.key) check("tls.key", config.tls.key);
  if (config.auth.htpasswd) check("auth.htpasswd", config.auth.htpasswd);
  if (problems.length) throw new ConfigError(problems);
}
