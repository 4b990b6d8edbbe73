// warm follows the mirror's own settings: the manifest size limit is limits.maxManifestSize, not
// a number of its own, and `warm --direct` stops its private mirror however the warming ends.
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { Command } from "commander";
import { startFakeUpstream, type FakeUpstream } from "../fixtures/fake-upstream.ts";
import { startTestMirror, type TestMirror } from "../fixtures/mirror.ts";
import { blobsOf, buildImage } from "../fixtures/images.ts";
import { registerCommands } from "../../src/cli/index.ts";
import { validateConfig } from "../../src/config/validate.ts";
import type { WarmReport } from "../../src/maintenance/warm.ts";

const TOKEN = "admin-token-for-tests-0123456789";

describe("warm and limits.maxManifestSize", () => {
  let fake: FakeUpstream;
  let mirror: TestMirror;
  before(async () => {
    fake = await startFakeUpstream();
    // A 5 MiB manifest: over the 4 MiB warm used to hard-code, under this mirror's 8 MiB limit.
    const img = buildImage({ format: "oci" });
    const doc = JSON.parse(img.manifest.toString()) as Record<string, unknown>;
    doc.annotations = { "org.example.padding": "x".repeat(5 * 1024 * 1024) };
    const manifest = Buffer.from(JSON.stringify(doc));
    for (const b of blobsOf(img)) fake.addBlob(b.bytes);
    fake.addManifest("team/big", "1", manifest, img.mediaType);
    mirror = await startTestMirror(fake.url, {
      upstream: { name: "registry.test" },
      admin: { token: TOKEN },
      limits: { maxManifestSize: "8MiB" },
    });
  });
  after(async () => {
    await mirror?.stop();
    await fake?.stop();
  });

  it("warms a manifest the mirror accepts, however large", async () => {
    const res = await fetch(`${mirror.url}/admin/warm`, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${TOKEN}` },
      body: JSON.stringify({ images: ["team/big:1"] }),
    });
    const report = (await res.json()) as WarmReport;
    assert.equal(report.ok, true, JSON.stringify(report));
    assert.equal(report.images[0]!.blobs, 2);
  });
});

describe("warm --direct", () => {
  it("stops its private mirror when the warming fails", async () => {
    const dir = await mkdtemp(join(tmpdir(), "regmirror-warm-direct-"));
    let closed = 0;
    const program = new Command().exitOverride();
    registerCommands(
      program,
      () => validateConfig({ cache: { dir } }),
      // A private mirror that cannot be reached: warm's first request fails.
      async () => ({ url: "http://127.0.0.1:1", close: async () => void closed++ }),
    );
    const exitCode = process.exitCode;
    const write = process.stderr.write;
    process.stderr.write = () => true;
    try {
      await program.parseAsync(["node", "regmirror", "warm", "--direct", "--no-progress", "x:1"]);
    } finally {
      process.stderr.write = write;
      assert.equal(process.exitCode, 1, "the warming failed");
      process.exitCode = exitCode;
      await rm(dir, { recursive: true, force: true });
    }
    assert.equal(closed, 1, "the private mirror was stopped");
  });
});
