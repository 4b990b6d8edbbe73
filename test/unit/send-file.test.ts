// Both ways a cached blob leaves: sendfile(2) on a plain socket, two reused buffers elsewhere;
// and the limits every send path keeps (threads, stalled readers).
import { test } from "node:test";
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { createServer, type ServerResponse } from "node:http";
import { mkdtemp, readFile, rm, writeFile, readdir } from "node:fs/promises";
import { openSync, writeFileSync } from "node:fs";
import { execFileSync, spawnSync } from "node:child_process";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PassThrough } from "node:stream";
import { connect } from "node:net";
import { Agent, request } from "undici";
import { sendFile, sendStream } from "../../src/storage/send-file.ts";
import { sendfileAddon } from "../../src/storage/native.ts";

const sha = (b: Buffer) => createHash("sha256").update(b).digest("hex");

async function withFile<T>(bytes: Buffer, fn: (path: string) => Promise<T>): Promise<T> {
  const dir = await mkdtemp(join(tmpdir(), "regmirror-sendfile-"));
  const path = join(dir, "blob");
  await writeFile(path, bytes);
  try {
    return await fn(path);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

const openFds = async () => (await readdir("/proc/self/fd")).length;

test("the sendfile addon is built on this machine", () => {
  assert.ok(sendfileAddon, "npm install builds native/sendfile.cc; without it warm blobs are slower");
});

test("serves whole files and ranges over a keep-alive socket, and hangs up cleanly", async () => {
  const bytes = randomBytes(5 * 1024 * 1024 + 3);
  await withFile(bytes, async (path) => {
    const server = createServer((req, res) => {
      const [start, end] = (req.url ?? "/0-0").slice(1).split("-").map(Number) as [number, number];
      res.writeHead(200, { "content-length": end - start + 1 });
      sendFile(openSync(path, "r"), start, end, res, { userSpaceFirst: 0 });
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    const port = (server.address() as { port: number }).port;
    const agent = new Agent({ connections: 1 }); // one connection: every response must be framed right
    try {
      const fdsBefore = await openFds();
      for (const [start, end] of [
        [0, bytes.length - 1],
        [17, 1_000_016],
        [bytes.length - 10, bytes.length - 1],
        [0, bytes.length - 1],
      ]) {
        const res = await request(`http://127.0.0.1:${port}/${start}-${end}`, { dispatcher: agent });
        const got = Buffer.from(await res.body.arrayBuffer());
        assert.equal(sha(got), sha(bytes.subarray(start!, end! + 1)), `${start}-${end}`);
      }
      // A client that hangs up mid-transfer: the file descriptor is still closed.
      const res = await request(`http://127.0.0.1:${port}/0-${bytes.length - 1}`, { dispatcher: agent });
      await new Promise((r) => res.body.once("data", r));
      res.body.destroy();
      await new Promise((r) => setTimeout(r, 300));
      assert.ok((await openFds()) <= fdsBefore + 2, "no file descriptor leaked");
    } finally {
      await agent.close();
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
    }
  });
});

test("the buffer path (TLS, or no addon) sends the same bytes", async () => {
  const bytes = randomBytes(3 * 512 * 1024 + 99);
  await withFile(bytes, async (path) => {
    for (const [start, end] of [
      [0, bytes.length - 1],
      [5, 600_000],
      [bytes.length - 1, bytes.length - 1],
    ]) {
      const out = new PassThrough();
      const chunks: Buffer[] = [];
      out.on("data", (c: Buffer) => chunks.push(Buffer.from(c)));
      const ended = new Promise((r) => out.on("end", r));
      sendFile(openSync(path, "r"), start!, end!, out);
      await ended;
      assert.equal(sha(Buffer.concat(chunks)), sha(bytes.subarray(start!, end! + 1)));
    }
  });
});

test("the buffer path reuses a finished transfer's buffers, and each transfer's bytes stay its own", async () => {
  const a = randomBytes(3 * 512 * 1024);
  const b = randomBytes(3 * 512 * 1024);
  const seen = new Set<ArrayBufferLike>();
  const send = (bytes: Buffer) =>
    withFile(bytes, async (path) => {
      const out = new PassThrough();
      const chunks: Buffer[] = [];
      const backing: ArrayBufferLike[] = [];
      out.on("data", (c: Buffer) => {
        chunks.push(Buffer.from(c)); // a copy: the buffer goes back to the path once written
        backing.push(c.buffer);
      });
      const ended = new Promise((r) => out.on("end", r));
      sendFile(openSync(path, "r"), 0, bytes.length - 1, out);
      await ended;
      await new Promise((r) => setImmediate(r));
      assert.equal(sha(Buffer.concat(chunks)), sha(bytes));
      return backing;
    });
  for (const ab of await send(a)) seen.add(ab);
  const again = await send(b);
  assert.ok(
    again.some((ab) => seen.has(ab)),
    "fresh buffers for every transfer were garbage V8 frees only after tens of megabytes",
  );
});

test("two pipelined responses on one connection, read late, arrive whole and in order", async () => {
  // The client asks twice on one connection and reads nothing at first: the first blob fills the
  // kernel's socket buffer while the second request waits behind it.
  const bytes = randomBytes(8 * 1024 * 1024);
  await withFile(bytes, async (path) => {
    const server = createServer((_req, res) => {
      res.writeHead(200, { "content-length": bytes.length });
      sendFile(openSync(path, "r"), 0, bytes.length - 1, res, { userSpaceFirst: 0 });
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    const port = (server.address() as { port: number }).port;
    try {
      const received = await new Promise<Buffer>((resolve, reject) => {
        const chunks: Buffer[] = [];
        let total = 0;
        const sock = connect(port, "127.0.0.1", () => {
          sock.write("GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n");
          sock.pause();
          setTimeout(() => sock.resume(), 300);
        });
        sock.on("data", (c: Buffer) => {
          chunks.push(c);
          total += c.length;
          if (total < 2 * bytes.length) return;
          const all = Buffer.concat(chunks);
          const second = all.indexOf("HTTP/1.1 200", bytes.length);
          const body = second < 0 ? -1 : all.indexOf("\r\n\r\n", second) + 4;
          if (body > 0 && all.length - body >= bytes.length) {
            sock.destroy();
            resolve(all);
          }
        });
        sock.on("error", reject);
        setTimeout(() => reject(new Error(`stuck after ${total} bytes`)), 10_000).unref();
      });
      const second = received.indexOf("HTTP/1.1 200", bytes.length);
      assert.ok(second > 0, "the second response arrived");
      const body = received.subarray(received.indexOf("\r\n\r\n", second) + 4);
      assert.equal(sha(body.subarray(0, bytes.length)), sha(bytes));
    } finally {
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
    }
  });
});

/** A server that sends the file at `path` whole to every request with these options. */
async function fileServer(path: string, size: number, opts: Parameters<typeof sendFile>[4]) {
  const closed: Array<Promise<void>> = [];
  const server = createServer((_req, res) => {
    closed.push(new Promise((r) => res.once("close", r)));
    res.writeHead(200, { "content-length": size });
    sendFile(openSync(path, "r"), 0, size - 1, res, opts);
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const port = (server.address() as { port: number }).port;
  return {
    port,
    closed,
    async stop() {
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
    },
  };
}

/** Asks for / on a raw socket and reads nothing until `resume()`; `body` resolves with the body. */
function pausedClient(port: number) {
  const chunks: Buffer[] = [];
  const sock = connect(port, "127.0.0.1", () =>
    sock.write("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
  );
  sock.pause();
  sock.on("data", (c: Buffer) => chunks.push(c));
  const body = new Promise<Buffer>((resolve, reject) => {
    sock.on("end", () => {
      const all = Buffer.concat(chunks);
      resolve(all.subarray(all.indexOf("\r\n\r\n") + 4));
    });
    sock.on("error", reject);
  });
  return { sock, body, resume: () => sock.resume() };
}

const threads = async () => (await readdir("/proc/self/task")).length;

test("sendfile threads are bounded: readers beyond cache.sendfileThreads take the JavaScript path", async () => {
  const bytes = randomBytes(24 * 1024 * 1024); // more than the socket buffers hold: transfers wait
  await withFile(bytes, async (path) => {
    await readFile(path); // libuv's pool starts its threads now, not during the count
    const server = await fileServer(path, bytes.length, { maxKernelTransfers: 1, userSpaceFirst: 0 });
    try {
      const before = await threads();
      const clients = [1, 2, 3, 4].map(() => pausedClient(server.port));
      await new Promise((r) => setTimeout(r, 500)); // every transfer is under way and blocked
      const during = await threads();
      clients.forEach((c) => c.resume());
      for (const c of clients) assert.equal(sha(await c.body), sha(bytes));
      assert.ok(during <= before + 1, `${during - before} sendfile threads for a limit of 1`);
    } finally {
      await server.stop();
    }
  });
});

test("a lone transfer goes through user space, the next at the same time through sendfile", async () => {
  const bytes = randomBytes(24 * 1024 * 1024); // more than the socket buffers hold: transfers wait
  await withFile(bytes, async (path) => {
    await readFile(path); // libuv's pool starts its threads now, not during the count
    const server = await fileServer(path, bytes.length, {});
    try {
      const before = await threads();
      const first = pausedClient(server.port);
      await new Promise((r) => setTimeout(r, 300)); // under way and blocked
      const alone = await threads();
      const second = pausedClient(server.port);
      await new Promise((r) => setTimeout(r, 300));
      const both = await threads();
      first.resume();
      second.resume();
      for (const c of [first, second]) assert.equal(sha(await c.body), sha(bytes));
      assert.equal(alone, before, "a lone stream was faster and cheaper through user space");
      assert.equal(both, before + 1, "the second took a sendfile thread");
    } finally {
      await server.stop();
    }
  });
});

for (const kernel of [true, false]) {
  test(`a reader that stops reading is cut after the stall timeout, and its file closed (sendfile ${kernel})`, async () => {
    const bytes = randomBytes(32 * 1024 * 1024);
    await withFile(bytes, async (path) => {
      const server = await fileServer(path, bytes.length, { kernel, stallMs: 500, userSpaceFirst: 0 });
      try {
        const fdsBefore = await openFds();
        const client = pausedClient(server.port);
        client.body.catch(() => undefined);
        while (server.closed.length === 0) await new Promise((r) => setTimeout(r, 20));
        await server.closed[0]; // the test runner's own timeout fails this if it never comes
        await new Promise((r) => setTimeout(r, 100));
        assert.ok((await openFds()) <= fdsBefore + 1, "the blob's descriptor is closed"); // +1: the client socket
        client.sock.destroy();
      } finally {
        await server.stop();
      }
    });
  });
}

test("a stream (a fill in progress) to a reader that stops reading is cut after the stall timeout", async () => {
  let stopped = false;
  async function* endless(): AsyncGenerator<Buffer> {
    const chunk = randomBytes(256 * 1024);
    try {
      for (;;) yield chunk;
    } finally {
      stopped = true;
    }
  }
  let done = false;
  const server = createServer((_req, res) => {
    res.writeHead(200);
    sendStream(endless(), res, 500, () => (done = true));
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  try {
    const client = pausedClient((server.address() as { port: number }).port);
    client.body.catch(() => undefined);
    while (!done || !stopped) await new Promise((r) => setTimeout(r, 20));
    client.sock.destroy();
  } finally {
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
  }
});

// A pthread_create that refuses the sendfile addon's threads (the only ones made with a 128 KiB
// stack), as a pids limit would: preloaded into a child process, which must still send the bytes.
const REFUSING_SHIM = `
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <unistd.h>
typedef int (*create_fn)(pthread_t*, const pthread_attr_t*, void* (*)(void*), void*);
int pthread_create(pthread_t* t, const pthread_attr_t* attr, void* (*fn)(void*), void* arg) {
  size_t stack = 0;
  if (attr != NULL && pthread_attr_getstacksize(attr, &stack) == 0 && stack == 128 * 1024) {
    write(2, "shim: refused\\n", 14);
    return EAGAIN;
  }
  static create_fn real;
  if (real == NULL) real = (create_fn)dlsym(RTLD_NEXT, "pthread_create");
  return real(t, attr, fn, arg);
}
`;

const CHILD = (sendFileUrl: string) => `
import { createHash, randomBytes } from "node:crypto";
import { createServer, get } from "node:http";
import { openSync, writeFileSync } from "node:fs";
const { sendFile } = await import(${JSON.stringify(sendFileUrl)});
const bytes = randomBytes(8 * 1024 * 1024);
const path = process.argv[2];
writeFileSync(path, bytes);
const server = createServer((_req, res) => {
  res.writeHead(200, { "content-length": bytes.length });
  sendFile(openSync(path, "r"), 0, bytes.length - 1, res, { kernel: true, userSpaceFirst: 0 });
});
server.listen(0, "127.0.0.1", () => {
  get({ host: "127.0.0.1", port: server.address().port, path: "/" }, (res) => {
    const hash = createHash("sha256");
    res.on("data", (c) => hash.update(c));
    res.on("end", () => {
      const same = hash.digest("hex") === createHash("sha256").update(bytes).digest("hex");
      console.log(same ? "same bytes" : "different bytes");
      server.close();
    });
  });
});
`;

test("with no thread to be had, sendfile falls back to the JavaScript path instead of aborting", async (t) => {
  const dir = await mkdtemp(join(tmpdir(), "regmirror-nothread-"));
  try {
    writeFileSync(join(dir, "shim.c"), REFUSING_SHIM);
    try {
      execFileSync("cc", ["-shared", "-fPIC", "-o", join(dir, "shim.so"), join(dir, "shim.c"), "-ldl"]);
    } catch {
      t.skip("no C compiler");
      return;
    }
    const script = join(dir, "child.mts");
    writeFileSync(script, CHILD(new URL("../../src/storage/send-file.ts", import.meta.url).href));
    const child = spawnSync(process.execPath, ["--import", "tsx", script, join(dir, "blob")], {
      env: { ...process.env, LD_PRELOAD: join(dir, "shim.so") },
      encoding: "utf8",
      timeout: 20_000,
    });
    assert.match(child.stderr, /shim: refused/, "the addon asked for a thread and was refused");
    assert.equal(child.status, 0, child.stderr);
    assert.equal(child.stdout.trim(), "same bytes");
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test("a sendfile response is ended before its client can have the whole body (keep-alive, shutdown)", async () => {
  // Otherwise the client is done and its connection idle while the server still counts the
  // response as running: closeIdleConnections() skips it and a graceful shutdown waits it out.
  const bytes = randomBytes(2 * 1024 * 1024);
  await withFile(bytes, async (path) => {
    let last: ServerResponse | undefined;
    const server = createServer((_req, res) => {
      last = res;
      res.writeHead(200, { "content-length": bytes.length });
      sendFile(openSync(path, "r"), 0, bytes.length - 1, res, { userSpaceFirst: 0 });
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    const port = (server.address() as { port: number }).port;
    const agent = new Agent({ connections: 1 });
    try {
      for (let i = 0; i < 10; i++) {
        const res = await request(`http://127.0.0.1:${port}/`, { dispatcher: agent });
        const got = Buffer.from(await res.body.arrayBuffer());
        assert.equal(got.length, bytes.length);
        assert.ok(last?.writableEnded, `response ${i} still running when its client had it all`);
      }
    } finally {
      await agent.close();
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
    }
  });
});
