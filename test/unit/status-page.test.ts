// The status page's parts that need no server: escaping, the chart buckets, and the last pull
// per repository and tag (exact from the pull log, else the tag's last check upstream).
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { Listing } from "../../src/maintenance/ls.ts";
import type { Point } from "../../src/metrics/history.ts";
import { PullLog } from "../../src/metrics/pull-log.ts";
import type { Stats } from "../../src/metrics/stats.ts";
import { html } from "../../src/http/html.ts";
import { Repositories } from "../../src/http/repositories.ts";
import { InProcessCoordinator } from "../../src/coordination/in-process.ts";

const walks = () => new InProcessCoordinator().flights<Listing>("repositories");
import { buckets } from "../../src/http/status-chart.ts";
import { renderStatusPage } from "../../src/http/status-page.ts";

const T0 = Date.parse("2026-01-01T00:00:00Z");
const iso = (ms: number) => new Date(ms).toISOString();

function listing(tag = "1.0", repo = "library/app"): Listing {
  const usage = { bytes: 100, cachedBytes: 100, blobs: 1, cachedBlobs: 1 };
  return {
    repositories: [
      {
        upstream: "docker.io",
        name: repo,
        ...usage,
        tags: [
          {
            tag,
            ...usage,
            entries: [
              { digest: `sha256:${"a".repeat(64)}`, mediaType: "x", checkedAt: iso(T0 + 1000) },
              { digest: `sha256:${"b".repeat(64)}`, mediaType: "y", checkedAt: iso(T0 + 5000) },
            ],
          },
        ],
      },
    ],
    cache: { blobs: 1, blobBytes: 100, manifests: 1, manifestBytes: 10 },
  };
}

describe("html``", () => {
  it("escapes what it interpolates, and nests fragments as they are", () => {
    const name = `<script>alert("x")</script>&'`;
    const inner = html`<b>${name}</b>`;
    assert.equal(
      html`<td title="${name}">${inner}${[1, null, false, "<"]}</td>`.text,
      `<td title="&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;&#39;"><b>&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;&#39;</b>1&lt;</td>`,
    );
  });
});

describe("status chart buckets", () => {
  const p = (minute: number, hits: number, misses: number): Point => ({
    t: T0 + minute * 60_000,
    hits,
    misses,
    bytesCache: hits * 10,
    bytesUpstream: misses * 10,
    pulls: 0,
  });

  it("turns cumulative samples into what changed per interval", () => {
    const bs = buckets([p(0, 0, 0), p(1, 3, 1), p(2, 3, 1), p(3, 10, 1)]);
    assert.deepEqual(
      bs.map((b) => [b.hits, b.misses, b.bytesCache]),
      [
        [3, 1, 30],
        [0, 0, 0],
        [7, 0, 70],
      ],
    );
  });

  it("merges a day of samples into at most the given number of buckets, losing nothing", () => {
    const points = Array.from({ length: 1441 }, (_, i) => p(i, i * 2, i));
    const bs = buckets(points, 48);
    assert.equal(bs.length, 48);
    assert.equal(
      bs.reduce((a, b) => a + b.hits, 0),
      2880,
    );
    assert.deepEqual(buckets([p(0, 1, 1)]), [], "one sample has no interval");
  });
});

describe("last pull", () => {
  it("is the pull log's time when a client asked, else the tag's latest check upstream", async () => {
    const pulls = new PullLog();
    const repos = new Repositories(async () => listing(), pulls, walks(), 0);
    const before = (await repos.summary()).repositories[0]!;
    assert.deepEqual(before.lastPull, { at: iso(T0 + 5000), source: "tag-check" });
    assert.deepEqual(before.tags[0]!.lastPull, { at: iso(T0 + 5000), source: "tag-check" });

    pulls.record("docker.io", "library/app", "1.0", T0 + 60_000);
    pulls.record("docker.io", "library/app", "never-cached", T0 + 90_000);
    const after = (await repos.summary()).repositories[0]!;
    assert.deepEqual(after.tags[0]!.lastPull, { at: iso(T0 + 60_000), source: "request" });
    assert.deepEqual(after.lastPull, { at: iso(T0 + 90_000), source: "request" });
  });

  it("keeps a bounded number of names, dropping the least recently pulled", () => {
    const pulls = new PullLog({ maxTags: 2, maxRepos: 2 });
    pulls.record("u", "a", "1", 1);
    pulls.record("u", "b", "1", 2);
    pulls.record("u", "c", "1", 3);
    assert.equal(pulls.lastTag("u", "a", "1"), undefined);
    assert.equal(pulls.last("u", "a"), undefined);
    assert.equal(pulls.last("u", "c"), 3);
  });

  it("reads the cache once for concurrent requests and again after invalidate()", async () => {
    let reads = 0;
    const repos = new Repositories(async () => (reads++, listing()), new PullLog(), walks(), 60_000);
    await Promise.all([repos.summary(), repos.summary(), repos.summary()]);
    await repos.summary();
    assert.equal(reads, 1);
    repos.invalidate();
    await repos.summary();
    assert.equal(reads, 2);
  });
});

describe("the status page", () => {
  it("shows hostile names as text", async () => {
    const evil = `<img src=x onerror=alert(1)>`;
    const repos = new Repositories(async () => listing(evil, `${evil}/x`), new PullLog(), walks(), 0);
    const stats = {
      uptimeSeconds: 5,
      hits: { manifest: 1, blob: 3 },
      misses: { manifest: 1, blob: 1 },
      hitRatio: 4 / 6,
      bytesServed: { cache: 10, upstream: 20 },
      bytesSaved: 10,
      cache: { bytes: 100, blobs: 1, limitBytes: 1000 },
      fillsInFlight: 0,
      coalesced: 0,
      servedStale: 0,
      evictions: { size: 0, age: 0 },
      pulls: 2,
      upstreams: [
        {
          name: "docker.io",
          url: `https://x/"><script>`,
          up: true,
          rateLimitRemaining: 9,
          requests: 3,
          pulls: 2,
        },
      ],
    } satisfies Stats;
    const page = renderStatusPage(
      { stats, pullsLastHour: 2, history: [], repositories: await repos.summary(), now: T0 + 10_000 },
      "n0nce",
    );
    assert.ok(!page.includes("<img"), "no markup from data");
    assert.ok(page.includes("&lt;img src=x onerror=alert(1)&gt;"));
    assert.equal([...page.matchAll(/<script/g)].length, 1, "only the page's own script");
    assert.match(page, /<script nonce="n0nce">/);
    assert.match(page, /66\.7%/);
    assert.ok(!page.includes("Cluster"), "no cluster card for a mirror on its own");

    const inCluster = renderStatusPage(
      {
        stats: {
          ...stats,
          cluster: {
            replicas: [
              {
                member: "a:1",
                url: `http://a:5555/"><b>`,
                version: "0.1.0",
                startedAt: new Date(T0 - 60_000).toISOString(),
                filling: [`sha256:${"ab".repeat(32)}`],
              },
            ],
          },
        },
        pullsLastHour: 2,
        history: [],
        repositories: await repos.summary(),
        now: T0 + 10_000,
      },
      "n0nce",
    );
    assert.match(inCluster, /Cluster/);
    assert.ok(inCluster.includes("http://a:5555/&quot;&gt;&lt;b&gt;"), "a replica's address as text");
    assert.ok(!inCluster.includes("<b>"));
  });
});
