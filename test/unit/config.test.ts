import { after, test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import yaml from "js-yaml";
import { readFileSync } from "node:fs";
import { loadConfig, envName, keyPaths } from "../../src/config/load.ts";
import { ConfigError } from "../../src/config/errors.ts";
import { validateConfig } from "../../src/config/validate.ts";
import { parseDuration, parseSize } from "../../src/config/units.ts";
import { redact } from "../../src/config/redact.ts";

const dir = mkdtempSync(join(tmpdir(), "regmirror-cfg-"));
after(() => rmSync(dir, { recursive: true, force: true }));

function problems(fn: () => unknown): string[] {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof ConfigError, String(err));
    return err.problems;
  }
  assert.fail("expected a ConfigError");
}

test("mirror.yml lists exactly the defaults", () => {
  const file = yaml.load(readFileSync("mirror.yml", "utf8"));
  assert.deepEqual(validateConfig(file), validateConfig({}));
  const flat = (o: object, p = ""): string[] =>
    Object.entries(o).flatMap(([k, v]) =>
      v && typeof v === "object" && !Array.isArray(v) ? flat(v as object, `${p}${k}.`) : [`${p}${k}`],
    );
  assert.deepEqual(
    flat(file as object).sort(),
    keyPaths().sort(),
    "every key is in mirror.yml, and nothing else",
  );
});

test("units", () => {
  assert.equal(parseDuration("90s"), 90_000);
  assert.equal(parseDuration("5m"), 300_000);
  assert.equal(parseDuration("1h"), 3_600_000);
  assert.equal(parseDuration("30d"), 30 * 86_400_000);
  assert.equal(parseDuration(0), 0);
  assert.equal(parseDuration("5"), 5000);
  for (const bad of ["", "5x", "-1s", "m", "1.5.3s"]) assert.equal(parseDuration(bad), undefined, bad);
  assert.equal(parseSize("50GiB"), 50 * 1024 ** 3);
  assert.equal(parseSize("500MB"), 500e6);
  assert.equal(parseSize("1k"), 1024);
  assert.equal(parseSize(0), 0);
  for (const bad of ["", "10 parsecs", "-1", "GiB"]) assert.equal(parseSize(bad), undefined, bad);
});

test("environment variables override the file, named by key path", () => {
  const file = join(dir, "m.yml");
  writeFileSync(file, "listen: 127.0.0.1:1\ntag:\n  ttl: 1m\n");
  const { config } = loadConfig({
    REGMIRROR_CONFIG: file,
    REGMIRROR_LISTEN: "[::1]:6000",
    REGMIRROR_UPSTREAM: "http://127.0.0.1:5000/",
    REGMIRROR_UPSTREAM_USERNAME: "u",
    REGMIRROR_UPSTREAM_PASSWORD: "p",
    REGMIRROR_CACHE_DIR: "/tmp/x",
    REGMIRROR_CACHE_MAX_SIZE: "1GiB",
    REGMIRROR_UPSTREAM_CONCURRENCY: "4",
    REGMIRROR_LOG_LEVEL: "debug",
  });
  assert.deepEqual(config.listen, { host: "::1", port: 6000 });
  assert.equal(config.upstream.url, "http://127.0.0.1:5000");
  assert.equal(config.upstream.username, "u");
  assert.equal(config.upstream.password, "p");
  assert.equal(config.upstream.concurrency, 4);
  assert.equal(config.cache.dir, "/tmp/x");
  assert.equal(config.cache.maxSize, 1024 ** 3);
  assert.equal(config.tag.ttl, 60_000, "from the file");
  assert.equal(config.log.level, "debug");
  assert.equal(loadConfig({ REGMIRROR_TAG_TTL: "90s" }, "/nonexistent").config.tag.ttl, 90_000);
  assert.equal(envName("cache.blobTTL"), "REGMIRROR_CACHE_BLOB_TTL");
  // What Kubernetes injects for a Service named regmirror is not a setting.
  const k8s = {
    REGMIRROR_SERVICE_HOST: "10.0.0.1",
    REGMIRROR_SERVICE_PORT: "5555",
    REGMIRROR_SERVICE_PORT_HTTP: "5555",
    REGMIRROR_PORT: "tcp://10.0.0.1:5555",
    REGMIRROR_PORT_5555_TCP: "tcp://10.0.0.1:5555",
    REGMIRROR_PORT_5555_TCP_ADDR: "10.0.0.1",
  };
  assert.equal(loadConfig(k8s, "/nonexistent").config.listen.port, 5555);
});

