import { read, close } from "node:fs";
import type { Writable } from "node:stream";

// Sends bytes [start, end] of an open file to a writable (an HTTP response) and ends it.
//
// The hot path for cached blobs, written without streams on purpose: createReadStream allocates
// a fresh buffer per read and pipeline() sets up abort signals per response, and both showed in
// the profile (bench/). Here each response owns two buffers that take turns: one is being read
// into while the other waits for its write to reach the socket; a buffer is reused only after its
// write callback. Memory per response is 2 × CHUNK, however slow the client.

const CHUNK = 512 * 1024;

/** Takes ownership of `fd`: it is closed when the transfer ends, however it ends. */
export function sendFile(fd: number, start: number, end: number, out: Writable): void {
  let pos = start;
  const stop = end + 1;
  const free: Buffer[] = [Buffer.allocUnsafeSlow(Math.min(CHUNK, stop - start))];
  if (stop - start > CHUNK) free.push(Buffer.allocUnsafeSlow(CHUNK));
  let reading = false;
  let finished = false;

  const finish = (err?: Error) => {
    if (finished) return;
    finished = true;
    close(fd, () => undefined);
    if (err) out.destroy(err);
  };
  // The client hung up: stop reading. (After a normal end, 'close' comes too; finish is idempotent.)
  out.once("close", () => finish());

  const next = (): void => {
    if (finished || reading || pos >= stop) return;
    const buf = free.pop();
    if (!buf) return; // both buffers are on their way to the socket
    reading = true;
    const at = pos;
    const want = Math.min(buf.length, stop - at);
    pos += want;
    read(fd, buf, 0, want, at, (err, got) => {
      reading = false;
      if (finished) return;
      if (err || got !== want) return finish(err ?? new Error("cached blob shorter than its size"));
      const chunk = got === buf.length ? buf : buf.subarray(0, got);
      if (pos >= stop) {
        out.end(chunk, () => finish());
        return;
      }
      out.write(chunk, () => {
        free.push(buf);
        next();
      });
      next();
    });
  };
  next();
}
