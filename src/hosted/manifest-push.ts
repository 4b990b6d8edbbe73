import { RegistryError } from "../oci/errors.ts";
import { digestOf, formatDigest, parseDigest, type Digest } from "../oci/digest.ts";
import { DOCKER_MANIFEST_V1_SIGNED, MANIFEST_TYPES, OCI_MANIFEST } from "../oci/media-types.ts";
import type { Reference } from "../oci/reference.ts";
import { manifestRefs } from "../maintenance/manifest-refs.ts";
import type { Descriptor, HostedStore, ManifestLink } from "./store.ts";

// PUT /v2/<name>/manifests/<reference> for a hosted repository, and DELETE. A manifest is
// accepted only when everything it names is already here: its blobs linked in the repository
// (else MANIFEST_BLOB_UNKNOWN) and, for an index, its child manifests (else MANIFEST_UNKNOWN),
// so a pull of anything pushed always finds all of it. Its `subject`, if any, need not exist
// yet (OCI 1.1 lets a signature arrive before its image); it goes into the referrers index.

export interface PushedManifest {
  digest: string;
  /** The subject's digest, for the OCI-Subject header. */
  subject?: string;
}

/** Schema 1 is refused, as distribution does since 2.7: no client here pushes it. */
const PUSHABLE = new Set(
  [...MANIFEST_TYPES].filter((t) => !t.startsWith("application/vnd.docker.distribution.manifest.v1")),
);

export async function pushManifest(
  store: HostedStore,
  repo: string,
  ref: Reference,
  bytes: Buffer,
  contentType: string | undefined,
): Promise<PushedManifest> {
  const doc = parseManifest(bytes);
  const mediaType = manifestType(doc, contentType);
  const digest = digestOf(bytes);
  if (ref.kind === "digest" && ref.text !== digest) {
    throw new RegistryError("DIGEST_INVALID", "the manifest does not match the digest it was pushed under", {
      detail: { expected: ref.text, actual: digest },
    });
  }
  const refs = manifestRefs(bytes);
  for (const b of refs.blobs) {
    if (b.foreign) continue;
    if ((await store.blobIn(repo, parseDigest(b.digest)!)) === undefined)
      throw new RegistryError(
        "MANIFEST_BLOB_UNKNOWN",
        "the manifest references a blob this repository does not have",
        {
          status: 400,
          detail: { digest: b.digest },
        },
      );
  }
  for (const c of refs.children) {
    if (!(await store.manifestIn(repo, parseDigest(c.digest)!)))
      throw new RegistryError(
        "MANIFEST_UNKNOWN",
        "the index references a manifest this repository does not have",
        {
          status: 400,
          detail: { digest: c.digest },
        },
      );
  }
  const subject = subjectOf(doc);
  const link: ManifestLink = {
    mediaType,
    size: bytes.length,
    ...(artifactTypeOf(doc, mediaType) !== undefined ? { artifactType: artifactTypeOf(doc, mediaType) } : {}),
    ...(subject ? { subject: formatDigest(subject) } : {}),
    ...(annotationsOf(doc) ? { annotations: annotationsOf(doc) } : {}),
  };
  const d = parseDigest(digest)!;
  await store.putManifest(repo, d, bytes, link);
  if (subject) await store.addReferrer(repo, subject, descriptorOf(digest, link));
  if (ref.kind === "tag") await store.setTag(repo, ref.tag, { digest, mediaType });
  return { digest, ...(subject ? { subject: formatDigest(subject) } : {}) };
}

/**
 * DELETE of a manifest by digest removes it from the repository with every tag that points to
 * it; by tag, only the tag (OCI 1.1). The bytes stay until gc.
 */
