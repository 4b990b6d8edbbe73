import { formatBytes, formatCount, shortDigest } from "../format.ts";
import { MANIFEST_TYPE_NAMES } from "../oci/media-types.ts";
import type { Point } from "../metrics/history.ts";
import type { Stats, UpstreamStats } from "../metrics/stats.ts";
import type { ReplicaRecord } from "../cluster/registry.ts";
import { html, trusted, type Html } from "./html.ts";
import type { LastPull, RepoSummary, RepositoriesSummary } from "./repositories.ts";
import { ago, buckets, bytesChart, hitRatioChart } from "./status-chart.ts";
import { STATUS_CSS } from "./status-style.ts";
import { hostedCard } from "./status-hosted.ts";

// GET / (and /ui): the status page, rendered on the server into one self-contained document: no
// framework, no build step, nothing loaded from elsewhere, so it works on an air-gapped network.
// Every value from data goes through html`` (escaped); the one script only reloads the page's
// <main> every 30 s while the tab is visible, and the Content-Security-Policy in app.ts lets no
// other script run, should escaping ever be missed.
//
// The hosted repositories have a section of their own (status-hosted.ts); the admin part of the
// page's script below drives its login and delete buttons.

export interface StatusData {
  stats: Stats;
  pullsLastHour: number;
  history: Point[];
  repositories: RepositoriesSummary;
  now: number;
  /** The admin API is mounted (admin.token): the hosted section offers an admin login and deletes. */
  admin?: boolean;
}

/** Beyond this many, the page says how many more there are and points to the JSON. */
const MAX_REPOS_SHOWN = 500;

// Swaps in a fresh <main> rather than reloading: no flash, and the scroll position stays. The
// admin part acts on buttons by delegation, so it survives the swap; the login state is a class
// on <html>, outside <main>.
const PAGE_SCRIPT = `
const KEY = "regmirror-admin-token";
const root = document.documentElement;
const showAdmin = () => root.classList.toggle("admin", Boolean(sessionStorage.getItem(KEY)));
showAdmin();
async function refresh() {
  try {
    const res = await fetch(location.href, { headers: { accept: "text/html" } });
    if (!res.ok) return;
    // Only <main> is parsed: the page's <style> carries another nonce, which the policy refuses.
    const text = await res.text();
    const main = text.slice(text.indexOf("<main"), text.lastIndexOf("</main>") + 7);
    const fresh = new DOMParser().parseFromString(main, "text/html").querySelector("main");
    if (fresh) document.querySelector("main").replaceWith(fresh);
  } catch {}
}
setInterval(() => { if (!document.hidden) refresh(); }, 30000);
function say(text) {
  const out = document.getElementById("admin-status");
  if (out) out.textContent = text;
}
async function admin(method, path, body) {
  return fetch(path, {
    method,
    headers: { authorization: "Bearer " + sessionStorage.getItem(KEY), "content-type": "application/json" },
    ...(body ? { body: JSON.stringify(body) } : {}),
  });
}
async function problem(res) {
  try { return (await res.json()).errors[0].message; } catch { return "HTTP " + res.status; }
}
document.addEventListener("click", async (event) => {
  const button = event.target.closest("button[data-action]");
  if (!button) return;
  const action = button.dataset.action;
  if (action === "login") {
    sessionStorage.setItem(KEY, document.getElementById("admin-token").value);
    const res = await admin("GET", "/admin/hosted");
    if (!res.ok) sessionStorage.removeItem(KEY);
    showAdmin();
    say(res.ok ? "logged in" : "cannot log in: " + (await problem(res)));
  } else if (action === "logout") {
    sessionStorage.removeItem(KEY);
    showAdmin();
    say("logged out");
  } else if (action === "delete") {
    const { repo, reference } = button.dataset;
    const what = reference.startsWith("sha256:") ? "the manifest " + repo + "@" + reference + " and its tags" : "the tag " + repo + ":" + reference;
    if (!confirm("Delete " + what + "?")) return;
    const res = await admin("POST", "/admin/hosted/delete", { repo, reference });
    if (res.status === 401) { sessionStorage.removeItem(KEY); showAdmin(); }
    const text = res.ok ? "deleted " + what : "could not delete " + what + ": " + (await problem(res));
    if (res.ok) await refresh();
    say(text);
  }
});`;

