// Hosted repositories below the HTTP layer: which names are hosted, the prefixed storage, and
// what a manifest push accepts and refuses (src/hosted/).
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, mkdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { HostedNames } from "../../src/hosted/names.ts";
import { HostedStore } from "../../src/hosted/store.ts";
import { Hosted } from "../../src/hosted/service.ts";
import { deleteManifest, pushManifest } from "../../src/hosted/manifest-push.ts";
import { filesystemCache } from "../../src/storage/cache.ts";
import { digestOf, parseDigest } from "../../src/oci/digest.ts";
import { parseReference } from "../../src/oci/reference.ts";
import { RegistryError } from "../../src/oci/errors.ts";
import { seedHostedBlob } from "../fixtures/hosted.ts";
import { contentObjects } from "../../src/storage/cache-walk.ts";

test("hosted names: * is one path component, ** any depth", () => {
  const n = new HostedNames(["local/*", "team/**", "exact"]);
  assert.equal(n.matches("local/app"), true);
  assert.equal(n.matches("local/a/b"), false);
  assert.equal(n.matches("team/a/b/c"), true);
  assert.equal(n.matches("team"), false);
  assert.equal(n.matches("exact"), true);
  assert.equal(n.matches("exactly"), false);
  assert.equal(n.matches("library/alpine"), false);
  assert.equal(new HostedNames([]).any, false);
  // A dot in a glob is a dot, not "any character".
  assert.equal(new HostedNames(["a.b/*"]).matches("axb/c"), false);
});

async function storeIn(t: { after: (fn: () => Promise<void>) => void }) {
  const dir = await mkdtemp(join(tmpdir(), "regmirror-hosted-"));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const cache = filesystemCache(dir);
  await mkdir(cache.paths.tmpDir, { recursive: true });
  return { cache, store: new HostedStore(cache.driver, cache.paths) };
}

const OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json";

function image(
  config: { digest: string; size: number },
  layers: Array<{ digest: string; size: number }>,
  extra = {},
) {
  return Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: OCI_MANIFEST,
      config: { mediaType: "application/vnd.oci.image.config.v1+json", ...config },
      layers: layers.map((l) => ({ mediaType: "application/vnd.oci.image.layer.v1.tar+gzip", ...l })),
      ...extra,
    }),
  );
}

async function refusal(p: Promise<unknown>): Promise<RegistryError> {
  try {
    await p;
  } catch (err) {
    assert.ok(err instanceof RegistryError, String(err));
    return err;
  }
  assert.fail("expected a refusal");
}

test("hosted content lives below hosted/, out of the cache's walks", async (t) => {
  const { cache, store } = await storeIn(t);
  await seedHostedBlob(store, "local/app", Buffer.from("layer"));
  assert.deepEqual(
    await contentObjects(cache.driver, "blob"),
    [],
    "the cache's eviction and gc never see a hosted blob",
  );
  assert.ok(
    await cache.driver.stat(
      `hosted/blobs/sha256/${digestOf(Buffer.from("layer")).slice(7, 9)}/${digestOf(Buffer.from("layer")).slice(7)}`,
    ),
  );
});

test("a manifest push checks every blob it references, in this repository", async (t) => {
  const { store } = await storeIn(t);
  const config = await seedHostedBlob(store, "local/app", Buffer.from("{}"));
  const layer = await seedHostedBlob(store, "local/other", Buffer.from("layer bytes"));
  const bytes = image(config, [layer]);
  const e = await refusal(pushManifest(store, "local/app", parseReference("v1"), bytes, OCI_MANIFEST));
  assert.equal(e.code, "MANIFEST_BLOB_UNKNOWN");
  assert.equal(e.status, 400);
  assert.deepEqual(e.detail, { digest: layer.digest }, "a blob linked in another repository does not count");
  await store.linkBlob("local/app", parseDigest(layer.digest)!, layer.size);
  const pushed = await pushManifest(store, "local/app", parseReference("v1"), bytes, OCI_MANIFEST);
  assert.equal(pushed.digest, digestOf(bytes));
  const hosted = new Hosted(store, new HostedNames(["local/*"]), {
    deleteEnabled: true,
    send: { kernel: false, maxKernelTransfers: 1, stallMs: 1000 },
  });
  const m = await hosted.manifest("local/app", parseReference("v1"));
  assert.deepEqual(m.bytes, bytes);
  assert.equal(m.mediaType, OCI_MANIFEST);
  assert.deepEqual(await hosted.tags("local/app"), ["v1"]);
  assert.deepEqual(await hosted.repositories(), ["local/app"]);
  // Not linked in local/other: a pull by digest there is unknown.
  const other = await refusal(hosted.manifest("local/other", parseReference(pushed.digest)));
  assert.equal(other.code, "MANIFEST_UNKNOWN");
});