test("every bad value is refused, naming the key and the value", () => {
  const cases: Array<[Record<string, string>, RegExp]> = [
    [{ REGMIRROR_TAG_TTL: "soon" }, /REGMIRROR_TAG_TTL.*"tag\.ttl".*"soon"/],
    [{ REGMIRROR_LISTEN: "5555" }, /"listen".*"5555"/],
    [{ REGMIRROR_LISTEN: "0.0.0.0:99999" }, /"listen"/],
    [{ REGMIRROR_UPSTREAM: "ftp://x" }, /"upstream\.url".*"ftp:\/\/x"/],
    [{ REGMIRROR_UPSTREAM_URL: "http://u:p@x" }, /"upstream\.url"/],
    [{ REGMIRROR_UPSTREAM_CONCURRENCY: "0" }, /"upstream\.concurrency".*"0"/],
    [{ REGMIRROR_UPSTREAM_CONCURRENCY: "many" }, /"upstream\.concurrency"/],
    [{ REGMIRROR_CACHE_MAX_SIZE: "lots" }, /"cache\.maxSize".*"lots"/],
    [{ REGMIRROR_CACHE_BLOB_TTL: "1y" }, /"cache\.blobTTL"/],
    [{ REGMIRROR_LOG_LEVEL: "loud" }, /"log\.level".*"loud"/],
    [{ REGMIRROR_CACHE_DIR: "" }, /"cache\.dir"/],
    [{ REGMIRROR_TYPO: "1" }, /REGMIRROR_TYPO: unknown setting/],
  ];
  for (const [env, re] of cases) {
    const p = problems(() => loadConfig(env, "/nonexistent"));
    assert.match(p.join("\n"), re, JSON.stringify(env));
  }
  assert.match(problems(() => validateConfig({ cache: { dri: "/x" } })).join(), /unknown key "cache\.dri"/);
  assert.match(problems(() => validateConfig({ tag: { ttl: true } })).join(), /"tag\.ttl": true/);
  assert.match(
    problems(() => loadConfig({ REGMIRROR_CONFIG: "/nonexistent.yml" })).join(),
    /REGMIRROR_CONFIG.*nonexistent/,
  );
  const pw = problems(() => validateConfig({ upstream: { password: 12345 } })).join();
  assert.ok(!pw.includes("12345"), "a password is never echoed");
});

test("YAML errors name the file", () => {
  const file = join(dir, "bad.yml");
  writeFileSync(file, "listen: [unclosed\n");
  assert.match(problems(() => loadConfig({ REGMIRROR_CONFIG: file })).join(), /bad\.yml: not valid YAML/);
  writeFileSync(file, "- a list\n");
  assert.match(problems(() => loadConfig({ REGMIRROR_CONFIG: file })).join(), /mapping/);
});