export function renderStatusPage(d: StatusData, nonce: string): string {
  const s = d.stats;
  const bs = buckets(d.history);
  const page = html`<!doctype html>
    <html lang="en">
      <head>
        <meta charset="utf-8" />
        <meta name="viewport" content="width=device-width, initial-scale=1" />
        <link rel="icon" href="data:," />
        <title>regmirror status</title>
        <style nonce="${nonce}">
          ${trusted(STATUS_CSS)}
        </style>
      </head>
      <body>
        <main>
          <header>
            <h1>regmirror</h1>
            <span class="muted"
              >up ${duration(s.uptimeSeconds)} · updated
              <span id="updated">${new Date(d.now).toISOString().replace(/\.\d+Z$/, "Z")}</span></span
            >
          </header>
          <section class="cards">
            ${card("hit-ratio", "Hit ratio", s.hitRatio === null ? "–" : `${(s.hitRatio * 100).toFixed(1)}%`, `${formatCount(s.hits.manifest + s.hits.blob)} hits · ${formatCount(s.misses.manifest + s.misses.blob)} misses`)}
            ${card("bytes-saved", "Bytes saved", formatBytes(s.bytesSaved), `served from the cache · ${formatBytes(s.bytesServed.upstream)} from upstreams`)}
            ${cacheCard(s)}
            ${card("pulls", "Pulls in the last hour", formatCount(d.pullsLastHour), `${formatCount(s.pulls)} since the start`)}
          </section>
          <section class="charts">
            <div class="card">
              <h2>Hit ratio</h2>
              ${hitRatioChart(bs, d.now)}
            </div>
            <div class="card">
              <h2>
                Bytes served
                <span class="legend muted"
                  ><i class="cache"></i>from the cache (saved)<i class="upstream"></i>from upstreams</span
                >
              </h2>
              ${bytesChart(bs, d.now)}
            </div>
          </section>
          <section class="card">
            <h2>Upstreams</h2>
            ${upstreamTable(s.upstreams)}
          </section>
          ${s.cluster ? clusterCard(s.cluster.replicas, d.now) : ""}
          <section class="card">
            <h2>
              Cached repositories
              <span class="muted"
                >${formatCount(d.repositories.repositories.length)} ·
                ${formatCount(d.repositories.cache.blobs)} blobs,
                ${formatBytes(d.repositories.cache.blobBytes)} on disk</span
              >
            </h2>
            ${repositoryTable(d.repositories.repositories, d.now)}
          </section>
          ${d.repositories.hosted === null ? "" : hostedCard(d.repositories.hosted, d.admin === true)}
          <footer class="muted">
            JSON: <a href="/stats?history">/stats?history</a> ·
            <a href="/api/repositories">/api/repositories</a> · <a href="/metrics">/metrics</a>
          </footer>
        </main>
        <script nonce="${nonce}">
          ${trusted(PAGE_SCRIPT)};
        </script>
      </body>
    </html> `;
  return page.text;
}

function card(id: string, title: string, big: string, sub: string | Html): Html {
  return html`<div class="card" id="${id}">
    <h2>${title}</h2>
    <div class="big">${big}</div>
    <div class="muted">${sub}</div>
  </div>`;
}

function cacheCard(s: Stats): Html {
  const { bytes, blobs, limitBytes } = s.cache;
  const pct = limitBytes > 0 ? Math.min((bytes / limitBytes) * 100, 100) : 0;
  // An SVG bar, not a styled div: the CSP allows no inline style attributes.
  const meter = html`<svg
    class="meter"
    viewBox="0 0 100 6"
    preserveAspectRatio="none"
    role="img"
    aria-label="${pct.toFixed(1)}% of the limit"
  >
    <rect class="track" width="100" height="6" rx="3" />
    <rect class="fill" width="${pct.toFixed(2)}" height="6" rx="3" />
  </svg>`;
  return html`<div class="card" id="cache-size">
    <h2>Cache</h2>
    <div class="big">${formatBytes(bytes)}</div>
    ${meter}
    <div class="muted">of ${formatBytes(limitBytes)} (${pct.toFixed(1)}%) · ${formatCount(blobs)} blobs</div>
  </div>`;
}

/** The replicas of a cluster (cluster.redis), from their records in Redis. */
function clusterCard(replicas: ReplicaRecord[] | null, now: number): Html {
  if (replicas === null)
    return html`<section class="card">
      <h2>Cluster</h2>
      <p class="muted">Redis cannot be asked right now: this replica serves and fills on its own.</p>
    </section>`;
  const rows = replicas.map(
    (r) =>
      html`<tr>
        <td class="name">${r.url}</td>
        <td>${r.version}</td>
        <td>${ago(now - Date.parse(r.startedAt))}</td>
        <td class="name">${r.filling.length === 0 ? "–" : r.filling.map(shortDigest).join(", ")}</td>
      </tr>`,
  );
  return html`<section class="card">
    <h2>Cluster <span class="muted">${formatCount(replicas.length)} replicas</span></h2>
    <table id="replicas">
      <thead>
        <tr>
          <th>Replica</th>
          <th>Version</th>
          <th>Started</th>
          <th>Filling</th>
        </tr>
      </thead>
      <tbody>
        ${rows}
      </tbody>
    </table>
  </section>`;
}

