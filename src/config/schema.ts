import { z } from "zod";
import { isIP } from "node:net";
import { parseDuration, parseSize } from "./units.ts";

// Every setting, its type and its default, in one place. mirror.yml at the top level lists the
// same keys with the same defaults (a test parses it and compares), and every key can be
// overridden by REGMIRROR_<KEY_PATH> (see load.ts). Defaults use prefault so that they go
// through the same parsing as a user's value ("5m" becomes milliseconds either way).

const duration = z.union([z.string(), z.number()]).transform((v, ctx) => {
  const ms = parseDuration(v);
  if (ms === undefined) {
    ctx.addIssue({ code: "custom", message: "not a duration (use e.g. 90s, 5m, 1h, 30d)" });
    return z.NEVER;
  }
  return ms;
});

const size = z.union([z.string(), z.number()]).transform((v, ctx) => {
  const bytes = parseSize(v);
  if (bytes === undefined) {
    ctx.addIssue({ code: "custom", message: "not a size (use e.g. 500MiB, 50GiB, or a number of bytes)" });
    return z.NEVER;
  }
  return bytes;
});

/** true/false, and from the environment "true"/"false"/"1"/"0"/"on"/"off". */
const boolean = z.union([z.boolean(), z.string()]).transform((v, ctx) => {
  if (typeof v === "boolean") return v;
  const s = v.trim().toLowerCase();
  if (["true", "1", "on", "yes"].includes(s)) return true;
  if (["false", "0", "off", "no"].includes(s)) return false;
  ctx.addIssue({ code: "custom", message: "not true or false" });
  return z.NEVER;
});

/** Environment variables are strings: accept "32" where a number is expected. */
const positiveInt = z
  .union([z.number(), z.string().regex(/^\d+$/, "not a whole number").transform(Number)])
  .pipe(z.number().int("not a whole number").min(1, "must be at least 1"));

const listen = z.string().transform((v, ctx) => {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]*)):(\d{1,5})$/.exec(v.trim());
  const port = m ? Number(m[3]) : NaN;
  if (!m || port > 65535) {
    ctx.addIssue({ code: "custom", message: "not host:port (e.g. 0.0.0.0:5555 or [::]:5555)" });
    return z.NEVER;
  }
  return { host: m[1] ?? (m[2] || "0.0.0.0"), port };
});

const httpUrl = z.string().transform((v, ctx) => {
  let u: URL | undefined;
  try {
    u = new URL(v);
  } catch {
    u = undefined;
  }
  if (
    !u ||
    (u.protocol !== "http:" && u.protocol !== "https:") ||
    u.search ||
    u.hash ||
    u.username ||
    u.password
  ) {
    ctx.addIssue({ code: "custom", message: "not an http(s) URL without credentials, query or fragment" });
    return z.NEVER;
  }
  return u.origin + u.pathname.replace(/\/+$/, "");
});

/** redis://[user:password@]host:port[/db] or rediss://…; "" = no cluster. */
const redisUrl = z.string().refine((v) => {
  if (v === "") return true;
  try {
    const u = new URL(v);
    return (u.protocol === "redis:" || u.protocol === "rediss:") && u.hostname !== "";
  } catch {
    return false;
  }
}, "not a redis:// or rediss:// URL");

/** A hosted-repository glob: name characters, "/", and * or ** (hosted/names.ts). */
const hostedGlob = z
  .string()
  .regex(/^[a-z0-9*][a-z0-9._*/-]*$/, 'not a repository glob (e.g. "local/*", "team/**")')
  .refine(
    (g) => !g.split("/").includes("") && !/\*{3}/.test(g),
    'not a repository glob (e.g. "local/*", "team/**")',
  );

export const LOG_LEVELS = ["error", "warn", "info", "http", "debug"] as const;

/** A registry host as clients name it in image references: docker.io, ghcr.io, registry.local:5000. */
const registryName = z
  .string()
  .regex(
    /^[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:\d{1,5})?$/,
    "not a registry host name (e.g. ghcr.io, registry.local:5000)",
  );

/** Where an upstream's credentials come from; ${VAR} in username and password is replaced by load.ts. */
const credentialFields = {
  username: z.string().prefault(""),
  password: z.string().prefault(""),
  /** A Docker config.json (as written by `docker login`) to take this registry's credentials from. */
  credentialsFile: z.string().prefault(""),
};

/** Empty means "inherit" (an upstream's tagTTL falls back to tag.ttl). */
const inheritedDuration = z.union([z.string(), z.number()]).transform((v, ctx) => {
  if (v === "") return undefined;
  const ms = parseDuration(v);
  if (ms === undefined) {
    ctx.addIssue({ code: "custom", message: 'not a duration (use e.g. 90s, 5m, 1h), or "" for tag.ttl' });
    return z.NEVER;
  }
  return ms;
});

