import type { Worker } from "node:cluster";
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

/** What the primary hands each worker at start: secrets that must be the same in every worker. */
export interface Hello {
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
