import { EXIT_FAILED, EXIT_OK } from "./errors.ts";
import type { GcResult } from "../maintenance/gc.ts";
import type { Listing, Usage } from "../maintenance/ls.ts";
import { formatBytes, note, out, outJson, plural, shortDigest } from "./output.ts";
import type { PurgeResult } from "../maintenance/purge.ts";
import type { VerifyResult } from "../maintenance/verify.ts";
import type { WarmReport } from "../maintenance/warm.ts";

// How the subcommands show their results, and the exit code each result means (errors.ts). The
// operations themselves return data, so that the admin API can run them too; everything a
// person or a script reads on stdout and stderr is written here.

export function printListing(listing: Listing, json: boolean): number {
  if (json) {
    outJson(listing);
    return EXIT_OK;
  }
  for (const r of listing.repositories) {
    out(`${r.upstream}/${r.name}  ${plural(r.tags.length, "tag")}  ${sizeText(r)}`);
    const width = Math.max(...r.tags.map((t) => t.tag.length));
    for (const t of r.tags) {
      const digests = t.entries.map((e) => shortDigest(e.digest)).join(",") || "(unreadable record)";
      const checked = t.entries[0]?.checkedAt.replace(/\.\d+Z$/, "Z") ?? "";
      out(`  ${t.tag.padEnd(width)}  ${digests}  ${sizeText(t).padEnd(10)}  checked ${checked}`);
    }
  }
  const c = listing.cache;
  out(
    `cache: ${plural(listing.repositories.length, "repository", "repositories")}, ` +
      `${plural(c.blobs, "blob")} ${formatBytes(c.blobBytes)}, ${plural(c.manifests, "manifest")}`,
  );
  return EXIT_OK;
}

export function printPurge(r: PurgeResult, json: boolean): number {
  if (json) {
    outJson({ dryRun: r.dryRun, removed: r.removed, freedBytes: r.freedBytes });
  } else {
    const verb = r.dryRun ? "would remove" : "removed";
    for (const x of r.removed) out(`${verb} ${x.kind} ${x.name} (${formatBytes(x.bytes)})`);
    out(
      `${r.dryRun ? "would free" : "freed"} ${formatBytes(r.freedBytes)} in ${plural(r.removed.length, "file")}`,
    );
  }
  if (r.removed.some((x) => x.kind === "tag") && !r.dryRun) {
    note("the manifests and blobs of removed tags stay until `regmirror gc` finds nothing refers to them");
  }
  if (!r.matched) {
    note(`nothing in the cache matches ${r.target}`);
    return EXIT_FAILED;
  }
  return EXIT_OK;
}

export function printGc(r: GcResult, json: boolean): number {
  if (json) {
    outJson(r);
    return EXIT_OK;
  }
  const verb = r.dryRun ? "would remove" : "removed";
  for (const [kind, s] of [
    ["manifest", r.manifests],
    ["blob", r.blobs],
    ["temp file", r.tmp],
  ] as const) {
    for (const name of s.removed) out(`${verb} ${kind} ${name}`);
  }
  out(
    `${verb} ${plural(r.blobs.removed.length, "blob")} (${formatBytes(r.blobs.bytes)}), ` +
      `${plural(r.manifests.removed.length, "manifest")} (${formatBytes(r.manifests.bytes)}), ` +
      `${plural(r.tmp.removed.length, "temp file")} (${formatBytes(r.tmp.bytes)}); ` +
      `kept ${plural(r.blobs.kept, "blob")}, ${plural(r.manifests.kept, "manifest")}`,
  );
  const h = r.hosted;
  if (h) {
    for (const name of h.unlinked.manifests) out(`${verb} hosted manifest link ${name}`);
    for (const name of h.unlinked.layers) out(`${verb} hosted blob link ${name}`);
    for (const [kind, s] of [
      ["manifest", h.manifests],
      ["blob", h.blobs],
    ] as const)
      for (const name of s.removed) out(`${verb} hosted ${kind} ${name}`);
    out(
      `hosted: ${verb} ${plural(h.blobs.removed.length, "blob")} (${formatBytes(h.blobs.bytes)}), ` +
        `${plural(h.manifests.removed.length, "manifest")} (${formatBytes(h.manifests.bytes)}), ` +
        `${plural(h.unlinked.manifests.length, "untagged manifest link")}, ` +
        `${plural(h.unlinked.layers.length, "blob link")}; ` +
        `kept ${plural(h.blobs.kept, "blob")}, ${plural(h.manifests.kept, "manifest")}`,
    );
  }
  return EXIT_OK;
}

export function printVerify(r: VerifyResult, json: boolean): number {
  if (json) {
    outJson(r);
  } else {
    const verb = r.dryRun ? "found" : "removed";
    for (const c of r.corrupt) out(`corrupt ${c.kind} ${c.digest} (content hashes to ${c.actual}): ${verb}`);
    out(
      `verified ${plural(r.checked, "file")} (${formatBytes(r.checkedBytes)}): ${plural(r.corrupt.length, "corrupt file")}`,
    );
  }
  if (r.corrupt.length > 0) {
    note(`${plural(r.corrupt.length, "corrupt file")} ${r.dryRun ? "found" : "removed"}`);
    return EXIT_FAILED;
  }
  return EXIT_OK;
}

/** The per-image lines were printed by the progress as each finished; here come the failures. */
export function printWarm(r: WarmReport, json: boolean): number {
  for (const i of r.images) if (!i.ok) note(`could not warm ${i.image}: ${i.error}`);
  if (json) outJson({ mirror: r.mirror, images: r.images });
  return r.ok ? EXIT_OK : EXIT_FAILED;
}

function sizeText(u: Usage): string {
  return u.cachedBlobs === u.blobs
    ? formatBytes(u.bytes)
    : `${formatBytes(u.bytes)} (${formatBytes(u.cachedBytes)} cached, ${u.cachedBlobs}/${u.blobs} blobs)`;
}
