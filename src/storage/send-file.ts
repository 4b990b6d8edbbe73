import { read, close } from "node:fs";
import type { ServerResponse } from "node:http";
import { finished, type Writable } from "node:stream";
import { sendfileAddon, type SendfileAddon } from "./native.ts";

// Sends bytes to a writable (an HTTP response) and ends it: a range of an open file (sendFile),
// a buffer held in memory (sendBuffer), or chunks as they come (sendStream, a fill in progress).
//
// Every path gives up on a client that takes no bytes for `stallMs` (limits.stallTimeout): its
// response is destroyed and what it held (a file descriptor, buffers, a thread) is let go.
//
// The hot path for cached blobs is written without streams on purpose: createReadStream allocates
// a fresh buffer per read and pipeline() sets up abort signals per response, and both showed in
// the profile (bench/). Here each response owns two buffers that take turns: one is being read
// into while the other waits for its write to reach the socket; a buffer is reused only after its
// write callback. Memory per response is 2 × CHUNK, however slow the client.

const CHUNK = 512 * 1024;

export interface SendOptions {
  /** Use sendfile(2) where the addon is built (cache.sendfile). */
  kernel: boolean;
  /** Most sendfile(2) transfers at once, each on a thread of its own (cache.sendfileThreads). */
  maxKernelTransfers: number;
  /** A client that takes no bytes for this long is cut off (limits.stallTimeout). */
  stallMs: number;
  /**
   * So many transfers of the process at once go through user space before sendfile(2) takes
   * the others. On the benchmark machine a lone 64 MiB stream went at 1.4–1.5 GB/s through the
   * kernel path and 2.2–2.6 GB/s through user space, which also cost less CPU (0.47–0.53 against
   * 0.65–0.70 s a GB). With 64 streams the kernel path cost 0.17–0.20 s a GB against 0.43, at
   * the same rate, and holds no buffers.
   */
  userSpaceFirst?: number;
}

const DEFAULTS: Required<SendOptions> = {
  kernel: true,
  maxKernelTransfers: 64,
  stallMs: 60_000,
  userSpaceFirst: 1,
};

/** sendfile(2) transfers under way in this process: each holds an OS thread. */
let kernelTransfers = 0;
/** Transfers of a file under way in this process through the JavaScript path. */
let userTransfers = 0;

export class StallError extends Error {
  constructor(ms: number) {
    super(`the client took no bytes for ${ms} ms`);
    this.name = "StallError";
  }
}

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
 * Sends bytes [start, end] of `fd`. Takes ownership of `fd`: it is closed when the transfer ends,
 * however it ends. With every sendfile thread taken (or none to be had), the JavaScript path
 * sends the same bytes.
 */
export function sendFile(
  fd: number,
  start: number,
  end: number,
  out: Writable,
  opts: Partial<SendOptions> = {},
): void {
  const o = { ...DEFAULTS, ...opts };
  const sock = o.kernel && sendfileAddon ? socketFd(out) : undefined;
  // One byte is too little for a thread (and the kernel path keeps the last byte back, below).
  if (
    sendfileAddon &&
    sock !== undefined &&
    end > start &&
    kernelTransfers < o.maxKernelTransfers &&
    userTransfers >= o.userSpaceFirst
  )
    return sendWithKernel(sendfileAddon, sock, fd, start, end, out as ServerResponse, o.stallMs);
  sendWithBuffers(fd, start, end, out, o.stallMs);
}

/** Ends `out` with `bytes`; cuts a client that does not take them within `stallMs`. */
export function sendBuffer(bytes: Buffer, out: Writable, stallMs: number): void {
  if (out.destroyed) return;
  out.end(bytes);
  whenFinished(out, stallMs);
}

/**
 * Writes every chunk of `source` to `out` and ends it, waiting for the client between chunks (at
 * most `stallMs` each time). A failing source destroys `out`. A client that left stops the source
 * (its return() is called at its next chunk). `done` runs once, when `out` is over and the source
 * is no longer being read, however it ended.
 */
export function sendStream(
  source: AsyncIterable<Buffer>,
  out: Writable,
  stallMs: number,
  done: () => void,
): void {
  let left = 2; // `out` over, and the loop out of the source
  const half = () => --left === 0 && done();
  finished(out, { readable: false }, half);
  void (async () => {
    try {
      if (out.destroyed) return;
      for await (const chunk of source) {
        if (out.destroyed) return;
        if (!out.write(chunk)) await drained(out, stallMs);
      }
      if (out.destroyed) return;
      out.end();
      whenFinished(out, stallMs);
    } catch (err) {
      out.destroy(err as Error);
    } finally {
      half();
    }
  })();
}

/** Resolves at 'drain'; rejects when `out` closes first or stays full for `stallMs`. */
function drained(out: Writable, stallMs: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const settle = (err?: Error) => {
      clearTimeout(timer);
      out.off("drain", onDrain);
      out.off("close", onClose);
      if (err) reject(err);
      else resolve();
    };
    const onDrain = () => settle();
    const onClose = () => settle(new Error("the client went away"));
    const timer = setTimeout(() => settle(new StallError(stallMs)), stallMs);
    out.on("drain", onDrain);
    out.on("close", onClose);
  });
}

/**
 * After end(): what is still queued must reach the client within `stallMs` of its last write.
 * Nothing queued (the kernel took it all, as it does for most small blobs) holds nothing of
 * ours, so no timer: this runs for every response.
 */
function whenFinished(out: Writable, stallMs: number): void {
  if (out.writableFinished || out.destroyed || out.writableLength === 0) return;
  const timer = setTimeout(() => out.destroy(new StallError(stallMs)), stallMs);
  finished(out, { readable: false }, () => clearTimeout(timer));
}