function upstreamTable(ups: UpstreamStats[]): Html {
  const state = (u: UpstreamStats): Html =>
    u.up === null
      ? html`<span class="badge unknown" title="not asked anything since the start">not asked yet</span>`
      : u.up
        ? html`<span class="badge ok">reachable</span>`
        : html`<span class="badge bad" title="its last answer was an outage: no answer, 429 or 5xx"
            >down</span
          >`;
  const rows = ups.map(
    (u) =>
      html`<tr>
        <td class="name">${u.name}</td>
        <td class="name muted">${u.url}</td>
        <td>${state(u)}</td>
        <td class="num">${u.rateLimitRemaining === null ? "–" : formatCount(u.rateLimitRemaining)}</td>
        <td class="num">${formatCount(u.requests)}</td>
        <td class="num">${formatCount(u.pulls)}</td>
      </tr>`,
  );
  return html`<table id="upstreams">
    <thead>
      <tr>
        <th>Registry</th>
        <th>URL</th>
        <th>State</th>
        <th class="num">Rate limit left</th>
        <th class="num">Requests</th>
        <th class="num">Pulls</th>
      </tr>
    </thead>
    <tbody>
      ${rows}
    </tbody>
  </table>`;
}

function repositoryTable(repos: RepoSummary[], now: number): Html {
  if (repos.length === 0) {
    return html`<p class="muted" id="repositories">
      Nothing cached yet. Pull an image through the mirror, or warm one: <code>regmirror warm alpine</code>.
    </p>`;
  }
  const shown = repos.slice(0, MAX_REPOS_SHOWN);
  const groups = shown.map((r) => {
    const head = html`<tr class="repo">
      <td colspan="3">
        <span class="name">${r.upstream}/${r.name}</span>
        <span class="muted">${r.tags.length === 1 ? "1 tag" : `${r.tags.length} tags`}</span>
      </td>
      <td class="num">${size(r)}</td>
      <td class="when">${lastPull(r.lastPull, now)}</td>
    </tr>`;
    const tags = r.tags.map((t) => {
      const digests = t.entries.map((e) => html`<code title="${e.digest}">${shortDigest(e.digest)}</code> `);
      const types = [...new Set(t.entries.map((e) => MANIFEST_TYPE_NAMES[e.mediaType] ?? e.mediaType))].join(
        ", ",
      );
      return html`<tr class="tag">
        <td class="name">${t.tag}</td>
        <td>${t.entries.length > 0 ? digests : html`<span class="muted">unreadable record</span>`}</td>
        <td class="muted">${types}</td>
        <td class="num">${size(t)}</td>
        <td class="when">${lastPull(t.lastPull, now)}</td>
      </tr>`;
    });
    return html`<tbody>
      ${head}${tags}
    </tbody>`;
  });
  const more =
    repos.length > shown.length
      ? html`<p class="muted">
          …and ${formatCount(repos.length - shown.length)} more: see
          <a href="/api/repositories">/api/repositories</a>.
        </p>`
      : undefined;
  return html`<table id="repositories">
      <thead>
        <tr>
          <th>Repository / tag</th>
          <th>Digest</th>
          <th>Type</th>
          <th class="num">Size</th>
          <th>Last pull</th>
        </tr>
      </thead>
      ${groups}
    </table>
    ${more}`;
}

function lastPull(p: LastPull | null, now: number): Html {
  if (p === null) return html`<span class="muted">–</span>`;
  const when = ago(now - Date.parse(p.at));
  return p.source === "request"
    ? html`<span title="${p.at}">${when}</span>`
    : html`<span
        class="muted"
        title="${p.at}: when the upstream last confirmed the tag; no pull of it since this mirror started"
        >checked ${when}</span
      >`;
}

function size(u: { bytes: number; cachedBytes: number; blobs: number; cachedBlobs: number }): Html {
  return u.cachedBlobs === u.blobs
    ? html`${formatBytes(u.bytes)}`
    : html`${formatBytes(u.bytes)}
        <span class="muted" title="${u.cachedBlobs} of ${u.blobs} blobs cached"
          >(${formatBytes(u.cachedBytes)} cached)</span
        >`;
}

function duration(seconds: number): string {
  if (seconds < 60) return `${seconds}s`;
  const m = Math.floor(seconds / 60);
  if (m < 60) return `${m}m`;
  const h = Math.floor(m / 60);
  return h < 48 ? `${h}h ${m % 60}m` : `${Math.floor(h / 24)}d ${h % 24}h`;
}
