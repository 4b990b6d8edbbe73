// The compose files cannot be run here (no Docker engine), so their structure is checked against
// the code instead: every REGMIRROR_ variable they set is a setting, a replica's environment
// passes validation as a whole, and nginx names every replica with the hashing the docs explain.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import yaml from "js-yaml";
import { envName, keyPaths, loadConfig } from "../../src/config/load.ts";

interface Service {
  image?: string;
  build?: { context?: string } | string;
  ports?: string[];
  volumes?: string[];
  environment?: Record<string, string | number | boolean>;
  depends_on?: Record<string, { condition: string }>;
  networks?: string[] | Record<string, { ipv4_address?: string } | null>;
  healthcheck?: { test: string[] };
  command?: string[];
}

interface ComposeFile {
  services: Record<string, Service>;
  networks?: Record<string, unknown>;
  volumes?: Record<string, unknown>;
}

/** The variables the compose file itself reads (compose/.env); none is set in these tests. */
const HOST_ENV: Record<string, string> = {};

/** What compose does to every value of the file: ${VAR}, ${VAR:-default}, $$ (comments stay). */
function interpolate(text: string, env: Record<string, string>): string {
  return text.replace(
    /\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}/g,
    (m, name?: string, def?: string) => {
      if (m === "$$") return "$";
      const v = env[name!];
      if (v !== undefined && v !== "") return v;
      assert.ok(def !== undefined, `\${${name}} has no default and is not set`);
      return def;
    },
  );
}

function readCompose(path: string): { text: string; file: ComposeFile } {
  const text = readFileSync(path, "utf8");
  const walk = (v: unknown): unknown =>
    typeof v === "string"
      ? interpolate(v, HOST_ENV)
      : Array.isArray(v)
        ? v.map(walk)
        : v && typeof v === "object"
          ? Object.fromEntries(Object.entries(v).map(([k, x]) => [k, walk(x)]))
          : v;
  return { text, file: walk(yaml.load(text)) as ComposeFile };
}

const KNOWN = new Set([...keyPaths().map(envName), "REGMIRROR_UPSTREAM", "REGMIRROR_CONFIG"]);

/** Every REGMIRROR_ name in the file, commented-out examples included: each must be a setting. */
function unknownNames(text: string): string[] {
  return [...new Set(text.match(/\bREGMIRROR_[A-Z0-9_]+\b/g) ?? [])].filter((n) => !KNOWN.has(n));
}

function isRegmirror(s: Service): boolean {
  return s.image === "regmirror:latest" || s.build !== undefined;
}

function stringEnv(s: Service): Record<string, string> {
  return Object.fromEntries(Object.entries(s.environment ?? {}).map(([k, v]) => [k, String(v)]));
}

test("compose/compose.yaml: its regmirror service publishes 5555 and names only real settings", () => {
  const { text, file } = readCompose("compose/compose.yaml");
  assert.deepEqual(unknownNames(text), []);
  const mirror = file.services.regmirror;
  assert.ok(mirror && isRegmirror(mirror));
  assert.ok(mirror.ports?.includes("5555:5555"));
  const env = stringEnv(mirror);
  assert.doesNotThrow(() => loadConfig(env, "/nonexistent"));
});

