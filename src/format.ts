// Human-readable figures, for the command line and the status page alike.

/** Binary units, as `du -h` and registries' UIs show them: 1536 → "1.5 KiB". */
export function formatBytes(n: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let v = n;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return i === 0 ? `${n} B` : `${v.toFixed(1)} ${units[i]}`;
}

/** "3 blobs", "1 blob". */
export function plural(n: number, word: string, many = `${word}s`): string {
  return `${n} ${n === 1 ? word : many}`;
}

/** The first 12 hex characters of a digest, as docker shows image ids. */
export function shortDigest(digest: string): string {
  return digest.replace(/^sha256:/, "").slice(0, 12);
}

/** A count with thousands separators: 12,345. */
export function formatCount(n: number): string {
  return n.toLocaleString("en-US");
}
