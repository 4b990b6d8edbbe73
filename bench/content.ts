// The upstream and what it holds: Debian's docker-registry on loopback (the test fixture, which
// also counts its requests from the access log), loaded over the v2 API with synthetic images:
// library/big:1 (4 layers of 64 MiB of random bytes) and library/small:1 (50 layers of 64 KiB).
import { MEDIA, pushLargeBlobImage, type PushedImage } from "../test/fixtures/images.ts";
import { startUpstream, type Upstream } from "../test/fixtures/upstream.ts";

export const MiB = 1024 * 1024;
export const KiB = 1024;

/** The Accept header a Docker client sends for a single-platform image. */
export const MANIFEST_ACCEPT = `Accept: ${MEDIA.dockerManifest}`;

export interface BenchImage {
  repo: string;
  tag: string;
  manifestDigest: string;
  /** /v2/<repo>/blobs/<digest> of every layer. */
  layerPaths: string[];
  /** Layers and the config: every blob a pull fetches. */
  blobPaths: string[];
  /** Bytes of all blobs in blobPaths. */
  blobBytes: number;
  tagPath: string;
  digestPath: string;
}

export interface Content {
  big: BenchImage;
  small: BenchImage;
}

function describe(repo: string, tag: string, img: PushedImage): BenchImage {
  const blob = (digest: string) => `/v2/${repo}/blobs/${digest}`;
  const layerPaths = img.layers.map((l) => blob(l.digest));
  return {
    repo,
    tag,
    manifestDigest: img.manifestDigest,
    layerPaths,
    blobPaths: [...layerPaths, blob(img.config.digest)],
    blobBytes: img.layers.reduce((s, l) => s + l.size, 0) + img.config.size,
    tagPath: `/v2/${repo}/manifests/${tag}`,
    digestPath: `/v2/${repo}/manifests/${img.manifestDigest}`,
  };
}

export async function startLoadedUpstream(): Promise<{ upstream: Upstream; content: Content }> {
  const upstream = await startUpstream({ auth: "none" });
  try {
    const big = await pushLargeBlobImage(upstream, "library/big", "1", {
      layerSizes: Array.from({ length: 4 }, () => 64 * MiB),
    });
    const small = await pushLargeBlobImage(upstream, "library/small", "1", {
      layerSizes: Array.from({ length: 50 }, () => 64 * KiB),
    });
    return {
      upstream,
      content: { big: describe("library/big", "1", big), small: describe("library/small", "1", small) },
    };
  } catch (err) {
    await upstream.stop();
    throw err;
  }
}
