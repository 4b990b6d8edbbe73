import { test } from "node:test";
import assert from "node:assert/strict";
import { isValidName, isValidTag, parseReference } from "../../src/oci/reference.ts";
import { parseDigest } from "../../src/oci/digest.ts";
import { RegistryError } from "../../src/oci/errors.ts";
import { route } from "../../src/http/route.ts";
import { parseRange } from "../../src/http/range.ts";
import { accepts, parseAccept, sniffManifestType } from "../../src/oci/media-types.ts";

const HEX = "a".repeat(64);

test("names follow the distribution grammar", () => {
  for (const ok of ["alpine", "library/alpine", "a/b/c", "my-org/my_image", "a.b/c__d", "x-----y"])
    assert.ok(isValidName(ok), ok);
  for (const bad of [
    "",
    "Alpine",
    "../etc",
    "a/../b",
    "a//b",
    "/a",
    "a/",
    ".a",
    "a.",
    "_a",
    "a/_tags",
    "a b",
    "a%2fb",
    "x".repeat(256),
  ])
    assert.ok(!isValidName(bad), bad);
});

test("tags follow the grammar", () => {
  for (const ok of ["latest", "1.2.3", "v1_rc-2", "_x", "A".repeat(128)]) assert.ok(isValidTag(ok), ok);
  for (const bad of ["", ".x", "-x", "a/b", "..", "A".repeat(129), "a:b"]) assert.ok(!isValidTag(bad), bad);
});

test("digests: sha256 with 64 lowercase hex only", () => {
  assert.deepEqual(parseDigest(`sha256:${HEX}`), { algorithm: "sha256", hex: HEX });
  for (const bad of [
    `sha256:${HEX}0`,
    `sha256:${HEX.slice(1)}`,
    `sha512:${HEX}`,
    `sha256:${HEX.toUpperCase()}`,
    `sha256:../${HEX}`,
  ])
    assert.equal(parseDigest(bad), undefined, bad);
});

test("references: a digest-looking reference is never taken as a tag", () => {
  assert.equal(parseReference("latest").kind, "tag");
  assert.equal(parseReference(`sha256:${HEX}`).kind, "digest");
  assert.throws(
    () => parseReference("sha256:short"),
    (e: RegistryError) => e.code === "DIGEST_INVALID",
  );
  assert.throws(
    () => parseReference("bad tag"),
    (e: RegistryError) => e.code === "TAG_INVALID",
  );
});

test("routes: multi-segment names, decoding before matching", () => {
  assert.deepEqual(route("/v2/"), { kind: "base" });
  assert.deepEqual(route("/v2"), { kind: "base" });
  assert.deepEqual(route("/v2/a/b/c/manifests/latest"), {
    kind: "manifest",
    name: "a/b/c",
    reference: "latest",
  });
  assert.deepEqual(route(`/v2/x/blobs/sha256:${HEX}`), { kind: "blob", name: "x", digest: `sha256:${HEX}` });
  assert.deepEqual(route("/v2/x/blobs/uploads/"), { kind: "upload", name: "x" });
  assert.deepEqual(route("/v2/x/tags/list"), { kind: "tags", name: "x" });
  assert.deepEqual(route("/v2/..%2f..%2fetc/manifests/latest"), {
    kind: "manifest",
    name: "../../etc",
    reference: "latest",
  });
  assert.throws(
    () => route("/v2/%zz/manifests/x"),
    (e: RegistryError) => e.code === "NAME_INVALID",
  );
  assert.equal(route("/v3/x"), undefined);
});

test("ranges", () => {
  assert.deepEqual(parseRange(undefined, 100), { kind: "full" });
  assert.deepEqual(parseRange("bytes=0-9", 100), { kind: "partial", start: 0, end: 9 });
  assert.deepEqual(parseRange("bytes=90-", 100), { kind: "partial", start: 90, end: 99 });
  assert.deepEqual(parseRange("bytes=90-200", 100), { kind: "partial", start: 90, end: 99 });
  assert.deepEqual(parseRange("bytes=-10", 100), { kind: "partial", start: 90, end: 99 });
  assert.deepEqual(parseRange("bytes=-1000", 100), { kind: "partial", start: 0, end: 99 });
  assert.deepEqual(parseRange("bytes=100-", 100), { kind: "unsatisfiable" });
  assert.deepEqual(parseRange("bytes=5-4", 100), { kind: "unsatisfiable" });
  assert.deepEqual(parseRange("bytes=0-1,5-6", 100), { kind: "full" });
  assert.deepEqual(parseRange("bytes=0-9", undefined), { kind: "full" });
});

test("Accept: several lines, comma lists, parameters", () => {
  const a = parseAccept(["application/vnd.oci.image.index.v1+json", "application/json; q=0.5, */*"]);
  assert.deepEqual(a, ["application/vnd.oci.image.index.v1+json", "application/json", "*/*"]);
  assert.ok(accepts([], "anything"));
  assert.ok(accepts(["*/*"], "x/y"));
  assert.ok(
    !accepts(
      ["application/vnd.docker.distribution.manifest.v2+json"],
      "application/vnd.oci.image.index.v1+json",
    ),
  );
  assert.equal(
    sniffManifestType(Buffer.from('{"schemaVersion":2,"manifests":[]}')),
    "application/vnd.oci.image.index.v1+json",
  );
  assert.equal(sniffManifestType(Buffer.from("not json")), undefined);
});