test("service-link variables of any Service name are ignored; settings are still read", () => {
  // What Kubernetes injects for Services named regmirror-tls and regmirror-metrics.
  const k8s = {
    REGMIRROR_TLS_SERVICE_HOST: "10.0.0.2",
    REGMIRROR_TLS_SERVICE_PORT: "5443",
    REGMIRROR_TLS_SERVICE_PORT_HTTPS: "5443",
    REGMIRROR_TLS_PORT: "tcp://10.0.0.2:5443",
    REGMIRROR_TLS_PORT_5443_TCP: "tcp://10.0.0.2:5443",
    REGMIRROR_TLS_PORT_5443_TCP_ADDR: "10.0.0.2",
    REGMIRROR_TLS_PORT_5443_TCP_PORT: "5443",
    REGMIRROR_TLS_PORT_5443_TCP_PROTO: "tcp",
    REGMIRROR_METRICS_SERVICE_HOST: "10.0.0.3",
    REGMIRROR_METRICS_PORT_9090_UDP: "udp://10.0.0.3:9090",
    REGMIRROR_CACHE_SERVICE_PORT_HTTP_METRICS: "9090",
    REGMIRROR_TLS_LISTEN: "127.0.0.1:6443",
  };
  const { config } = loadConfig(k8s, "/nonexistent");
  assert.deepEqual(config.tls.listen, { host: "127.0.0.1", port: 6443 }, "a real setting is still read");
  // Near misses are still typos, refused.
  for (const typo of ["REGMIRROR_TLS_PORTS", "REGMIRROR_TLS_SERVICE", "REGMIRROR_TLS_PORT_X_TCP"])
    assert.match(problems(() => loadConfig({ [typo]: "1" }, "/nonexistent")).join(), /unknown setting/, typo);
});

test("no secret appears in any refusal or in config check", () => {
  const secret = "s3cr3t-PW";
  const cases: Array<Record<string, string>> = [
    { REGMIRROR_UPSTREAM: `https://bob:${secret}@registry.example` },
    { REGMIRROR_UPSTREAM: `https://:${secret}@registry.example` },
    { REGMIRROR_UPSTREAMS: `[{name: ghcr.io, url: "https://ghcr.io", password: ${secret}, tagTTL: soon}]` },
    { REGMIRROR_UPSTREAMS: `[{name: "bad name!", url: "https://u:${secret}@ghcr.io", password: ${secret}}]` },
    { REGMIRROR_UPSTREAMS: `{name: ghcr.io, password: ${secret}` },
    { REGMIRROR_UPSTREAMS: `[{name: ghcr.io, url: "https://ghcr.io", password: "${secret}"}] ]` },
    { REGMIRROR_UPSTREAMS: `"just a string with https://u:${secret}@host"` },
    { REGMIRROR_ADMIN_TOKEN: secret.slice(0, 9) },
  ];
  for (const env of cases) {
    const text = problems(() => loadConfig(env, "/nonexistent")).join("\n");
    assert.ok(
      !text.includes(secret) && !text.includes(secret.slice(0, 9)),
      `${JSON.stringify(env)}\n${text}`,
    );
  }
  const file = join(dir, "secret.yml");
  writeFileSync(file, `upstream:\n  password: ${secret}\n  url: [unclosed ${secret}\n`);
  const text = problems(() => loadConfig({ REGMIRROR_CONFIG: file })).join("\n");
  assert.ok(!text.includes(secret), text);
});

test("redact hides secret fields and URL userinfo at any depth, and nothing else", () => {
  const shown = redact(
    {
      upstream: { url: "https://a:b@h", password: "p", username: "u" },
      auth: { htpasswd: "/etc/h", tokenTTL: 1 },
      admin: { token: "" },
      note: "see http://x:y@z/ and https://ok/",
    },
    "",
    "(set)",
  );
  assert.deepEqual(shown, {
    upstream: { url: "https://(hidden)@h", password: "(set)", username: "u" },
    auth: { htpasswd: "/etc/h", tokenTTL: 1 },
    admin: { token: "" },
    note: "see http://(hidden)@z/ and https://ok/",
  });
});

