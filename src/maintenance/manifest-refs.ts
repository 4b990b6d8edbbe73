import { parseDigest } from "../oci/digest.ts";
import type { Platform } from "./image-ref.ts";

// What a manifest refers to, pure: the blobs of an image (config, layers; an artifact's blobs; a
// schema 1 manifest's fsLayers) and the child manifests of an index or manifest list. warm pulls
// these, ls sizes them, gc keeps them. A descriptor whose digest is not a sha256 digest is
// skipped: the cache can never hold it.

export interface Descriptor {
  digest: string;
  /** Declared size; 0 when the manifest does not say (schema 1). */
  size: number;
  mediaType?: string;
  platform?: Platform;
  /** A non-distributable ("foreign") layer: registries do not serve it, clients fetch it elsewhere. */
  foreign: boolean;
}

export interface ManifestRefs {
  kind: "index" | "image" | "unknown";
  blobs: Descriptor[];
  children: Descriptor[];
}

const UNKNOWN: ManifestRefs = { kind: "unknown", blobs: [], children: [] };

export function manifestRefs(bytes: Buffer): ManifestRefs {
  let doc: unknown;
  try {
    doc = JSON.parse(bytes.toString("utf8"));
  } catch {
    return UNKNOWN;
  }
  if (!isObject(doc)) return UNKNOWN;
  if (Array.isArray(doc.manifests)) {
    return { kind: "index", blobs: [], children: descriptors(doc.manifests) };
  }
  const blobs = [
    ...descriptors([doc.config]),
    ...descriptors(doc.layers),
    ...descriptors(doc.blobs),
    ...descriptors(
      Array.isArray(doc.fsLayers)
        ? doc.fsLayers.map((l) => (isObject(l) ? { digest: l.blobSum } : undefined))
        : [],
    ),
  ];
  const isImage = isObject(doc.config) || Array.isArray(doc.layers) || Array.isArray(doc.fsLayers);
  return { kind: isImage || blobs.length > 0 ? "image" : "unknown", blobs: unique(blobs), children: [] };
}

function descriptors(list: unknown): Descriptor[] {
  if (!Array.isArray(list)) return [];
  const out: Descriptor[] = [];
  for (const d of list) {
    if (!isObject(d) || typeof d.digest !== "string" || !parseDigest(d.digest)) continue;
    const mediaType = typeof d.mediaType === "string" ? d.mediaType : undefined;
    const desc: Descriptor = {
      digest: d.digest,
      size: typeof d.size === "number" && Number.isSafeInteger(d.size) && d.size >= 0 ? d.size : 0,
      foreign: mediaType !== undefined && /nondistributable|foreign/.test(mediaType),
    };
    if (mediaType !== undefined) desc.mediaType = mediaType;
    const platform = toPlatform(d.platform);
    if (platform !== undefined) desc.platform = platform;
    out.push(desc);
  }
  return out;
}

function toPlatform(p: unknown): Platform | undefined {
  if (!isObject(p) || typeof p.os !== "string" || typeof p.architecture !== "string") return undefined;
  return typeof p.variant === "string"
    ? { os: p.os, architecture: p.architecture, variant: p.variant }
    : { os: p.os, architecture: p.architecture };
}

/** A layer can appear twice in one image (the same tar added twice); it is one blob. */
function unique(ds: Descriptor[]): Descriptor[] {
  const seen = new Set<string>();
  return ds.filter((d) => !seen.has(d.digest) && seen.add(d.digest));
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}
