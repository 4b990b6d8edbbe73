// The fast path's request reader: it recognises only the plainest GET and HEAD, and leaves every
// other shape ("other") to Node's own parser, so the two can never disagree on a request.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { MAX_HEADER_BYTES, parseRequest } from "../../src/http/fast-parse.ts";

const plain = (lines: string[]) => `${lines.join("\r\n")}\r\n\r\n`;

describe("fast-parse", () => {
  it("reads a plain GET and its length, leaving what follows", () => {
    const first = plain(["GET /v2/library/alpine/manifests/3.20 HTTP/1.1", "Host: m:5555", "Accept: a/b"]);
    const p = parseRequest(first + "GET /v2/ HTTP/1.1\r\n");
    assert.equal(p.kind, "request");
    if (p.kind !== "request") return;
    assert.equal(p.length, first.length);
    // No prototype: a header named __proto__ or constructor is just a header.
    assert.deepEqual(
      { ...p.request, headers: { ...p.request.headers } },
      {
        method: "GET",
        url: "/v2/library/alpine/manifests/3.20",
        headers: { host: "m:5555", accept: "a/b" },
        close: false,
      },
    );
    assert.equal(Object.getPrototypeOf(p.request.headers), null);
  });

  it("joins repeated Accept lines as Node does, and trims values", () => {
    const p = parseRequest(plain(["HEAD /v2/ HTTP/1.1", "host: h", "Accept:  x/y ", "accept:\tz/w"]));
    assert.equal(p.kind, "request");
    if (p.kind === "request") {
      assert.equal(p.request.method, "HEAD");
      assert.equal(p.request.headers.accept, "x/y, z/w");
    }
  });

  it("notes Connection: close, and takes keep-alive", () => {
    const close = parseRequest(plain(["GET /v2/ HTTP/1.1", "Host: h", "Connection: Keep-Alive, close"]));
    assert.equal(close.kind === "request" && close.request.close, true);
    const keep = parseRequest(plain(["GET /v2/ HTTP/1.1", "Host: h", "Connection: keep-alive"]));
    assert.equal(keep.kind === "request" && keep.request.close, false);
  });

  it("waits for the rest of a header section, up to Node's size limit", () => {
    assert.equal(parseRequest("GET /v2/ HTTP/1.1\r\nHost: h\r\n").kind, "partial");
    assert.equal(parseRequest("G").kind, "partial");
    assert.equal(parseRequest("GET /v2/ HTTP/1.1\r\nX: " + "a".repeat(MAX_HEADER_BYTES)).kind, "other");
    const big = plain(["GET /v2/ HTTP/1.1", "Host: h", "X: " + "a".repeat(MAX_HEADER_BYTES)]);
    assert.equal(parseRequest(big).kind, "other");
  });

  const others: Array<[string, string]> = [
    ["a method other than GET and HEAD", plain(["POST /v2/ HTTP/1.1", "Host: h"])],
    ["a lower-case method", plain(["get /v2/ HTTP/1.1", "Host: h"])],
    ["HTTP/1.0", plain(["GET /v2/ HTTP/1.0", "Host: h"])],
    ["an absolute URL", plain(["GET http://h/v2/ HTTP/1.1", "Host: h"])],
    ["an asterisk", plain(["OPTIONS * HTTP/1.1", "Host: h"])],
    ["a space in the path", plain(["GET /v2/a b HTTP/1.1", "Host: h"])],
    ["a body by Content-Length", plain(["GET /v2/ HTTP/1.1", "Host: h", "Content-Length: 0"])],
    ["a body by Transfer-Encoding", plain(["GET /v2/ HTTP/1.1", "Host: h", "Transfer-Encoding: chunked"])],
    ["Expect", plain(["GET /v2/ HTTP/1.1", "Host: h", "Expect: 100-continue"])],
    ["Upgrade", plain(["GET /v2/ HTTP/1.1", "Host: h", "Upgrade: websocket", "Connection: Upgrade"])],
    ["no Host", plain(["GET /v2/ HTTP/1.1", "Accept: a/b"])],
    ["two Host lines", plain(["GET /v2/ HTTP/1.1", "Host: a", "Host: b"])],
    [
      "two Authorization lines",
      plain(["GET /v2/ HTTP/1.1", "Host: h", "Authorization: a", "Authorization: b"]),
    ],
    ["an obs-folded line", plain(["GET /v2/ HTTP/1.1", "Host: h", "X: a", " b"])],
    ["a space before the colon", plain(["GET /v2/ HTTP/1.1", "Host : h"])],
    ["a control byte in a value", plain(["GET /v2/ HTTP/1.1", "Host: h", "X: a\x01b"])],
    ["a non-ASCII byte in a value", plain(["GET /v2/ HTTP/1.1", "Host: h", "X: caf\xe9"])],
    ["a bare LF", "GET /v2/ HTTP/1.1\nHost: h\r\n\r\n"],
    ["a leading empty line", "\r\n" + plain(["GET /v2/ HTTP/1.1", "Host: h"])],
    ["a line without a colon", plain(["GET /v2/ HTTP/1.1", "Host: h", "garbage"])],
    ["Connection: upgrade or anything odd", plain(["GET /v2/ HTTP/1.1", "Host: h", "Connection: TE"])],
  ];
  for (const [what, text] of others) {
    it(`hands ${what} to Node's parser`, () => {
      assert.equal(parseRequest(text).kind, "other");
    });
  }
});
