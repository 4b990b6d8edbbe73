import type { Digest } from "../oci/digest.ts";
import { OCI_INDEX } from "../oci/media-types.ts";

// The OCI 1.1 referrers answer, pure: reading an index of referrers (from an upstream's
// referrers API or from a tag of the referrers tag schema), filtering it by artifactType, and
// writing the index we serve. No I/O.

/**
 * An OCI descriptor as a referrers index lists it. Fields we do not know (platform, urls, data)
 * are kept as the upstream sent them: the answer is the upstream's list, not our idea of it.
 */
export interface ReferrerDescriptor {
  mediaType: string;
  digest: string;
  size: number;
  artifactType?: string;
  annotations?: Record<string, string>;
  [field: string]: unknown;
}

/** The referrers tag schema: `<alg>-<hex>` (only sha256 digests reach here, so no truncation applies). */
export function referrersTag(subject: Digest): string {
  return `${subject.algorithm}-${subject.hex}`;
}

/**
 * The descriptors of an OCI index, or undefined when `bytes` is not one (not JSON, no
 * `manifests` array, or another manifest type). Entries that are not descriptors (no string
 * mediaType and digest, no whole size) are dropped rather than served.
 */
export function indexManifests(bytes: Buffer): ReferrerDescriptor[] | undefined {
  let doc: unknown;
  try {
    doc = JSON.parse(bytes.toString("utf8"));
  } catch {
    return undefined;
  }
  if (typeof doc !== "object" || doc === null || Array.isArray(doc)) return undefined;
  const d = doc as Record<string, unknown>;
  if (d.mediaType !== undefined && d.mediaType !== OCI_INDEX) return undefined;
  if (!Array.isArray(d.manifests)) return undefined;
  return d.manifests.filter(isDescriptor);
}

function isDescriptor(x: unknown): x is ReferrerDescriptor {
  if (typeof x !== "object" || x === null || Array.isArray(x)) return false;
  const d = x as Record<string, unknown>;
  return (
    typeof d.mediaType === "string" &&
    typeof d.digest === "string" &&
    typeof d.size === "number" &&
    Number.isSafeInteger(d.size) &&
    d.size >= 0 &&
    (d.artifactType === undefined || typeof d.artifactType === "string")
  );
}

/** Only the descriptors of this artifactType (the spec's `?artifactType=`); all when undefined. */
export function filterByArtifactType(
  manifests: readonly ReferrerDescriptor[],
  artifactType: string | undefined,
): ReferrerDescriptor[] {
  return artifactType === undefined
    ? [...manifests]
    : manifests.filter((m) => m.artifactType === artifactType);
}

/** The body of a referrers answer: an OCI index listing `manifests`. */
export function referrersIndex(manifests: readonly ReferrerDescriptor[]): Buffer {
  return Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: OCI_INDEX, manifests }));
}

/**
 * The `rel="next"` target of a Link header (the spec's pagination of referrers), resolved
 * against the URL of the page that carried it; undefined when there is none.
 */
export function nextPage(link: string | string[] | undefined, base: URL): URL | undefined {
  const values = link === undefined ? [] : Array.isArray(link) ? link : [link];
  for (const value of values) {
    for (const part of value.split(/,(?=\s*<)/)) {
      const m = /^\s*<([^>]*)>\s*;(.*)$/.exec(part);
      if (!m) continue;
      const rels = /(?:^|;)\s*rel\s*=\s*"?([^";]*)"?/i.exec(m[2]!)?.[1]?.split(/\s+/) ?? [];
      if (!rels.includes("next")) continue;
      try {
        return new URL(m[1]!, base);
      } catch {
        return undefined;
      }
    }
  }
  return undefined;
}
