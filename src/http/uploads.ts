import type { IncomingMessage, ServerResponse } from "node:http";
import { RegistryError } from "../oci/errors.ts";
import { formatDigest, parseDigest, type Digest } from "../oci/digest.ts";
import { mountBlob, publishUpload, type MountSources } from "../hosted/mount.ts";
import { rangeOf, type UploadSessions } from "../hosted/uploads.ts";
import { API_VERSION } from "./respond.ts";

// Blob uploads to hosted repositories (OCI distribution spec, "Pushing blobs"), as distribution
// answers them:
//
//   POST   /v2/<name>/blobs/uploads/?digest=<d>        monolithic: the body is the blob → 201
//   POST   /v2/<name>/blobs/uploads/?mount=<d>&from=<r> mounted → 201; else a session → 202
//   POST   /v2/<name>/blobs/uploads/                   a session → 202 (Location, Range: 0-0)
//   PATCH  <location>   [Content-Range: <start>-<end>]  appends → 202; out of order → 416
//   PUT    <location>?digest=<d>  [final bytes]        checks and publishes → 201
//   GET    <location>                                  the status → 204 (Range: 0-<last>)
//   DELETE <location>                                  cancels → 204
//
// The caller (hosted.ts) has checked the name and the client's right to push.

export interface UploadDeps {
  sessions: UploadSessions;
  mount: MountSources;
  /** Counts what was stored (regmirror_hosted_pushes_total); absent in tests that need none. */
  pushed?: (kind: "blob", via: "upload" | "mount", bytes: number) => void;
}

export function uploadRoutes(deps: UploadDeps) {
  const { sessions } = deps;
  const store = deps.mount.store;
  const publish = (repo: string, d: Digest) => (file: string, size: number) =>
    publishUpload(store, repo, d, file, size);
  return async (
    req: IncomingMessage,
    res: ServerResponse,
    repo: string,
    session: string | undefined,
    query: URLSearchParams,
  ): Promise<void> => {
    const method = req.method ?? "GET";
    if (session === undefined) {
      if (method !== "POST") throw methodUnknown();
      const mount = query.get("mount");
      const from = query.get("from");
      if (mount !== null && from !== null) {
        const d = digestParam(mount);
        const size = await mountBlob(deps.mount, repo, d, from);
        if (size !== undefined) {
          deps.pushed?.("blob", "mount", size);
          return created(res, repo, d);
        }
      }
      const digest = query.get("digest");
      if (digest !== null && mount === null) {
        const d = digestParam(digest);
        const id = await sessions.start(repo);
        try {
          if (hasBody(req)) await sessions.append(repo, id, req, { length: contentLength(req) });
          deps.pushed?.("blob", "upload", await sessions.finish(repo, id, d, publish(repo, d)));
        } catch (err) {
          await sessions.cancel(repo, id).catch(() => undefined);
          throw err;
        }
        return created(res, repo, d);
      }
      const id = await sessions.start(repo);
      return progress(res, 202, repo, id, 0);
    }
    try {
      switch (method) {
        case "GET":
        case "HEAD":
          return progress(res, 204, repo, session, await sessions.size(repo, session));
        case "PATCH": {
          const size = await sessions.append(repo, session, req, {
            range: contentRange(req),
            length: contentLength(req),
          });
          return progress(res, 202, repo, session, size);
        }
        case "PUT": {
          const digest = query.get("digest");
          if (digest === null) throw new RegistryError("DIGEST_INVALID", "the digest parameter is missing");
          const d = digestParam(digest);
          if (hasBody(req))
            await sessions.append(repo, session, req, {
              range: contentRange(req),
              length: contentLength(req),
            });
          deps.pushed?.("blob", "upload", await sessions.finish(repo, session, d, publish(repo, d)));
          return created(res, repo, d);
        }
        case "DELETE":
          await sessions.cancel(repo, session);
          res.writeHead(204, { ...API_VERSION, "content-length": 0 });
          return void res.end();
        default:
          throw methodUnknown();
      }
    } catch (err) {
      // Out of order: where the upload stands, so that the client can go on from there.
      if (err instanceof RegistryError && err.code === "RANGE_INVALID")
        Object.assign(err.headers, sessionHeaders(repo, session));
      throw err;
    }
  };
}

function sessionHeaders(repo: string, id: string): Record<string, string> {
  return { location: `/v2/${repo}/blobs/uploads/${id}`, "docker-upload-uuid": id };
}

function progress(res: ServerResponse, status: number, repo: string, id: string, size: number): void {
  res.writeHead(status, {
    ...API_VERSION,
    ...sessionHeaders(repo, id),
    range: rangeOf(size),
    "content-length": 0,
  });
  res.end();
}

function created(res: ServerResponse, repo: string, d: Digest): void {
  const digest = formatDigest(d);
  res.writeHead(201, {
    ...API_VERSION,
    location: `/v2/${repo}/blobs/${digest}`,
    "docker-content-digest": digest,
    "content-length": 0,
  });
  res.end();
}

function digestParam(s: string): Digest {
  const d = parseDigest(s);
  if (!d) throw new RegistryError("DIGEST_INVALID", "not a sha256 digest", { detail: { digest: s } });
  return d;
}

function hasBody(req: IncomingMessage): boolean {
  const cl = req.headers["content-length"];
  return req.headers["transfer-encoding"] !== undefined || (cl !== undefined && cl !== "0");
}

function contentLength(req: IncomingMessage): number | undefined {
  const cl = req.headers["content-length"];
  return cl === undefined || req.headers["transfer-encoding"] !== undefined ? undefined : Number(cl);
}

/** Content-Range of a chunk: "<start>-<end>" (the spec's form), also with "bytes " and "/<total>". */
function contentRange(req: IncomingMessage): { start: number; end: number } | undefined {
  const h = req.headers["content-range"];
  if (h === undefined) return undefined;
  const m = /^(?:bytes[ =])?(\d{1,15})-(\d{1,15})(?:\/(?:\d{1,15}|\*))?$/.exec(h.trim());
  const start = Number(m?.[1]);
  const end = Number(m?.[2]);
  if (!m || end < start)
    throw new RegistryError("RANGE_INVALID", "Content-Range must be <start>-<end>", { detail: { range: h } });
  return { start, end };
}

function methodUnknown(): RegistryError {
  return new RegistryError("UNSUPPORTED", "this method is not supported here", { status: 405 });
}
