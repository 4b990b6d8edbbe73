// The status page in a real browser: Debian's chromium, driven by playwright-core, loads / from a
// mirror that has cached a few images through the fake upstream, and we read what it shows. The
// page must load nothing from anywhere else (it works offline), run no script but its own, and
// show a hostile name as text.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { chromium, type BrowserContext, type Page } from "playwright-core";
import { startFakeUpstream, type FakeUpstream } from "../fixtures/fake-upstream.ts";
import { buildImage, buildIndex, addImage, addIndex, MEDIA } from "../fixtures/images.ts";
import { startTestMirror, type TestMirror } from "../fixtures/mirror.ts";
import { pullThrough } from "../fixtures/pull.ts";
import type { RepositoriesSummary } from "../../src/http/repositories.ts";
import { HostedStore } from "../../src/hosted/store.ts";
import { digestOf, parseDigest } from "../../src/oci/digest.ts";
import { filesystemCache } from "../../src/storage/cache.ts";

const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";
/** A tag record an attacker (or a broken tool) left in the cache directory: its name is markup. */
const HOSTILE = `<img src=x onerror="window.pwned=1">`;

describe("the status page in Chromium", () => {
  let fake: FakeUpstream;
  let mirror: TestMirror;
  let profile: string;
  let context: BrowserContext;
  let page: Page;
  const outside: string[] = [];
  const problems: string[] = [];

  before(async () => {
    fake = await startFakeUpstream();
    addIndex(fake, "library/alpine", ["3.20", "latest"], buildIndex({ layers: 2 }));
    addImage(fake, "team/app", "1.0", buildImage({ layers: [randomBytes(300_000)], format: "oci" }));
    mirror = await startTestMirror(fake.url, {
      upstream: { name: "registry.test" },
      cache: { maxSize: "1GiB" },
    });
    // Misses, then hits: the hit ratio is neither 0 nor 100%.
    await pullThrough(mirror.url, "library/alpine", "3.20");
    await pullThrough(mirror.url, "library/alpine", "3.20");
    await pullThrough(mirror.url, "library/alpine", "latest");
    await pullThrough(mirror.url, "team/app", "1.0");
    const tags = join(mirror.cacheDir, "repos", "registry.test", "evil", "_tags");
    await mkdir(tags, { recursive: true });
    await writeFile(join(tags, `${HOSTILE}.json`), JSON.stringify({ entries: [] }));

    profile = await mkdtemp(join(tmpdir(), "regmirror-chromium-"));
    context = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM,
      headless: true,
      args: [
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
      ],
      viewport: { width: 1200, height: 900 },
    });
    page = context.pages()[0] ?? (await context.newPage());
    page.on("request", (r) => {
      if (!r.url().startsWith(mirror.url) && !r.url().startsWith("data:")) outside.push(r.url());
    });
    page.on("console", (m) => {
      if (m.type() === "error") problems.push(m.text());
    });
    page.on("pageerror", (e) => problems.push(e.message));
  });
  after(async () => {
    await context?.close();
    await mirror?.stop();
    await fake?.stop();
    if (profile) await rm(profile, { recursive: true, force: true });
  });

  it("shows the hit ratio, bytes saved, cache size, pulls and upstream state", async () => {
    const res = await page.goto(`${mirror.url}/`);
    assert.equal(res?.status(), 200);
    const hit = await page.locator("#hit-ratio .big").innerText();
    const ratio = Number(/^([\d.]+)%$/.exec(hit)?.[1]);
    assert.ok(ratio > 0 && ratio < 100, `hit ratio ${hit}`);
    assert.match(await page.locator("#bytes-saved .big").innerText(), /^[\d.]+ (B|KiB|MiB)$/);
    assert.match(await page.locator("#cache-size").innerText(), /of 1\.0 GiB/);
    assert.equal(await page.locator("#pulls .big").innerText(), "4");
    const upstream = page.locator("#upstreams tbody tr");
    assert.equal(await upstream.count(), 1);
    assert.match(await upstream.innerText(), /registry\.test[\s\S]*reachable/);
    assert.equal(await page.locator("svg.chart").count(), 2);
  });

  it("lists the cached repositories with their tags, sizes and last pull", async () => {
    await page.goto(`${mirror.url}/ui`);
    const table = page.locator("#repositories");
    const text = await table.innerText();
    for (const want of [
      "registry.test/library/alpine",
      "2 tags",
      "3.20",
      "latest",
      "registry.test/team/app",
    ]) {
      assert.ok(text.includes(want), `${want} in:\n${text}`);
    }
    const app = page.locator("#repositories tr.tag", { hasText: "1.0" });
    assert.match(await app.innerText(), /OCI manifest\s+29\d\.\d KiB\s+(checked )?(now|\d+ s ago)/);
  });

  it("shows a hostile name as text and runs none of it", async () => {
    await page.goto(`${mirror.url}/`);
    assert.ok((await page.locator("#repositories").innerText()).includes(HOSTILE));
    assert.equal(await page.evaluate(() => (window as { pwned?: number }).pwned), undefined);
    assert.deepEqual(outside, [], "requests that left the mirror");
    assert.deepEqual(problems, [], "console errors (a CSP violation shows here)");
    const dir = process.env.REGMIRROR_SCREENSHOT_DIR;
    if (dir) await page.screenshot({ path: join(dir, "status-page.png"), fullPage: true });
  });

  it("serves the same repositories as JSON at /api/repositories", async () => {
    const body = (await (await fetch(`${mirror.url}/api/repositories`)).json()) as RepositoriesSummary;
    const alpine = body.repositories.find((r) => r.name === "library/alpine");
    assert.ok(alpine);
    assert.deepEqual(
      alpine.tags.map((t) => t.tag),
      ["3.20", "latest"],
    );
    assert.equal(alpine.blobs, alpine.cachedBlobs);
    assert.ok(alpine.bytes > 0);
    // Until registry.ts records pulls, the last pull is the tag's last check upstream.
    assert.ok(alpine.lastPull && ["request", "tag-check"].includes(alpine.lastPull.source));
  });
});

