import { createRequire } from "node:module";

// The optional sendfile(2) addon (native/sendfile.cc, built by `npm install` through node-gyp).
// Without it — no compiler on the machine, another OS — cached blobs go out through the
// JavaScript path in send-file.ts, slower but the same bytes.

export interface SendfileAddon {
  /**
   * Sends `count` bytes of `fileFd` from `offset` to the socket on a thread of its own; calls back
   * once with (errno, sent). Returns undefined, and never calls back, when no thread (or no
   * descriptor) could be had: the caller sends the bytes another way.
   */
  start(
    socketFd: number,
    fileFd: number,
    offset: number,
    count: number,
    timeoutMs: number,
    done: (errno: number, sent: number) => void,
  ): unknown;
  /** Stops a transfer whose callback has not run yet. */
  cancel(handle: unknown): void;
  /**
   * Gives the pages malloc holds free back to the kernel (glibc's malloc_trim). Absent from an
   * addon built before it was added.
   */
  trim?(): boolean;
}

function load(): SendfileAddon | undefined {
  if (process.platform !== "linux") return undefined;
  try {
    // The same relative path from src/storage (tsx) and dist/storage (compiled).
    return createRequire(import.meta.url)("../../build/Release/sendfile.node") as SendfileAddon;
  } catch {
    return undefined;
  }
}

export const sendfileAddon: SendfileAddon | undefined = load();

/**
 * After a burst of fills: their buffers were malloc'd (socket reads, file writes), and glibc
 * keeps freed memory resident unless told otherwise, tens of MB per process after a few 64 MiB
 * fills (docs/workers.md). Without the addon, nothing happens.
 */
export function releaseFreedMemory(): void {
  sendfileAddon?.trim?.();
}