/**
 * The kernel copies the file into the socket. Node's own queue for the socket must be empty first
 * (the response headers have to be on the wire before the body), and nothing else writes to the
 * socket until the transfer is over: Node keeps a pipelined request's response waiting for this
 * one's end(). The thread gives up by itself on a client that takes nothing for `stallMs`.
 */
function sendWithKernel(
  addon: SendfileAddon,
  sock: number,
  fd: number,
  start: number,
  end: number,
  res: ServerResponse,
  stallMs: number,
): void {
  kernelTransfers++;
  let slot = true;
  const freeSlot = () => {
    if (slot) kernelTransfers--;
    slot = false;
  };
  let handle: unknown;
  let done = false;
  const finish = (err?: Error, last?: Buffer) => {
    freeSlot();
    if (done) return;
    done = true;
    close(fd, () => undefined);
    if (res.destroyed) return;
    if (err) return void res.destroy(err);
    res.end(last);
    whenFinished(res, stallMs);
  };
  // The kernel sends all but the last byte, which goes with end(): a client can only have its
  // whole body once the response is finished in Node's eyes too. Otherwise a keep-alive client
  // is done (and idle) while the server still counts the response as running, and a graceful
  // shutdown waits out its whole timeout for it.
  const sendLast = () => {
    const last = Buffer.allocUnsafe(1);
    read(fd, last, 0, 1, end, (err, got) => {
      finish(err ?? (got === 1 ? undefined : new Error("cached blob shorter than its size")), last);
    });
  };
  // The client hung up (or the server is closing): stop the kernel's copy, or never start it.
  // finished(), not once("close"): it also calls back for a response that closed already.
  finished(res, () => {
    if (handle !== undefined) addon.cancel(handle);
    else finish();
  });
  const go = () => {
    if (done || res.destroyed) return finish();
    const started = addon.start(sock, fd, start, end - start, stallMs, (errno) => {
      handle = undefined;
      if (errno === 0) sendLast();
      else finish(new Error(`sendfile failed: errno ${errno}`));
    });
    if (started !== undefined) {
      handle = started;
      return;
    }
    // No thread to be had (a pids limit) or no descriptor to spare: the JavaScript path takes
    // the transfer, and the descriptor with it.
    freeSlot();
    done = true;
    sendWithBuffers(fd, start, end, res, stallMs);
  };
  res.flushHeaders();
  // The headers usually go out at once. When the socket's kernel buffer is full (a keep-alive
  // client still reading the previous blob) they wait in Node's queue, and no 'drain' comes for
  // so small a write: look again shortly until the queue is empty, or the client has stalled.
  const socket = res.socket!;
  const since = performance.now();
  const whenFlushed = () => {
    if (res.destroyed || socket.writableLength === 0) go();
    else if (performance.now() - since >= stallMs) finish(new StallError(stallMs));
    else setTimeout(whenFlushed, 2);
  };
  whenFlushed();
}

/**
 * Whole CHUNK buffers of finished transfers, for the next ones: a lone stream goes this way
 * (sendFile), and at 2 GB/s fresh buffers were 32 a second of garbage, which V8 frees only
 * after tens of megabytes. A buffer comes back only once nothing can still be writing it.
 */
const spare: Buffer[] = [];
const MAX_SPARE = 4;

function chunkBuffer(size: number): Buffer {
  return size === CHUNK ? (spare.pop() ?? Buffer.allocUnsafeSlow(CHUNK)) : Buffer.allocUnsafeSlow(size);
}

function giveBack(bufs: Buffer[]): void {
  for (const b of bufs) if (b.length === CHUNK && spare.length < MAX_SPARE) spare.push(b);
}

function sendWithBuffers(fd: number, start: number, end: number, out: Writable, stallMs: number): void {
  let pos = start;
  const stop = end + 1;
  const free: Buffer[] = [chunkBuffer(Math.min(CHUNK, stop - start))];
  if (stop - start > CHUNK) free.push(chunkBuffer(CHUNK));
  // The buffer of the last chunk, handed to end(): free again once the response has finished.
  let last: Buffer | undefined;
  let reading = false;
  let done = false;
  userTransfers++;
  // Refreshed by every write that reaches the socket (and every read): it fires only when the
  // client has taken nothing for stallMs, with both buffers still waiting for it.
  const stall = setTimeout(() => finish(new StallError(stallMs)), stallMs);

  const finish = (err?: Error) => {
    if (done) return;
    done = true;
    clearTimeout(stall);
    close(fd, () => undefined);
    if (err) out.destroy(err);
  };
  // Ended, or the client hung up (even before we started): stop reading. A destroyed response
  // calls neither end()'s callback nor 'close' again, so only finished() sees every outcome.
  finished(out, { readable: false }, (err) => {
    userTransfers--;
    finish();
    // `free` holds only buffers whose write has called back (a read in flight took its own out
    // of `free`, and drops it when it sees `done`). The last one is free only if the response
    // finished: cut short, the socket may not be done with it.
    giveBack(free.splice(0));
    if (!err && out.writableFinished && last) giveBack([last]);
  });
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
      stall.refresh();
      const chunk = got === buf.length ? buf : buf.subarray(0, got);
      if (pos >= stop) {
        // finished() above closes the file once the last bytes are out; the stall timer runs on.
        last = buf;
        out.end(chunk);
        return;
      }
      out.write(chunk, (werr) => {
        if (werr) return finish(werr);
        stall.refresh();
        free.push(buf);
        next();
      });
      next();
    });
  };
  next();
}
