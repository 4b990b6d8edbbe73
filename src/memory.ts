import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import { releaseFreedMemory } from "./storage/native.ts";

// Gives memory back once a burst of fills is over (start.ts calls this when fills have stopped).
//
// A fill's chunks live long enough (in its tail for readers, in its write queue) to be moved to
// V8's old generation, and once dead they are only freed by a full collection. V8 starts one for
// ArrayBuffers only when their total has grown by ~64 MB since the last, so after a few 64 MiB
// fills a worker kept ~50 MB of dead chunks for as long as it served from the cache — the peak of
// the warm benchmark's process tree. One full collection, then malloc_trim (the freed backing
// stores are malloc's), returns it. The collection is atomic: it stopped the process for 30–70
// ms on the 2-core benchmark machine, once per burst of fills. Asked as memory pressure (V8
// then starts it incrementally) it paused as long, since it compacts the whole heap.

/** V8's gc(), taken without exposing it to the rest of the program. */
const collect: () => void = (() => {
  setFlagsFromString("--expose-gc");
  try {
    return runInNewContext("gc") as () => void;
  } finally {
    setFlagsFromString("--no-expose-gc");
  }
})();

export function releaseAfterFills(): void {
  collect();
  releaseFreedMemory();
}

/**
 * What BlobService calls when its fills have stopped (`fillsIdle`): releaseAfterFills once they
 * have stayed stopped for `afterMs`. A fill that starts meanwhile puts it off until fills stop
 * again — its first bytes, and the connections Node accepts one a turn, must not wait for the
 * collection. `stop` drops a release still to come (the mirror is closing).
 */
export function releaseWhenIdle(
  idle: () => boolean,
  afterMs: number,
  release: () => void = releaseAfterFills,
): { fillsIdle: () => void; stop: () => void } {
  let timer: NodeJS.Timeout | undefined;
  return {
    fillsIdle: () => {
      clearTimeout(timer);
      timer = setTimeout(() => idle() && release(), afterMs).unref();
    },
    stop: () => clearTimeout(timer),
  };
}
