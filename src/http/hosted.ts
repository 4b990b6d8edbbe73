import type { IncomingMessage, ServerResponse } from "node:http";
import { RegistryError } from "../oci/errors.ts";
import { OCI_INDEX } from "../oci/media-types.ts";
import { parseReference, requireDigest } from "../oci/reference.ts";
import type { Hosted } from "../hosted/service.ts";
import { deleteManifest, pushManifest } from "../hosted/manifest-push.ts";
import { paginate } from "../mirror/listing.ts";
import type { Route } from "./route.ts";
import { API_VERSION, sendJson } from "./respond.ts";
import { readSmallBody } from "./body.ts";

// Requests for hosted repositories (hosted.repositories): the whole API, push side included, on
// storage below hosted/. The caller (registry.ts) has checked the name and the client's rights
// for the method; nothing here asks an upstream.

export interface HostedDeps {
  hosted: Hosted;
  /** The upload endpoints (uploads.ts). */
  uploads: (
    req: IncomingMessage,
    res: ServerResponse,
    repo: string,
    session: string | undefined,
    query: URLSearchParams,
  ) => Promise<void>;
  maxManifestBytes: number;
  /** Counts what was stored (regmirror_hosted_pushes_total). */
  pushed?: (kind: "manifest", via: "put", bytes: number) => void;
}

/** What the request log records of a hosted answer. */
export interface HostedOutcome {
  bytes: number;
}

type NamedRoute = Exclude<Route, { kind: "base" } | { kind: "catalog" }>;

export async function serveHosted(
  deps: HostedDeps,
  req: IncomingMessage,
  res: ServerResponse,
  r: NamedRoute,
  query: URLSearchParams,
  out: HostedOutcome,
  sendBlob: (b: Awaited<ReturnType<Hosted["blob"]>>) => void,
): Promise<void> {
  const h = deps.hosted;
  const method = req.method ?? "GET";
  const read = method === "GET" || method === "HEAD";
  switch (r.kind) {
    case "upload":
      return deps.uploads(req, res, r.name, r.session, query);
    case "manifest": {
      const ref = parseReference(r.reference);
      if (read) {
        const m = await h.manifest(r.name, ref);
        res.writeHead(200, {
          ...API_VERSION,
          "content-type": m.mediaType,
          "content-length": m.bytes.length,
          "docker-content-digest": m.digest,
          etag: `"${m.digest}"`,
        });
        if (method === "HEAD") return void res.end();
        out.bytes = m.bytes.length;
        return void res.end(m.bytes);
      }
      if (method === "PUT") {
        const bytes = await readSmallBody(req, deps.maxManifestBytes);
        const pushed = await pushManifest(h.store, r.name, ref, bytes, req.headers["content-type"]);
        deps.pushed?.("manifest", "put", bytes.length);
        res.writeHead(201, {
          ...API_VERSION,
          location: `/v2/${r.name}/manifests/${pushed.digest}`,
          "docker-content-digest": pushed.digest,
          ...(pushed.subject ? { "oci-subject": pushed.subject } : {}),
          "content-length": 0,
        });
        return void res.end();
      }
      if (method === "DELETE") {
        requireDelete(h);
        await deleteManifest(h.store, r.name, ref);
        return accepted(res);
      }
      throw methodUnknown();
    }
    case "blob": {
      const d = requireDigest(r.digest);
      if (read) return sendBlob(await h.blob(r.name, d));
      if (method === "DELETE") {
        requireDelete(h);
        if (!(await h.store.unlinkBlob(r.name, d)))
          throw new RegistryError("BLOB_UNKNOWN", "blob unknown to registry", {
            detail: { digest: r.digest },
          });
        return accepted(res);
      }
      throw methodUnknown();
    }
    case "tags": {
      if (!read) throw methodUnknown();
      const n = query.get("n");
      if (n !== null && !/^\d{1,6}$/.test(n))
        throw new RegistryError("PAGINATION_NUMBER_INVALID", "n must be a whole number", { detail: { n } });
      const page = paginate(
        await h.tags(r.name),
        n === null ? undefined : Number(n),
        query.get("last") ?? undefined,
      );
      const headers: Record<string, string> = {};
      if (page.next !== undefined) {
        const more = new URLSearchParams({ ...(n === null ? {} : { n }), last: page.next });
        headers.link = `</v2/${r.name}/tags/list?${more}>; rel="next"`;
      }
      return sendJson(res, 200, { name: r.name, tags: page.items }, headers);
    }
    case "referrers": {
      if (!read) throw methodUnknown();
      const subject = requireDigest(r.digest);
      const artifactType = query.get("artifactType");
      let manifests = await h.store.referrers(r.name, subject);
      if (artifactType !== null) manifests = manifests.filter((m) => m.artifactType === artifactType);
      const body = JSON.stringify({ schemaVersion: 2, mediaType: OCI_INDEX, manifests });
      res.writeHead(200, {
        ...API_VERSION,
        "content-type": OCI_INDEX,
        "content-length": Buffer.byteLength(body),
        ...(artifactType !== null ? { "oci-filters-applied": "artifactType" } : {}),
      });
      if (method === "HEAD") return void res.end();
      return void res.end(body);
    }
  }
}

function requireDelete(h: Hosted): void {
  if (!h.opts.deleteEnabled)
    throw new RegistryError("UNSUPPORTED", "deleting is disabled on this registry (hosted.delete)", {
      status: 405,
    });
}

function accepted(res: ServerResponse): void {
  res.writeHead(202, { ...API_VERSION, "content-length": 0 });
  res.end();
}

function methodUnknown(): RegistryError {
  return new RegistryError("UNSUPPORTED", "this method is not supported here", { status: 405 });
}
