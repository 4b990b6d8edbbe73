import { read, close } from "node:fs";
import type { ServerResponse } from "node:http";
import { finished, type Writable } from "node:stream";
import { sendfileAddon, type SendfileAddon } from "./native.ts";

// Sends bytes [start, end] of an open file to a writable (an HTTP response) and ends it.
//
// The hot path for cached blobs, written without streams on purpose: createReadStream allocates
// a fresh buffer per read and pipeline() sets up abort signals per response, and both showed in
// the profile (bench/). Here each response owns two buffers that take turns: one is being read
// into while the other waits for its write to reach the socket; a buffer is reused only after its
// write callback. Memory per response is 2 × CHUNK, however slow the client.

const CHUNK = 512 * 1024;

/** A client that takes no bytes for this long is given up on. */
const STALL_MS = 60_000;

/**
 * An HTTP response on a plain TCP socket, whose file descriptor sendfile(2) can write to. TLS
 * sockets encrypt in user space, so they always take the JavaScript path.
 */
function socketFd(out: Writable): number | undefined {
  const socket = (out as { socket?: { encrypted?: boolean; _handle?: { fd?: number } } | null }).socket;
  const fd = socket?._handle?.fd;
  return socket && !socket.encrypted && typeof fd === "number" && fd >= 0 ? fd : undefined;
}

/**
 * Takes ownership of `fd`: it is closed when the transfer ends, however it ends. `kernel: false`
 * (cache.sendfile) keeps to the JavaScript path even where the addon is there.
 */
export function sendFile(fd: number, start: number, end: number, out: Writable, kernel = true): void {
  const sock = kernel && sendfileAddon ? socketFd(out) : undefined;
  if (sendfileAddon && sock !== undefined)
    return sendWithKernel(sendfileAddon, sock, fd, start, end, out as ServerResponse);
  sendWithBuffers(fd, start, end, out);
}

/**
 * The kernel copies the file into the socket. Node's own queue for the socket must be empty first
 * (the response headers have to be on the wire before the body), and nothing else writes to the
 * socket until the transfer is over: Node keeps a pipelined request's response waiting for this
 * one's end().
 */
function sendWithKernel(
  addon: SendfileAddon,
  sock: number,
  fd: number,
  start: number,
  end: number,
  res: ServerResponse,
): void {
  let handle: unknown;
  let done = false;
  const finish = (err?: Error) => {
    if (done) return;
    done = true;
    close(fd, () => undefined);
    if (res.destroyed) return;
    if (err) res.destroy(err);
    else res.end();
  };
  // The client hung up (or the server is closing): stop the kernel's copy, or never start it.
  // finished(), not once("close"): it also calls back for a response that closed already.
  finished(res, () => {
    if (handle !== undefined) addon.cancel(handle);
    else finish();
  });
  const go = () => {
    if (done || res.destroyed) return finish();
    handle = addon.start(sock, fd, start, end - start + 1, STALL_MS, (errno) => {
      handle = undefined;
      finish(errno === 0 ? undefined : new Error(`sendfile failed: errno ${errno}`));
    });
  };
  res.flushHeaders();
  // The headers usually go out at once. When the socket's kernel buffer is full (a keep-alive
  // client still reading the previous blob) they wait in Node's queue, and no 'drain' comes for
  // so small a write: look again shortly until the queue is empty.
  const socket = res.socket!;
  const whenFlushed = () => {
    if (res.destroyed || socket.writableLength === 0) go();
    else setTimeout(whenFlushed, 2);
  };
  whenFlushed();
}

function sendWithBuffers(fd: number, start: number, end: number, out: Writable): void {
  let pos = start;
  const stop = end + 1;
  const free: Buffer[] = [Buffer.allocUnsafeSlow(Math.min(CHUNK, stop - start))];
  if (stop - start > CHUNK) free.push(Buffer.allocUnsafeSlow(CHUNK));
  let reading = false;
  let done = false;

  const finish = (err?: Error) => {
    if (done) return;
    done = true;
    close(fd, () => undefined);
    if (err) out.destroy(err);
  };
  // Ended, or the client hung up (even before we started): stop reading. A destroyed response
  // calls neither end()'s callback nor 'close' again, so only finished() sees every outcome.
  finished(out, { readable: false }, () => finish());
  if (out.destroyed) return finish();

  const next = (): void => {
    if (done || reading || pos >= stop) return;
    const buf = free.pop();
    if (!buf) return; // both buffers are on their way to the socket
    reading = true;
    const at = pos;
    const want = Math.min(buf.length, stop - at);
    pos += want;
    read(fd, buf, 0, want, at, (err, got) => {
      reading = false;
      if (done) return;
      if (err || got !== want) return finish(err ?? new Error("cached blob shorter than its size"));
      const chunk = got === buf.length ? buf : buf.subarray(0, got);
      if (pos >= stop) {
        out.end(chunk);
        return;
      }
      out.write(chunk, (werr) => {
        if (werr) return finish(werr);
        free.push(buf);
        next();
      });
      next();
    });
  };
  next();
}
