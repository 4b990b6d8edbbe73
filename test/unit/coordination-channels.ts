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

/**
 * `batched`: messages sent within one turn arrive together, one after the other in the same
 * turn with no microtask between them — what Node's IPC does with messages that come in one
 * read. A member must not lose a message that arrives right behind the answer it awaits.
 */
export function pipe({ batched = false } = {}): Pipe {
  const toHub = new Set<(msg: unknown) => void>();
  const toWorker = new Set<(msg: unknown) => void>();
  const sent = { toHub: 0, toWorker: 0 };
  let cut = false;
  const queues = new Map<Set<(msg: unknown) => void>, Buffer[]>();
  const end = (
    count: "toHub" | "toWorker",
    peer: Set<(msg: unknown) => void>,
    mine: typeof peer,
  ): Channel => ({
    send(msg) {
      const bytes = serialize(msg);
      sent[count]++;
      if (!batched) {
        setImmediate(() => {
          if (cut) return;
          for (const handler of [...peer]) handler(deserialize(bytes));
        });
        return;
      }
      let queue = queues.get(peer);
      if (queue) return void queue.push(bytes);
      queues.set(peer, (queue = [bytes]));
      setImmediate(() => {
        queues.delete(peer);
        if (cut) return;
        for (const b of queue) for (const handler of [...peer]) handler(deserialize(b));
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
