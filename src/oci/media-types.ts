// Manifest media types a mirror must tell apart: the tag cache is keyed by what a client
// accepts, so a client that only takes a single-platform manifest never gets an index.

export const DOCKER_MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json";
export const DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json";
export const DOCKER_MANIFEST_V1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws";
export const OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json";
export const OCI_INDEX = "application/vnd.oci.image.index.v1+json";

/**
 * Every type a manifest is served as. The only types a manifest answer may carry: a type from
 * anywhere else (a body's own claim, an upstream's odd header) could be text/html on the
 * mirror's origin.
 */
export const MANIFEST_TYPES: ReadonlySet<string> = new Set([
  DOCKER_MANIFEST_V2,
  DOCKER_MANIFEST_LIST,
  DOCKER_MANIFEST_V1_SIGNED,
  "application/vnd.docker.distribution.manifest.v1+json",
  OCI_MANIFEST,
  OCI_INDEX,
  // OCI 1.1's release candidates had it; some registries still hold such manifests.
  "application/vnd.oci.artifact.manifest.v1+json",
]);

/** What we ask the upstream for when the client sent no Accept at all. */
export const DEFAULT_MANIFEST_ACCEPT = [OCI_INDEX, OCI_MANIFEST, DOCKER_MANIFEST_LIST, DOCKER_MANIFEST_V2];

/**
 * Splits Accept header values (several header lines and comma lists alike) into bare media
 * types, dropping parameters such as q=. Order is kept; duplicates removed.
 */
export function parseAccept(values: string | string[] | undefined): string[] {
  if (values === undefined) return [];
  const lines = Array.isArray(values) ? values : [values];
  const out: string[] = [];
  for (const line of lines) {
    for (const part of line.split(",")) {
      const type = part.split(";")[0]!.trim().toLowerCase();
      if (type && !out.includes(type)) out.push(type);
    }
  }
  return out;
}

/** Whether a client that sent `accept` takes a manifest of `mediaType`. No Accept takes anything. */
export function accepts(accept: readonly string[], mediaType: string): boolean {
  if (accept.length === 0) return true;
  return accept.some(
    (a) => a === "*/*" || a === mediaType || (a === "application/*" && mediaType.startsWith("application/")),
  );
}

/**
 * The media type of a manifest body (undefined when it is not a manifest at all), from its own
 * `mediaType` field when that is a known manifest type; an OCI manifest may omit it (and a
 * hostile one may claim text/html), in which case the shape decides (an index has `manifests`,
 * an image has `layers`). Parses the whole body: for a fill, never for a hit.
 */
export function sniffManifestType(body: Buffer): string | undefined {
  let doc: unknown;
  try {
    doc = JSON.parse(body.toString("utf8"));
  } catch {
    return undefined;
  }
  if (typeof doc !== "object" || doc === null) return undefined;
  const d = doc as Record<string, unknown>;
  // Every manifest format there is has a schemaVersion; a JSON document without one is not a manifest.
  if (typeof d.schemaVersion !== "number") return undefined;
  if (typeof d.mediaType === "string" && MANIFEST_TYPES.has(d.mediaType)) return d.mediaType;
  if (d.schemaVersion === 1) return DOCKER_MANIFEST_V1_SIGNED;
  if (Array.isArray(d.manifests)) return OCI_INDEX;
  if (Array.isArray(d.layers)) return OCI_MANIFEST;
  return undefined;
}

/** What people call each manifest type, for the status page. */
export const MANIFEST_TYPE_NAMES: Readonly<Record<string, string>> = {
  "application/vnd.oci.image.index.v1+json": "OCI index",
  "application/vnd.oci.image.manifest.v1+json": "OCI manifest",
  "application/vnd.docker.distribution.manifest.list.v2+json": "Docker manifest list",
  "application/vnd.docker.distribution.manifest.v2+json": "Docker manifest",
  "application/vnd.docker.distribution.manifest.v1+prettyjws": "Docker schema 1",
};