export async function deleteManifest(store: HostedStore, repo: string, ref: Reference): Promise<void> {
  if (ref.kind === "tag") {
    if (!(await store.deleteTag(repo, ref.tag)))
      throw new RegistryError("MANIFEST_UNKNOWN", "manifest unknown", {
        detail: { name: repo, reference: ref.tag },
      });
    return;
  }
  const link = await store.manifestIn(repo, ref.digest);
  if (!link)
    throw new RegistryError("MANIFEST_UNKNOWN", "manifest unknown", {
      detail: { name: repo, reference: ref.text },
    });
  for (const [tag, t] of await store.tags(repo)) if (t.digest === ref.text) await store.deleteTag(repo, tag);
  if (link.subject) await store.removeReferrer(repo, parseDigest(link.subject)!, ref.text);
  await store.unlinkManifest(repo, ref.digest);
}

/** The descriptor a referrers answer lists for a manifest. */
export function descriptorOf(digest: string, link: ManifestLink): Descriptor {
  return {
    mediaType: link.mediaType,
    digest,
    size: link.size,
    ...(link.artifactType !== undefined ? { artifactType: link.artifactType } : {}),
    ...(link.annotations ? { annotations: link.annotations } : {}),
  };
}

type Doc = Record<string, unknown>;

function parseManifest(bytes: Buffer): Doc {
  let doc: unknown;
  try {
    doc = JSON.parse(bytes.toString("utf8"));
  } catch {
    throw new RegistryError("MANIFEST_INVALID", "the manifest is not valid JSON");
  }
  if (typeof doc !== "object" || doc === null || Array.isArray(doc))
    throw new RegistryError("MANIFEST_INVALID", "the manifest is not a JSON object");
  return doc as Doc;
}

/** The Content-Type, or the body's own mediaType when the client sent none; a known type either way. */
function manifestType(doc: Doc, contentType: string | undefined): string {
  const declared = typeof doc.mediaType === "string" ? doc.mediaType : undefined;
  const header = contentType?.split(";")[0]!.trim().toLowerCase();
  const type =
    header && header !== "application/json" && header !== "application/octet-stream" ? header : declared;
  if (type === undefined && (Array.isArray(doc.layers) || typeof doc.config === "object"))
    return OCI_MANIFEST;
  if (
    type === DOCKER_MANIFEST_V1_SIGNED ||
    type?.startsWith("application/vnd.docker.distribution.manifest.v1")
  )
    throw new RegistryError("MANIFEST_INVALID", "schema 1 manifests are not accepted", {
      detail: { mediaType: type },
    });
  if (type === undefined || !PUSHABLE.has(type))
    throw new RegistryError("MANIFEST_INVALID", "not a manifest type this registry stores", {
      detail: { mediaType: type ?? null, known: [...PUSHABLE] },
    });
  if (declared !== undefined && declared !== type)
    throw new RegistryError("MANIFEST_INVALID", "Content-Type and the manifest's mediaType differ", {
      detail: { contentType: type, mediaType: declared },
    });
  return type;
}

function subjectOf(doc: Doc): Digest | undefined {
  const s = doc.subject;
  if (s === undefined) return undefined;
  const digest = typeof s === "object" && s !== null ? (s as Doc).digest : undefined;
  const d = typeof digest === "string" ? parseDigest(digest) : undefined;
  if (!d) throw new RegistryError("MANIFEST_INVALID", "subject is not a descriptor with a sha256 digest");
  return d;
}

/** OCI 1.1: artifactType, else an image manifest's config media type. */
function artifactTypeOf(doc: Doc, mediaType: string): string | undefined {
  if (typeof doc.artifactType === "string") return doc.artifactType;
  if (mediaType !== OCI_MANIFEST) return undefined;
  const config = doc.config as Doc | undefined;
  return typeof config?.mediaType === "string" ? config.mediaType : undefined;
}

function annotationsOf(doc: Doc): Record<string, string> | undefined {
  const a = doc.annotations;
  if (typeof a !== "object" || a === null || Array.isArray(a)) return undefined;
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(a)) if (typeof v === "string") out[k] = v;
  return Object.keys(out).length ? out : undefined;
}
