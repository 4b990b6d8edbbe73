import { createRequire } from "node:module";
import { availableParallelism } from "node:os";
import { Worker } from "node:worker_threads";
import { RegistryError } from "../oci/errors.ts";

// bcrypt checks on worker threads. A check costs tens of milliseconds of CPU by design; done
// on the main thread (compareSync) every failed login stalls every other request for that
// long. bcryptjs's async compare only slices the same work into chunks between other events:
// it still burns the main thread's CPU, so a burst of bad logins still slows every pull. A
// worker takes the CPU off the event loop entirely; the pool is small (one thread per spare
// core, at most two) because bcrypt is pure CPU, and its queue is bounded so a flood of logins
// from many addresses gets 429s instead of a growing backlog.

export interface PasswordChecker {
  /** Whether `password` matches the bcrypt `hash`. A malformed hash is simply no match. */
  compare(password: string, hash: string): Promise<boolean>;
}

// Plain JavaScript, run with `eval`: the same text works under tsx and from dist/, and needs
// no loader. bcryptjs is loaded from the path the main thread resolved.
const WORKER_SOURCE = `
const { parentPort, workerData } = require("node:worker_threads");
const bcrypt = require(workerData.bcrypt);
parentPort.on("message", ({ password, hash }) => {
  let ok = false;
  try { ok = bcrypt.compareSync(password, hash); } catch { ok = false; }
  parentPort.postMessage(ok);
});
`;

interface Job {
  password: string;
  hash: string;
  resolve(ok: boolean): void;
  reject(err: unknown): void;
}

export class BcryptPool implements PasswordChecker {
  private readonly idle: Worker[] = [];
  private readonly busy = new Map<Worker, Job>();
  private readonly queue: Job[] = [];
  private readonly bcryptPath = createRequire(import.meta.url).resolve("bcryptjs");

  constructor(
    private readonly size = Math.max(1, Math.min(2, availableParallelism() - 1)),
    private readonly maxQueued = 200,
  ) {}

  compare(password: string, hash: string): Promise<boolean> {
    if (this.queue.length >= this.maxQueued) {
      return Promise.reject(
        new RegistryError("TOOMANYREQUESTS", "too many logins being checked; try again shortly", {
          headers: { "retry-after": "1" },
        }),
      );
    }
    return new Promise((resolve, reject) => {
      this.queue.push({ password, hash, resolve, reject });
      this.next();
    });
  }

  /** Stops the threads; checks still queued fail. */
  async close(): Promise<void> {
    for (const job of this.queue.splice(0)) job.reject(new Error("password checks stopped"));
    const all = [...this.idle.splice(0), ...this.busy.keys()];
    await Promise.all(all.map((w) => w.terminate()));
  }

  private next(): void {
    if (this.queue.length === 0) return;
    let worker = this.idle.pop();
    if (!worker) {
      if (this.busy.size >= this.size) return;
      worker = this.spawn();
    }
    const job = this.queue.shift()!;
    this.busy.set(worker, job);
    // A thread at work keeps the process alive until it answers; an idle one does not.
    worker.ref();
    worker.postMessage({ password: job.password, hash: job.hash });
  }

  private spawn(): Worker {
    const worker = new Worker(WORKER_SOURCE, {
      eval: true,
      workerData: { bcrypt: this.bcryptPath },
      // Not the parent's --import tsx and the like: the worker is plain JavaScript.
      execArgv: [],
    });
    worker.on("message", (ok: unknown) => {
      const job = this.busy.get(worker);
      this.busy.delete(worker);
      this.idle.push(worker);
      worker.unref();
      job?.resolve(ok === true);
      this.next();
    });
    const lost = (err: unknown) => {
      const job = this.busy.get(worker);
      this.busy.delete(worker);
      const i = this.idle.indexOf(worker);
      if (i !== -1) this.idle.splice(i, 1);
      job?.reject(err);
      this.next();
    };
    worker.on("error", lost);
    worker.on("exit", (code) => lost(new Error(`password check thread exited (${code})`)));
    return worker;
  }
}