test("log lines pass through the same redaction", async () => {
  const { createLogger } = await import("../../src/log.ts");
  const { Writable } = await import("node:stream");
  const winston = (await import("winston")).default;
  const lines: string[] = [];
  const log = createLogger("info", "json");
  log.clear().add(
    new winston.transports.Stream({
      stream: new Writable({
        write(chunk: Buffer, _enc, cb) {
          lines.push(chunk.toString());
          cb();
        },
      }),
    }),
  );
  log.warn("GET https://bob:pw1@host/ failed", {
    error: "at https://u:pw2@h/",
    upstream: { password: "pw3" },
  });
  log.close();
  const text = lines.join("");
  assert.match(text, /failed/);
  for (const pw of ["pw1", "pw2", "pw3"]) assert.ok(!text.includes(pw), text);
});

test("upstream and every upstreams[] entry take the same keys, with the same defaults", () => {
  const c = validateConfig({
    upstream: { tagTTL: "1m", concurrency: 8 },
    upstreams: [
      { name: "ghcr.io", url: "https://ghcr.io" },
      { name: "quay.io", url: "https://quay.io", concurrency: 4, timeout: "5s", revalidateTimeout: "2s" },
    ],
  });
  assert.deepEqual(
    Object.keys(c.upstream).sort(),
    Object.keys(c.upstreams[0]!).sort(),
    "one set of keys for every upstream",
  );
  assert.equal(c.upstream.tagTTL, 60_000);
  assert.equal(c.upstream.concurrency, 8);
  assert.equal(c.upstreams[0]!.tagTTL, undefined, '"" means tag.ttl');
  assert.equal(c.upstreams[0]!.concurrency, 32);
  assert.equal(c.upstreams[0]!.timeout, 30_000);
  assert.equal(c.upstreams[1]!.concurrency, 4);
  assert.equal(c.upstreams[1]!.timeout, 5_000);
  assert.equal(c.upstreams[1]!.revalidateTimeout, 2_000);
  assert.match(
    problems(() =>
      validateConfig({ upstreams: [{ name: "x.io", url: "https://x.io", tagTTL: "soon" }] }),
    ).join(),
    /"upstreams\.0\.tagTTL"/,
  );
});

test("storage.s3: keys from ${VAR}, and each bad value refused by its key", () => {
  const file = join(dir, "s3.yml");
  writeFileSync(
    file,
    "storage:\n  driver: s3\n  s3:\n    bucket: my-cache\n    prefix: mirror\n    accessKeyId: ${S3_KEY}\n    secretAccessKey: ${S3_SECRET}\n",
  );
  const { config } = loadConfig({ REGMIRROR_CONFIG: file, S3_KEY: "k", S3_SECRET: "s" });
  assert.equal(config.storage.s3.accessKeyId, "k");
  assert.equal(config.storage.s3.secretAccessKey, "s");
  assert.equal(config.storage.s3.prefix, "mirror/", "a prefix is a folder");
  const refused = (env: Record<string, string>) => problems(() => loadConfig(env, "/nonexistent")).join("\n");
  assert.match(
    refused({ REGMIRROR_STORAGE_DRIVER: "s3" }),
    /storage\.s3\.bucket.*required with storage\.driver s3/,
  );
  assert.match(refused({ REGMIRROR_STORAGE_DRIVER: "gcs" }), /storage\.driver/);
  assert.match(
    refused({ REGMIRROR_STORAGE_S3_BUCKET: "No_Such" }),
    /storage\.s3\.bucket.*not an S3 bucket name/,
  );
  assert.match(
    refused({ REGMIRROR_STORAGE_S3_ACCESS_KEY_ID: "k" }),
    /storage\.s3\.secretAccessKey.*go together/,
  );
  assert.match(refused({ REGMIRROR_STORAGE_S3_PREFIX: "/abs" }), /storage\.s3\.prefix/);
  assert.match(refused({ REGMIRROR_STORAGE_S3_ENDPOINT: "minio:9000" }), /storage\.s3\.endpoint/);
  assert.match(refused({ REGMIRROR_STORAGE_S3_FORCE_PATH_STYLE: "maybe" }), /storage\.s3\.forcePathStyle/);
});
