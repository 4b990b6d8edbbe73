import { createHash } from "node:crypto";
import pLimit from "p-limit";
import { Agent, request, type Dispatcher } from "undici";
import { DEFAULT_MANIFEST_ACCEPT } from "../oci/media-types.ts";
import { describeError } from "./errors.ts";
import { formatPlatform, platformMatches, type ImageRef, type Platform } from "./image-ref.ts";
import { manifestRefs, type Descriptor, type ManifestRefs } from "./manifest-refs.ts";

// `regmirror warm IMAGE...`: pre-pulls images into a running mirror's cache by pulling them
// through its registry API, exactly as a client would: the manifest by tag (asking for all four
// modern manifest types), each child of an index (all platforms, or those asked for), then every
// blob, read to the end and thrown away. The mirror caches what passes through it; warm needs no
// access to the cache directory, so it works against a mirror on another machine too. The admin
// API (POST /admin/warm) runs the same code against the mirror's own URL. This returns what was
// warmed; how progress and results are shown is the caller's (warm-progress.ts, print.ts).

/** Blob transfers at once, across all images: enough to fill a link, few enough to be polite. */
const BLOB_CONCURRENCY = 4;
/** An index of indexes is legal but rare; deeper nesting is a loop or garbage. */
const MAX_DEPTH = 3;

/** How a caller follows the warming (the command line draws bars from it). */
export interface ImageProgress {
  /** What the image needs, known once its manifests are in. */
  total(bytes: number, blobs: number): void;
  bytes(n: number): void;
  blobDone(): void;
  /** The image is done, well or not. */
  end(result: WarmResult): void;
}

export interface WarmProgress {
  image(name: string): ImageProgress;
  /** Stops drawing and prints what was held back. */
  finish(): void;
}

export interface WarmOptions {
  /** Base URL of the mirror, without a trailing slash. */
  mirror: string;
  /** The mirror's own limit on a manifest (limits.maxManifestSize): a bigger answer is not one. */
  maxManifestBytes: number;
  /** Only these platforms of an index; undefined for all. */
  platforms: Platform[] | undefined;
  /** Sent on every request when the mirror has client authentication on (it accepts Basic on /v2/). */
  authorization?: string;
  /** Told about each image as it goes; nothing is shown without one. */
  progress?: WarmProgress;
}

export interface WarmReport {
  mirror: string;
  /** In the order asked for. */
  images: WarmResult[];
  /** Every image was warmed. */
  ok: boolean;
}

export interface WarmResult {
  image: string;
  ok: boolean;
  /** Digest of the manifest the reference resolved to. */
  digest?: string;
  manifests: number;
  blobs: number;
  bytes: number;
  error?: string;
}

/** The connection pool and the headers every request carries. */
interface Http {
  agent: Dispatcher;
  headers: Record<string, string>;
  maxManifestBytes: number;
}

interface Fetched {
  digest: string;
  refs: ManifestRefs;
}

/**
 * Warms every image, each on its own: one that fails is reported in its result and the others
 * still go on. Throws only when the mirror cannot be reached or refuses the credentials.
 */
export async function warmImages(images: ImageRef[], opts: WarmOptions): Promise<WarmReport> {
  const agent = new Agent({ connect: { timeout: 10_000 } });
  try {
    await ping(agent, opts);
    const limit = pLimit(BLOB_CONCURRENCY);
    const progress = opts.progress ?? SILENT;
    const results = await Promise.all(
      images.map(async (ref): Promise<WarmResult> => {
        const p = progress.image(ref.text);
        let r: WarmResult;
        try {
          r = await warmImage(agent, opts, ref, limit, p);
        } catch (err) {
          r = { image: ref.text, ok: false, manifests: 0, blobs: 0, bytes: 0, error: describeError(err) };
        }
        p.end(r);
        return r;
      }),
    );
    progress.finish();
    return { mirror: opts.mirror, images: results, ok: results.every((r) => r.ok) };
  } finally {
    await agent.close();
  }
}

const SILENT: WarmProgress = {
  image: () => ({
    total: () => undefined,
    bytes: () => undefined,
    blobDone: () => undefined,
    end: () => undefined,
  }),
  finish: () => undefined,
};

