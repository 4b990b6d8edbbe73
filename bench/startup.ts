// Start-up time with a large cache: a mirror that has run for months holds ~100,000 blobs, and a
// restart must not keep its clients waiting while it looks at them. The cache is laid out as
// regmirror's storage/paths.ts draws it (blobs/sha256/<hex[0:2]>/<hex>); the files are small,
// because what costs at start is the number of entries, not their size.
import { randomBytes } from "node:crypto";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { makeTempDir, removeTempDir } from "./cleanup.ts";
import type { Values } from "./figures-cold.ts";
import { startTarget, type LaunchOptions } from "./targets.ts";

/** Creates `count` blob files with random digests under `dir`; returns the time it took in ms. */
export function fillCache(dir: string, count: number): number {
  const t0 = performance.now();
  const blobs = join(dir, "blobs", "sha256");
  for (let i = 0; i < 256; i++) mkdirSync(join(blobs, i.toString(16).padStart(2, "0")), { recursive: true });
  for (let i = 0; i < count; i++) {
    const hex = randomBytes(32).toString("hex");
    // Sync writes: this is set-up, and 100,000 small files take a few seconds either way.
    writeFileSync(join(blobs, hex.slice(0, 2), hex), `blob ${i}\n`);
  }
  return performance.now() - t0;
}

export interface StartupCache {
  dir: string;
  blobs: number;
  fillMs: number;
  remove(): Promise<void>;
}

export async function makeStartupCache(blobs: number): Promise<StartupCache> {
  const dir = await makeTempDir("startup");
  const fillMs = fillCache(dir, blobs);
  return { dir, blobs, fillMs, remove: () => removeTempDir(dir) };
}

/** Milliseconds from spawning regmirror on `cacheDir` until GET /v2/ answers 200 (0: empty cache). */
export async function startupTime(launch: LaunchOptions, cacheDir: string | undefined): Promise<Values> {
  const opts: LaunchOptions = { ...launch, readyTimeoutMs: 120_000 };
  if (cacheDir !== undefined) opts.cacheDir = cacheDir;
  const target = await startTarget({ name: "regmirror", kind: "regmirror" }, opts);
  const startMs = target.startMs;
  await target.stop();
  return { start_ms: startMs };
}
