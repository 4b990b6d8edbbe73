import { createServer, type Socket } from "node:net";
import { Client } from "undici";

// A fresh process pays for undici's first connection: it compiles its HTTP parser (llhttp, a
// WebAssembly module, built once per process and shared by every connection) and runs the request
// path for the first time. Paid on a client's first miss, that was 15–40 ms on the way to its
// first byte — and every client waiting on the same blob waited for it too (the 32-client
// coalescing figure in bench/, measured on a freshly started mirror).
//
// So each serving process makes one request, right after it listens, to a canned answer on a
// loopback port of its own: no upstream is asked and nothing is counted or logged. It runs in the
// background and a failure changes nothing but the first miss's speed.

const ANSWER = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok";

/** Resolves when undici has made one request (or could not: that is only slower, not wrong). */
export async function primeHttpClient(): Promise<void> {
  const sockets = new Set<Socket>();
  const server = createServer((socket) => {
    sockets.add(socket);
    socket.on("error", () => undefined);
    socket.once("data", () => socket.end(ANSWER));
    socket.once("close", () => sockets.delete(socket));
  });
  // Never what keeps a stopping process alive.
  server.unref();
  try {
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(0, "127.0.0.1", resolve);
    });
    const { port } = server.address() as { port: number };
    const client = new Client(`http://127.0.0.1:${port}`, { headersTimeout: 5_000, bodyTimeout: 5_000 });
    try {
      const res = await client.request({ method: "GET", path: "/" });
      await res.body.dump();
    } finally {
      await client.destroy();
    }
  } catch {
    // Nothing to do: the first miss compiles the parser itself, as it always did.
  } finally {
    for (const s of sockets) s.destroy();
    server.close();
  }
}