test("compose/cluster.yaml: nginx, Redis, MinIO and three replicas of one cluster", () => {
  const { text, file } = readCompose("compose/cluster.yaml");
  assert.deepEqual(unknownNames(text), []);
  const services = file.services;
  for (const name of ["nginx", "redis", "minio"]) assert.ok(services[name], name);
  assert.match(services.redis!.image!, /^redis:7/);
  assert.match(services.minio!.image!, /^minio\/minio/);

  const replicas = Object.entries(services).filter(([, s]) => isRegmirror(s));
  assert.deepEqual(
    replicas.map(([n]) => n),
    ["regmirror-1", "regmirror-2", "regmirror-3"],
  );
  // The same image and build as compose/compose.yaml.
  const single = readCompose("compose/compose.yaml").file.services.regmirror!;
  for (const [name, s] of replicas) {
    assert.equal(s.image, single.image, name);
    assert.deepEqual(s.build, single.build, name);
    assert.equal(s.ports, undefined, `${name}: clients come through nginx`);
    assert.match(s.healthcheck!.test.join(" "), /\/readyz/, name);
  }

  // Every dependency names a service of the file.
  for (const [name, s] of Object.entries(services))
    for (const dep of Object.keys(s.depends_on ?? {})) assert.ok(services[dep], `${name} depends on ${dep}`);

  const nginx = services.nginx!;
  assert.ok(nginx.ports?.includes("5555:5555"), "nginx publishes 5555");
  assert.ok(nginx.volumes?.some((v) => v.startsWith("./nginx-cluster.conf:/etc/nginx/conf.d/")));
  const nginxNetworks = nginx.networks as Record<string, { ipv4_address?: string } | null>;
  const nginxAddress = Object.values(nginxNetworks).find((n) => n?.ipv4_address)?.ipv4_address;
  assert.ok(nginxAddress, "nginx has a fixed address for trustedProxies");

  const minioEnv = stringEnv(services.minio!);
  const advertised = new Set<string>();
  for (const [name, s] of replicas) {
    const env = stringEnv(s);
    for (const key of Object.keys(env)) assert.ok(KNOWN.has(key), `${name}: ${key} is not a setting`);
    const { config } = loadConfig(env, "/nonexistent");
    assert.equal(new URL(config.cluster.redis).hostname, "redis", name);
    assert.equal(config.cluster.advertise, `http://${name}:5555`, name);
    assert.equal(config.listen.port, 5555, name);
    assert.equal(config.workers, 1, name);
    assert.equal(config.storage.driver, "s3", name);
    assert.equal(new URL(config.storage.s3.endpoint).hostname, "minio", name);
    assert.equal(config.storage.s3.forcePathStyle, true, name);
    assert.equal(config.storage.s3.accessKeyId, minioEnv.MINIO_ROOT_USER, name);
    assert.equal(config.storage.s3.secretAccessKey, minioEnv.MINIO_ROOT_PASSWORD, name);
    assert.deepEqual(config.trustedProxies, [nginxAddress], name);
    advertised.add(config.cluster.advertise);
  }
  assert.equal(advertised.size, 3, "each replica advertises its own address");
  // One bucket and one Redis for all: the replicas differ only in what they advertise.
  const shared = (s: Service) => {
    const env = stringEnv(s);
    delete env.REGMIRROR_CLUSTER_ADVERTISE;
    return env;
  };
  for (const [, s] of replicas) assert.deepEqual(shared(s), shared(replicas[0]![1]));
});

test("compose/nginx-cluster.conf: one upstream of the three replicas, hashed by URL, unbuffered", () => {
  const conf = readFileSync("compose/nginx-cluster.conf", "utf8").replace(/#.*$/gm, "");
  const upstream = /upstream\s+(\S+)\s*\{([^}]*)\}/.exec(conf);
  assert.ok(upstream, "an upstream block");
  const [, upstreamName, body] = upstream;
  assert.match(body!, /^\s*hash \$request_uri consistent;/m);
  const servers = [...body!.matchAll(/^\s*server\s+([^\s;]+)/gm)].map((m) => m[1]);
  assert.deepEqual(servers, ["regmirror-1:5555", "regmirror-2:5555", "regmirror-3:5555"]);
  assert.match(conf, /^\s*listen 5555;/m);
  assert.match(conf, new RegExp(`proxy_pass http://${upstreamName};`));
  assert.match(conf, /proxy_buffering off;/);
  assert.match(conf, /proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;/);
  assert.match(conf, /proxy_set_header Host \$http_host;/);
});