/** One registry to mirror. `upstream` and every `upstreams[]` entry take exactly these keys. */
const upstreamFields = {
  ...credentialFields,
  /** Most requests in flight to this upstream at once. */
  concurrency: positiveInt.prefault(32),
  /** Time allowed for response headers, and between body chunks. */
  timeout: duration.prefault("30s"),
  /** Time allowed for a tag revalidation (HEAD) before a cached tag is served stale. */
  revalidateTimeout: duration.prefault("5s"),
  /** This registry's own tag TTL; "" means tag.ttl. */
  tagTTL: inheritedDuration.prefault(""),
  /** Follow blob redirects to loopback, link-local and private addresses (always, when the upstream is on one). */
  privateRedirects: boolean.prefault(false),
};

const extraUpstream = z.strictObject({ name: registryName, url: httpUrl, ...upstreamFields });

/** An address or CIDR, IPv4 or IPv6 (10.0.0.0/8, ::1, fd00::/8). */
const addressOrCidr = z
  .string()
  .refine((v) => isAddressOrCidr(v), "not an IP address or CIDR (e.g. 10.0.0.0/8, 127.0.0.1, fd00::/8)");

export const ConfigSchema = z
  .strictObject({
    listen: listen.prefault("0.0.0.0:5555"),
    shutdownTimeout: duration.prefault("20s"),
    /** Processes serving requests from one cache: "auto" (the CPUs we may use) or a number; 1 = one process. */
    workers: z
      .union([z.literal("auto"), positiveInt], { error: 'not "auto" or a whole number of at least 1' })
      .prefault("auto"),
    upstream: z
      .strictObject({
        name: registryName.prefault("docker.io"),
        url: httpUrl.prefault("https://registry-1.docker.io"),
        ...upstreamFields,
      })
      .prefault({}),
    upstreams: z.array(extraUpstream).prefault([]),
    cache: z
      .strictObject({
        dir: z.string().min(1, "must not be empty").prefault("/var/lib/regmirror"),
        maxSize: size.prefault("50GiB"),
        blobTTL: duration.prefault("30d"),
        fillTimeout: duration.prefault("1m"),
        abandonedFillTimeout: duration.prefault("5m"),
        manifestMemory: size.prefault("64MiB"),
        blobMemory: size.prefault("64MiB"),
        sendfile: boolean.prefault(true),
        sendfileThreads: positiveInt.prefault(64),
        /**
         * Answer cache hits held in memory (manifests, small blobs, /v2/) on the connection
         * itself, before Node's HTTP parser: about twice the requests per second. false sends
         * every request through Node's HTTP server.
         */
        fastPath: boolean.prefault(true),
        minFree: size.prefault("1GiB"),
      })
      .prefault({}),
    storage: z
      .strictObject({
        /** Where blobs, manifests and tags live: cache.dir, or an S3 bucket (fills stay in cache.dir). */
        driver: z.enum(["filesystem", "s3"]).prefault("filesystem"),
        s3: z
          .strictObject({
            /** Empty: AWS itself (or AWS_ENDPOINT_URL_S3). */
            endpoint: z.union([z.literal(""), httpUrl]).prefault(""),
            bucket: z
              .string()
              .regex(/^$|^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/, "not an S3 bucket name (3-63 of a-z 0-9 . -)")
              .prefault(""),
            /** Empty: AWS_REGION, the profile's, or us-east-1. */
            region: z.string().prefault(""),
            /** Keys go below this (e.g. "regmirror/"), so one bucket can hold other things too. */
            prefix: z
              .string()
              .refine((p) => !p.startsWith("/") && !p.split("/").includes(".."), 'no leading "/" and no ".."')
              .transform((p) => (p === "" || p.endsWith("/") ? p : `${p}/`))
              .prefault(""),
            /** Bucket in the path, not the host name: most S3-compatible servers (MinIO, Ceph) need it. */
            forcePathStyle: boolean.prefault(false),
            /** Empty: the AWS SDK's chain (AWS_ACCESS_KEY_ID, profiles, instance roles). */
            accessKeyId: z.string().prefault(""),
            secretAccessKey: z.string().prefault(""),
            /** Answer cached blob GETs with a 307 to a presigned URL: the bytes skip the mirror. */
            redirect: boolean.prefault(false),
          })
          .prefault({}),
      })
      .prefault({}),
    cluster: z
      .strictObject({
        /** Replicas sharing this Redis (and one storage) act as one mirror; "" = on its own. */
        redis: redisUrl.prefault(""),
        /** How the other replicas reach this one (fills they follow); "" = http://<hostname>:<listen port>. */
        advertise: z.union([z.literal(""), httpUrl]).prefault(""),
      })
      .prefault({}),
    tag: z
      .strictObject({
        ttl: duration.prefault("5m"),
        maxStale: duration.prefault("7d"),
      })
      .prefault({}),
    auth: z
      .strictObject({
        /** An htpasswd file (bcrypt). Empty: anonymous pulls. */
        htpasswd: z.string().prefault(""),
        tokenTTL: duration.prefault("1h"),
        maxFailedLogins: positiveInt.prefault(10),
        failedLoginWindow: duration.prefault("1m"),
        /** With htpasswd: pulls need no login (anonymous tokens), pushes and deletes still do. */
        anonymousPull: boolean.prefault(false),
      })
      .prefault({}),
    hosted: z
      .strictObject({
        /**
         * Names hosted here (pushed to, never asked of an upstream, never evicted): globs where
         * * is one path component's characters and ** any run of them ("local/*", "team/**").
         */
        repositories: z.array(hostedGlob).prefault([]),
        /** DELETE of manifests, tags and blobs in hosted repositories; off: 405 UNSUPPORTED. */
        delete: boolean.prefault(false),
        /** htpasswd users who may push (and, with delete, delete); empty: every htpasswd user. */
        pushers: z.array(z.string().min(1)).prefault([]),
        /** Pushes without any login when there is no htpasswd file (a trusted network only). */
        anonymousPush: boolean.prefault(false),
        /** An upload session with no new bytes for this long is dropped. */
        uploadTimeout: duration.prefault("1h"),
        /** Largest blob one upload may make. */
        maxBlobSize: size.prefault("20GiB"),
        /** Garbage collection leaves blobs and manifests younger than this (pushes in progress). */
        gcGrace: duration.prefault("1h"),
      })
      .prefault({}),
    trustedProxies: z.array(addressOrCidr).prefault([]),
    access: z
      .strictObject({
        allow: z.array(z.string().min(1)).prefault([]),
        deny: z.array(z.string().min(1)).prefault([]),
      })
      .prefault({}),
    tls: z
      .strictObject({
        cert: z.string().prefault(""),
        key: z.string().prefault(""),
        listen: listen.prefault("0.0.0.0:5443"),
      })
      .prefault({}),
    limits: z
      .strictObject({
        perClient: positiveInt.prefault(256),
        headersTimeout: duration.prefault("20s"),
        maxManifestSize: size.prefault("4MiB"),
        stallTimeout: duration.prefault("60s"),
      })
      .prefault({}),
    admin: z
      .strictObject({
        /**
         * Bearer token for the admin API (POST /admin/purge, /admin/gc, /admin/warm). Empty: the
         * API is off and /admin/* answers 404. Long enough that it cannot be guessed online.
         */
        token: z
          .string()
          .refine((t) => t === "" || t.length >= 16, "at least 16 characters (e.g. openssl rand -hex 32)")
          .prefault(""),
      })
      .prefault({}),
    log: z
      .strictObject({
        level: z.enum(LOG_LEVELS).prefault("info"),
        format: z.enum(["auto", "json", "text"]).prefault("auto"),
      })
      .prefault({}),
  })
  .superRefine((c, ctx) => {
    if (Boolean(c.tls.cert) !== Boolean(c.tls.key)) {
      ctx.addIssue({
        code: "custom",
        path: ["tls", c.tls.cert ? "key" : "cert"],
        message: "tls.cert and tls.key go together",
      });
    }
    if (c.cluster.redis && c.workers !== "auto" && c.workers > 1) {
      ctx.addIssue({
        code: "custom",
        path: ["workers"],
        message:
          "a replica of a cluster (cluster.redis) runs as one process: set workers to 1 or auto, and scale out with replicas",
      });
    }
    if (c.cluster.redis && c.storage.driver !== "s3") {
      ctx.addIssue({
        code: "custom",
        path: ["storage", "driver"],
        message: "the replicas of a cluster (cluster.redis) share one bucket: set storage.driver to s3",
      });
    }
    if (c.hosted.anonymousPush && c.auth.htpasswd) {
      ctx.addIssue({
        code: "custom",
        path: ["hosted", "anonymousPush"],
        message: "with auth.htpasswd pushes need a login: list who may push in hosted.pushers instead",
      });
    }
    if (c.auth.anonymousPull && !c.auth.htpasswd) {
      ctx.addIssue({
        code: "custom",
        path: ["auth", "anonymousPull"],
        message: "pulls are anonymous already without auth.htpasswd",
      });
    }
    if (c.storage.driver === "s3" && !c.storage.s3.bucket) {
      ctx.addIssue({
        code: "custom",
        path: ["storage", "s3", "bucket"],
        message: "required with storage.driver s3",
      });
    }
    if (Boolean(c.storage.s3.accessKeyId) !== Boolean(c.storage.s3.secretAccessKey)) {
      ctx.addIssue({
        code: "custom",
        path: ["storage", "s3", c.storage.s3.accessKeyId ? "secretAccessKey" : "accessKeyId"],
        message: "storage.s3.accessKeyId and storage.s3.secretAccessKey go together",
      });
    }
    const seen = new Set([c.upstream.name]);
    c.upstreams.forEach((u, i) => {
      if (seen.has(u.name))
        ctx.addIssue({
          code: "custom",
          path: ["upstreams", i, "name"],
          message: "a second upstream with this name",
        });
      seen.add(u.name);
    });
  });

export type Config = z.output<typeof ConfigSchema>;

function isAddressOrCidr(v: string): boolean {
  const [addr, bits, ...rest] = v.split("/");
  const family = isIP(addr ?? "");
  if (family === 0 || rest.length > 0) return false;
  if (bits === undefined) return true;
  return /^\d{1,3}$/.test(bits) && Number(bits) <= (family === 4 ? 32 : 128);
}
