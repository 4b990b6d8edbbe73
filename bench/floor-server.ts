// The floor servers of bench/floor.ts: the least a Node.js process can do to move a blob from the
// upstream to a client, with none of a mirror's work. Run as its own process so that its CPU can
// be read from /proc:  node --import tsx bench/floor-server.ts MODE UPSTREAM_URL PORT
//
//   pipe   bytes only: each client connection is joined to a fresh upstream connection and the
//          two sockets are piped both ways. No HTTP parsing, no hashing, no file: below this no
//          JavaScript server can go.
//   proxy  HTTP: undici's request() to the upstream, its body written to Node's ServerResponse.
//   store  proxy, plus what a caching mirror must do with every byte: sha256 and a write to a file.
import { createHash } from "node:crypto";
import { open, rm } from "node:fs/promises";
import { createServer as createHttpServer } from "node:http";
import { connect, createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { request } from "undici";

const [mode, upstreamUrl, portArg] = process.argv.slice(2);
if (!mode || !upstreamUrl || !portArg)
  throw new Error("usage: floor-server.ts pipe|proxy|store UPSTREAM_URL PORT");
const upstream = new URL(upstreamUrl);
const port = Number(portArg);

function listening(): void {
  process.stdout.write("ready\n");
}

if (mode === "pipe") {
  createServer((client) => {
    const up = connect(Number(upstream.port), upstream.hostname);
    client.pipe(up).pipe(client);
    client.on("error", () => up.destroy());
    up.on("error", () => client.destroy());
  }).listen(port, "127.0.0.1", listening);
} else {
  let files = 0;
  createHttpServer(async (req, res) => {
    const r = await request(new URL(req.url ?? "/", upstream));
    res.writeHead(r.statusCode, { "content-length": String(r.headers["content-length"] ?? 0) });
    const hash = mode === "store" ? createHash("sha256") : undefined;
    const path = join(tmpdir(), `regmirror-floor-${process.pid}-${files++}`);
    const file = mode === "store" ? await open(path, "w") : undefined;
    let written = Promise.resolve();
    for await (const chunk of r.body) {
      hash?.update(chunk as Buffer);
      if (file) written = written.then(() => file.write(chunk as Buffer).then(() => undefined));
      if (!res.write(chunk)) await new Promise((ok) => res.once("drain", ok));
    }
    await written;
    await file?.close();
    if (file) await rm(path, { force: true });
    res.end();
  }).listen(port, "127.0.0.1", listening);
}