describe("the status page's hosted repositories in Chromium", () => {
  const TOKEN = "status-page-admin-token";
  let fake: FakeUpstream;
  let mirror: TestMirror;
  let profile: string;
  let context: BrowserContext;
  let page: Page;
  let v1 = "";
  const problems: string[] = [];

  /** An image in a hosted repository: blobs through the store, the manifest pushed over HTTP. */
  async function pushHosted(
    store: HostedStore,
    repo: string,
    tag: string,
    layerBytes: number,
  ): Promise<string> {
    const blobs = [];
    for (const bytes of [Buffer.from("{}"), randomBytes(layerBytes)]) {
      const digest = digestOf(bytes);
      const w = await store.blobs.beginWrite(parseDigest(digest)!, bytes.length);
      await w.write(bytes);
      await w.commit();
      await store.linkBlob(repo, parseDigest(digest)!, bytes.length);
      blobs.push({ digest, size: bytes.length });
    }
    const doc = {
      schemaVersion: 2,
      mediaType: MEDIA.ociManifest,
      config: { mediaType: MEDIA.ociConfig, ...blobs[0]! },
      layers: [{ mediaType: MEDIA.ociLayer, ...blobs[1]! }],
    };
    const res = await fetch(`${mirror.url}/v2/${repo}/manifests/${tag}`, {
      method: "PUT",
      headers: { "content-type": MEDIA.ociManifest },
      body: JSON.stringify(doc),
    });
    assert.equal(res.status, 201);
    return res.headers.get("docker-content-digest")!;
  }

  before(async () => {
    fake = await startFakeUpstream();
    addImage(fake, "library/alpine", "3.20", buildImage({ layers: 1, format: "oci" }));
    mirror = await startTestMirror(fake.url, {
      upstream: { name: "registry.test" },
      admin: { token: TOKEN },
      hosted: { repositories: ["local/**"], anonymousPush: true },
    });
    await pullThrough(mirror.url, "library/alpine", "3.20");
    const cache = filesystemCache(mirror.cacheDir);
    const store = new HostedStore(cache.driver, cache.paths);
    v1 = await pushHosted(store, "local/app", "v1", 2048);
    await pushHosted(store, "local/app", "v2", 4096);
    profile = await mkdtemp(join(tmpdir(), "regmirror-chromium-"));
    context = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM,
      headless: true,
      args: ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"],
    });
    page = context.pages()[0] ?? (await context.newPage());
    page.on("console", (m) => {
      if (m.type() === "error") problems.push(m.text());
    });
    page.on("pageerror", (e) => problems.push(e.message));
    page.on("dialog", (d) => void d.accept());
  });
  after(async () => {
    await context?.close();
    await mirror?.stop();
    await fake?.stop();
    if (profile) await rm(profile, { recursive: true, force: true });
  });

  it("lists hosted repositories in their own section, with tags and sizes", async () => {
    await page.goto(`${mirror.url}/`);
    const hosted = await page.locator("#hosted-repositories").innerText();
    for (const want of ["Hosted repositories", "local/app", "2 tags", "v1", "v2", "4.0 KiB"])
      assert.ok(hosted.includes(want), `${want} in:\n${hosted}`);
    assert.match(
      await page.locator("#hosted tr.tag", { hasText: "v1" }).innerText(),
      /OCI manifest\s+2\.0 KiB/,
    );
    const cached = await page.locator("#repositories").innerText();
    assert.ok(cached.includes("registry.test/library/alpine"));
    assert.ok(!cached.includes("local/app"), "hosted repositories are not in the cache's table");
    const body = (await (await fetch(`${mirror.url}/api/repositories`)).json()) as RepositoriesSummary;
    assert.deepEqual(
      body.hosted?.map((r) => [r.name, r.tags.map((t) => t.tag)]),
      [["local/app", ["v1", "v2"]]],
    );
  });

  it("offers deletes only to a logged-in admin, and a delete removes the tag", async () => {
    await page.goto(`${mirror.url}/`);
    const untag = page.locator('#hosted button[data-action="delete"][data-reference="v2"]');
    assert.equal(await untag.isVisible(), false, "no delete before the login");
    await page.fill("#admin-token", "wrong");
    await page.click('button[data-action="login"]');
    await page.locator("#admin-status", { hasText: "cannot log in" }).waitFor();
    assert.equal(await untag.isVisible(), false);

    await page.fill("#admin-token", TOKEN);
    await page.click('button[data-action="login"]');
    await page.locator("#admin-status", { hasText: "logged in" }).waitFor();
    await untag.click();
    await page.locator("#admin-status", { hasText: "deleted the tag local/app:v2" }).waitFor();
    assert.equal(await page.locator("#hosted tr.tag", { hasText: "v2" }).count(), 0);
    assert.match(await page.locator("#hosted tr.repo").innerText(), /1 tag · 1 untagged \(gc removes them\)/);
    assert.equal((await fetch(`${mirror.url}/v2/local/app/manifests/v2`)).status, 404);

    // By digest: the manifest and its tag.
    await page.locator(`#hosted button[data-action="delete"][data-reference="${v1}"]`).click();
    await page.locator("#admin-status", { hasText: "deleted the manifest" }).waitFor();
    assert.equal((await fetch(`${mirror.url}/v2/local/app/manifests/${v1}`)).status, 404);
    assert.equal((await fetch(`${mirror.url}/v2/local/app/manifests/v1`)).status, 404);
    // The cached repository is untouched.
    assert.ok((await page.locator("#repositories").innerText()).includes("registry.test/library/alpine"));
    // 401 from the browser's one failed login attempt shows as a console error; nothing else may.
    assert.deepEqual(
      problems.filter((p) => !/401/.test(p)),
      [],
    );
  });
});
