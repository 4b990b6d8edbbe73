// In-memory pipes between a CoordinationHub and its members, behaving as cluster IPC with
// `serialization: "advanced"`: delivery is asynchronous (setImmediate) and keeps order, and
// every message arrives as a copy made by v8's structured serializer, so a value that would
// not survive a real pipe fails here too.
import { deserialize, serialize } from "node:v8";
import type { Channel } from "../../src/coordination/protocol.ts";

export interface Pipe {
  /** The hub's end. */
  hub: Channel;
  /** The worker's end. */
  worker: Channel;
  /** Messages sent each way so far. */
  sent: { toHub: number; toWorker: number };
  /** Stops delivery both ways (the worker died). */
  cut(): void;
}

export function pipe(): Pipe {
  const toHub = new Set<(msg: unknown) => void>();
  const toWorker = new Set<(msg: unknown) => void>();
  const sent = { toHub: 0, toWorker: 0 };
  let cut = false;
  const end = (
    count: "toHub" | "toWorker",
    peer: Set<(msg: unknown) => void>,
    mine: typeof peer,
  ): Channel => ({
    send(msg) {
      const bytes = serialize(msg);
      sent[count]++;
      setImmediate(() => {
        if (cut) return;
        for (const handler of [...peer]) handler(deserialize(bytes));
      });
    },
    onMessage(handler) {
      const own = (msg: unknown) => handler(msg);
      mine.add(own);
      return () => void mine.delete(own);
    },
  });
  return {
    hub: end("toWorker", toWorker, toHub),
    worker: end("toHub", toHub, toWorker),
    sent,
    cut: () => void (cut = true),
  };
}
