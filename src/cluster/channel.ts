import type { Worker } from "node:cluster";
import type { Config } from "../config/schema.ts";
import type { Channel } from "../coordination/protocol.ts";

// The coordination hub's pipes over cluster IPC: to one worker from the primary, and to the
// primary from a worker. Other traffic on the same pipe (metrics, lifecycle) is told apart by
// the hub's own message tag.

export function ipcChannel(worker: Worker): Channel {
  return {
    send: (msg) => {
      if (worker.isConnected()) worker.send(msg);
    },
    onMessage: (handler) => {
      worker.on("message", handler);
      return () => void worker.off("message", handler);
    },
  };
}

export function primaryChannel(): Channel {
  return {
    send: (msg) => {
      if (process.connected) process.send!(msg);
    },
    onMessage: (handler) => {
      process.on("message", handler);
      return () => void process.off("message", handler);
    },
  };
}

/**
 * What the primary hands each worker at start: the configuration it validated (so a worker never
 * loads the validator), how many workers there are, and secrets that must be the same in every
 * worker. Plain data: it crosses the IPC pipe as a structured clone.
 */
export interface Hello {
  config: Config;
  workers: number;
  tokenKey: Buffer;
}

/** In a worker: asks the primary for the Hello (asked, not pushed: a message sent before the worker listens would be lost). */
export function workerHello(): Promise<Hello> {
  return new Promise((resolve) => {
    const onMessage = (m: unknown) => {
      const hello = (m as { regmirrorHello?: Hello } | null)?.regmirrorHello;
      if (!hello) return;
      process.off("message", onMessage);
      resolve(hello);
    };
    process.on("message", onMessage);
    process.send!({ regmirrorWorker: "hello" });
  });
}

/** In the primary: answers a worker's hello. */
export function answerHello(worker: Worker, hello: Hello): void {
  worker.on("message", (m: unknown) => {
    if ((m as { regmirrorWorker?: string } | null)?.regmirrorWorker === "hello")
      worker.send({ regmirrorHello: hello });
  });
}
