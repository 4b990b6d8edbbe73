// The headers both paths write (answer-headers.ts): Node's through writeHead, the fast path's as
// text. Their order and spelling are what clients see; the fast-path integration test checks
// the two paths agree, this checks what they agree on.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  BASE_BODY,
  BASE_HEADERS,
  blobHeaders,
  headerObject,
  headerText,
  manifestHeaders,
} from "../../src/http/answer-headers.ts";

const DIGEST = `sha256:${"a".repeat(64)}`;
const API = ["docker-distribution-api-version", "registry/2.0"];

describe("answer headers", () => {
  it("/v2/ is JSON, its length that of its body", () => {
    assert.deepEqual(BASE_HEADERS, [
      API,
      ["content-type", "application/json; charset=utf-8"],
      ["content-length", String(Buffer.byteLength(BASE_BODY))],
    ]);
  });

  it("a manifest names its type, length and digest, and a warning only when stale", () => {
    const m = { bytes: Buffer.from("{}"), digest: DIGEST, mediaType: "application/x", stale: false };
    const fresh = [
      API,
      ["content-type", "application/x"],
      ["content-length", "2"],
      ["docker-content-digest", DIGEST],
      ["etag", `"${DIGEST}"`],
    ];
    assert.deepEqual(manifestHeaders(m), fresh);
    assert.deepEqual(manifestHeaders({ ...m, stale: true }), [
      ...fresh,
      ["warning", '110 - "Response is Stale"'],
    ]);
  });

  it("a blob gives its range before its length, and no length when it is unknown", () => {
    const common = [
      API,
      ["content-type", "application/octet-stream"],
      ["docker-content-digest", DIGEST],
      ["etag", `"${DIGEST}"`],
      ["accept-ranges", "bytes"],
      ["cache-control", "max-age=31536000, immutable"],
    ];
    assert.deepEqual(blobHeaders(DIGEST, 10), [...common, ["content-length", "10"]]);
    assert.deepEqual(blobHeaders(DIGEST, 3, "bytes 2-4/10"), [
      ...common,
      ["content-range", "bytes 2-4/10"],
      ["content-length", "3"],
    ]);
    assert.deepEqual(blobHeaders(DIGEST, undefined), common);
  });

  it("renders as CRLF lines and as an object, in the same order", () => {
    const pairs = [
      ["content-type", "a/b"],
      ["etag", '"x"'],
      ["content-length", "0"],
    ] as const;
    assert.equal(headerText(pairs), 'content-type: a/b\r\netag: "x"\r\ncontent-length: 0\r\n');
    assert.deepEqual(Object.entries(headerObject(pairs)), pairs);
    assert.equal(headerText([]), "");
  });
});
