// Upstream credentials, pure: ${VAR} interpolation, and the lookup of a registry in a Docker
// config.json (the file `docker login` writes). The reading of files and the environment is
// load.ts's; the values found here are never logged.

/** Replaces ${NAME} with env.NAME; returns the names that are not set. */
export function interpolate(value: string, env: NodeJS.ProcessEnv): { value: string; missing: string[] } {
  const missing: string[] = [];
  const out = value.replace(/\$\{([A-Za-z_][A-Za-z0-9_]*)\}/g, (_m, name: string) => {
    const v = env[name];
    if (v === undefined) missing.push(name);
    return v ?? "";
  });
  return { value: out, missing };
}

/** The keys `docker login` may have used for a registry. */
function keysFor(name: string): string[] {
  const keys = [name, `https://${name}`, `http://${name}`, `https://${name}/v1/`, `https://${name}/v2/`];
  if (name === "docker.io")
    keys.push("https://index.docker.io/v1/", "index.docker.io", "registry-1.docker.io");
  return keys;
}

export function credentialsFromDockerConfig(
  json: string,
  name: string,
): { username: string; password: string } | undefined {
  let doc: {
    auths?: Record<string, { auth?: string; username?: string; password?: string; identitytoken?: string }>;
  };
  try {
    doc = JSON.parse(json) as typeof doc;
  } catch {
    throw new Error("not valid JSON");
  }
  for (const key of keysFor(name)) {
    const entry = doc.auths?.[key];
    if (!entry) continue;
    if (entry.username && entry.password) return { username: entry.username, password: entry.password };
    if (entry.auth) {
      const text = Buffer.from(entry.auth, "base64").toString("utf8");
      const i = text.indexOf(":");
      if (i > 0) return { username: text.slice(0, i), password: text.slice(i + 1) };
    }
  }
  return undefined;
}
