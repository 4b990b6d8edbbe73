// Tag freshness, pure: which cached answer (if any) a client gets for a tag, given its Accept.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { acceptKey, decideTag } from "../../src/mirror/policy.ts";
import type { TagEntry, TagRecord } from "../../src/storage/manifest-store.ts";

const LIST = "application/vnd.docker.distribution.manifest.list.v2+json";
const V2 = "application/vnd.docker.distribution.manifest.v2+json";
const OCI_INDEX = "application/vnd.oci.image.index.v1+json";
const OCI = "application/vnd.oci.image.manifest.v1+json";
const USUAL = [OCI_INDEX, OCI, LIST, V2];
const NARROW = [V2];
const digest = (c: string) => `sha256:${c.repeat(64)}`;
const T = 1_000_000;
const TTL = 60_000;
const STALE = 3_600_000;

const entry = (accept: string[] | undefined, d: string, mediaType: string, checkedAt = T): TagEntry => ({
  ...(accept ? { accept: acceptKey(accept) } : {}),
  digest: digest(d),
  mediaType,
  checkedAt,
});

describe("decideTag", () => {
  it("a narrower Accept never shadows a wider one (manifest list, then amd64 only)", () => {
    // The record after: usual Accept → the list; then Accept v2 only → the amd64 manifest,
    // written last (newest first, as putTag does).
    const rec: TagRecord = { entries: [entry(NARROW, "b", V2, T + 10), entry(USUAL, "a", LIST)] };
    const usual = decideTag(rec, USUAL, T + 20, TTL, STALE);
    assert.equal(usual.action, "serve");
    assert.equal(usual.action === "serve" && usual.entry.digest, digest("a"));
    const narrow = decideTag(rec, NARROW, T + 20, TTL, STALE);
    assert.equal(narrow.action === "serve" && narrow.entry.digest, digest("b"));
  });

  it("an answer the upstream picked for a narrow Accept is never another Accept's answer", () => {
    const rec: TagRecord = { entries: [entry(NARROW, "b", V2)] };
    // This client takes v2 manifests, but the upstream may answer it with a list: ask (HEAD).
    assert.deepEqual(decideTag(rec, [V2, LIST], T, TTL, STALE), { action: "probe" });
    assert.deepEqual(decideTag(rec, USUAL, T, TTL, STALE), { action: "probe" });
    assert.deepEqual(decideTag(undefined, USUAL, T, TTL, STALE), { action: "fetch" });
  });

  it("the tag's native manifest answers every client that takes its type", () => {
    // A list is never made up by a registry: whoever takes lists gets it.
    const list: TagRecord = { entries: [entry(USUAL, "a", LIST)] };
    const docker = decideTag(list, [LIST, V2], T + 1, TTL, STALE);
    assert.equal(docker.action === "serve" && docker.entry.digest, digest("a"));
    // A single manifest given to a client that also took every list type is the tag's own.
    const single: TagRecord = { entries: [entry(USUAL, "c", V2)] };
    const narrow = decideTag(single, NARROW, T + 1, TTL, STALE);
    assert.equal(narrow.action === "serve" && narrow.entry.digest, digest("c"));
    assert.deepEqual(decideTag(single, [OCI], T + 1, TTL, STALE), { action: "probe" });
    // Shared entries expire like their own: revalidated, with a stale fallback.
    assert.equal(decideTag(single, NARROW, T + TTL, TTL, STALE).action, "revalidate");
  });

  it("the same set of types in another order or repeated is the same question", () => {
    const rec: TagRecord = { entries: [entry(USUAL, "a", LIST)] };
    const d = decideTag(rec, [V2, LIST, OCI, OCI_INDEX, V2], T + 1, TTL, STALE);
    assert.equal(d.action, "serve");
    // Types that are not manifest types change no registry's answer, and make no new key.
    assert.equal(decideTag(rec, [...USUAL, "application/json", "x/y"], T + 1, TTL, STALE).action, "serve");
    assert.equal(acceptKey(["text/html", "x/y"]), "");
    // A wildcard is not the list it stands for: registries match Accept literally.
    assert.equal(decideTag(rec, ["application/*"], T + 1, TTL, STALE).action, "probe");
  });

  it("revalidates after the TTL, and may serve stale until TTL + maxStale", () => {
    const rec: TagRecord = { entries: [entry(USUAL, "a", LIST)] };
    assert.equal(decideTag(rec, USUAL, T + TTL - 1, TTL, STALE).action, "serve");
    assert.deepEqual(decideTag(rec, USUAL, T + TTL, TTL, STALE), {
      action: "revalidate",
      entry: rec.entries[0],
      staleUntil: T + TTL + STALE,
    });
  });

  it("an entry from before accept keys is only revalidated, never served as it is", () => {
    const rec: TagRecord = { entries: [entry(undefined, "b", V2), entry(undefined, "a", LIST)] };
    const d = decideTag(rec, USUAL, T + 1, TTL, STALE);
    assert.equal(d.action, "revalidate");
    // A legacy entry of a type this client cannot take is no candidate to serve stale.
    assert.deepEqual(decideTag({ entries: [entry(undefined, "a", LIST)] }, NARROW, T + 1, TTL, STALE), {
      action: "probe",
    });
  });
});
