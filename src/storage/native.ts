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