async function warmImage(
  agent: Dispatcher,
  opts: WarmOptions,
  ref: ImageRef,
  limit: ReturnType<typeof pLimit>,
  progress: ImageProgress,
): Promise<WarmResult> {
  const http: Http = {
    agent,
    headers: opts.authorization ? { authorization: opts.authorization } : {},
    maxManifestBytes: opts.maxManifestBytes,
  };
  const base = `${opts.mirror}/v2/${ref.name}`;
  const root = await getManifest(http, base, ref.reference, ref.isDigest);
  // Breadth-first through indexes; the platform filter applies to the top index, where the
  // platforms are (a nested index is followed whole).
  const images: Fetched[] = [];
  let level: Fetched[] = [root];
  let manifests = 1;
  for (let depth = 0; level.length > 0; depth++) {
    const next: Descriptor[] = [];
    for (const m of level) {
      if (m.refs.kind !== "index") {
        images.push(m);
        continue;
      }
      if (depth >= MAX_DEPTH) throw new Error(`indexes nested deeper than ${MAX_DEPTH}`);
      next.push(...(depth === 0 ? selectPlatforms(m.refs.children, opts.platforms) : m.refs.children));
    }
    level = await Promise.all(next.map((d) => getManifest(http, base, d.digest, true)));
    manifests += level.length;
  }

  const blobs = new Map<string, Descriptor>();
  for (const img of images) {
    for (const b of img.refs.blobs) if (!b.foreign && !blobs.has(b.digest)) blobs.set(b.digest, b);
  }
  progress.total(
    [...blobs.values()].reduce((a, b) => a + b.size, 0),
    blobs.size,
  );
  // Settle every blob before reporting: one failed layer should not stop the others from being
  // cached, nor leave transfers running after warm has reported.
  const settled = await Promise.allSettled(
    [...blobs.values()].map((b) =>
      limit(async () => {
        const n = await pullBlob(http, base, b, (k) => progress.bytes(k));
        progress.blobDone();
        return n;
      }),
    ),
  );
  const failed = settled.filter((r): r is PromiseRejectedResult => r.status === "rejected");
  if (failed.length > 0) {
    const first = describeError(failed[0]!.reason);
    throw new Error(`${failed.length} of ${blobs.size} blobs failed; the first: ${first}`);
  }
  const sizes = settled.map((r) => (r.status === "fulfilled" ? r.value : 0));
  return {
    image: ref.text,
    ok: true,
    digest: root.digest,
    manifests,
    blobs: blobs.size,
    bytes: sizes.reduce((a, b) => a + b, 0),
  };
}

/** All children, or those of the asked platforms; asking for a platform the index lacks is an error. */
function selectPlatforms(children: Descriptor[], platforms: Platform[] | undefined): Descriptor[] {
  if (platforms === undefined) return children;
  const chosen = children.filter((c) => platforms.some((p) => platformMatches(c.platform, p)));
  if (chosen.length === 0) {
    const have = children.map((c) => formatPlatform(c.platform)).join(", ");
    throw new Error(
      `no manifest for ${platforms.map(formatPlatform).join(", ")} in the index (it has ${have})`,
    );
  }
  return chosen;
}

async function getManifest(http: Http, base: string, reference: string, byDigest: boolean): Promise<Fetched> {
  const url = `${base}/manifests/${reference}`;
  const res = await request(url, {
    dispatcher: http.agent,
    headers: { ...http.headers, accept: DEFAULT_MANIFEST_ACCEPT.join(", ") },
  });
  if (res.statusCode !== 200) throw await httpError("GET", url, res);
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of res.body) {
    total += (chunk as Buffer).length;
    if (total > http.maxManifestBytes) {
      res.body.destroy();
      throw new Error(`GET ${url}: the answer is larger than any manifest`);
    }
    chunks.push(chunk as Buffer);
  }
  const bytes = Buffer.concat(chunks);
  const digest = "sha256:" + createHash("sha256").update(bytes).digest("hex");
  if (byDigest && digest !== reference) throw new Error(`GET ${url}: the manifest hashes to ${digest}`);
  const refs = manifestRefs(bytes);
  if (refs.kind === "unknown") throw new Error(`GET ${url}: not an image manifest or index`);
  return { digest, refs };
}

/** Reads the blob to the end (that is what makes the mirror cache it); returns its length. */
async function pullBlob(
  http: Http,
  base: string,
  blob: Descriptor,
  onBytes: (n: number) => void,
): Promise<number> {
  const url = `${base}/blobs/${blob.digest}`;
  const res = await request(url, { dispatcher: http.agent, headers: http.headers });
  if (res.statusCode !== 200) throw await httpError("GET", url, res);
  let n = 0;
  for await (const chunk of res.body) {
    n += (chunk as Buffer).length;
    onBytes((chunk as Buffer).length);
  }
  // Schema 1 manifests declare no size (0): then any length is accepted.
  if (blob.size > 0 && n !== blob.size) {
    throw new Error(`GET ${url}: got ${n} bytes, the manifest says ${blob.size}`);
  }
  return n;
}

/** One request before the work: an unreachable mirror or refused credentials is one clear message, not one per image. */
async function ping(agent: Dispatcher, opts: WarmOptions): Promise<void> {
  let status: number;
  try {
    const res = await request(`${opts.mirror}/v2/`, {
      dispatcher: agent,
      headersTimeout: 10_000,
      headers: opts.authorization ? { authorization: opts.authorization } : {},
    });
    await res.body.dump();
    status = res.statusCode;
  } catch (err) {
    throw new Error(`cannot reach the mirror at ${opts.mirror}: ${describeError(err)}`, { cause: err });
  }
  if (status === 401) {
    throw new Error(
      opts.authorization
        ? `the mirror at ${opts.mirror} refused the credentials of --user`
        : `the mirror at ${opts.mirror} requires a login: use --user NAME (with --password-stdin) or NAME:PASSWORD`,
    );
  }
}

/** "GET <url>: 404 MANIFEST_UNKNOWN manifest unknown", from a registry error body when there is one. */
async function httpError(method: string, url: string, res: Dispatcher.ResponseData): Promise<Error> {
  const text = await res.body.text().catch(() => "");
  let detail = text.slice(0, 200);
  try {
    const body = JSON.parse(text) as { errors?: Array<{ code?: string; message?: string }> };
    const e = body.errors?.[0];
    if (e) detail = [e.code, e.message].filter(Boolean).join(" ");
  } catch {
    // not a registry error body: keep the text
  }
  return new Error(`${method} ${url}: ${res.statusCode}${detail ? " " + detail : ""}`);
}