test("an index needs its child manifests; a wrong digest, bad JSON, an unknown type and schema 1 are refused", async (t) => {
  const { store } = await storeIn(t);
  const child = "sha256:" + "a".repeat(64);
  const index = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: "application/vnd.oci.image.index.v1+json",
      manifests: [{ mediaType: OCI_MANIFEST, digest: child, size: 10 }],
    }),
  );
  const e = await refusal(pushManifest(store, "local/app", parseReference("v1"), index, undefined));
  assert.equal(e.code, "MANIFEST_UNKNOWN");
  assert.equal(e.status, 400);
  const empty = Buffer.from(
    JSON.stringify({ schemaVersion: 2, mediaType: "application/vnd.oci.image.index.v1+json", manifests: [] }),
  );
  const wrong = await refusal(
    pushManifest(store, "local/app", parseReference("sha256:" + "b".repeat(64)), empty, undefined),
  );
  assert.equal(wrong.code, "DIGEST_INVALID");
  assert.equal(
    (await refusal(pushManifest(store, "local/app", parseReference("v1"), Buffer.from("{"), undefined))).code,
    "MANIFEST_INVALID",
  );
  assert.equal(
    (await refusal(pushManifest(store, "local/app", parseReference("v1"), empty, "text/html"))).code,
    "MANIFEST_INVALID",
  );
  assert.equal(
    (
      await refusal(
        pushManifest(
          store,
          "local/app",
          parseReference("v1"),
          Buffer.from(JSON.stringify({ schemaVersion: 1, name: "x", fsLayers: [] })),
          "application/vnd.docker.distribution.manifest.v1+prettyjws",
        ),
      )
    ).code,
    "MANIFEST_INVALID",
  );
  assert.deepEqual(await store.repositories(), [], "nothing refused was stored");
});

test("a manifest with a subject is indexed as a referrer; deleting it by digest removes it and its tags", async (t) => {
  const { store } = await storeIn(t);
  const config = await seedHostedBlob(store, "local/app", Buffer.from("{}"));
  const subject = "sha256:" + "c".repeat(64);
  const bytes = image(config, [], {
    artifactType: "application/vnd.example.sbom",
    subject: { mediaType: OCI_MANIFEST, digest: subject, size: 100 },
    annotations: { "org.example": "yes" },
  });
  const pushed = await pushManifest(store, "local/app", parseReference("sbom"), bytes, OCI_MANIFEST);
  assert.equal(pushed.subject, subject, "the subject may be pushed after its referrers");
  assert.deepEqual(await store.referrers("local/app", parseDigest(subject)!), [
    {
      mediaType: OCI_MANIFEST,
      digest: pushed.digest,
      size: bytes.length,
      artifactType: "application/vnd.example.sbom",
      annotations: { "org.example": "yes" },
    },
  ]);
  await deleteManifest(store, "local/app", parseReference(pushed.digest));
  assert.deepEqual(await store.referrers("local/app", parseDigest(subject)!), []);
  assert.equal(await store.tag("local/app", "sbom"), undefined);
  assert.equal(await store.manifestIn("local/app", parseDigest(pushed.digest)!), undefined);
  const e = await refusal(deleteManifest(store, "local/app", parseReference("sbom")));
  assert.equal(e.code, "MANIFEST_UNKNOWN");
});
