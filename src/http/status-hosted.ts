import { formatBytes, formatCount, shortDigest } from "../format.ts";
import { MANIFEST_TYPE_NAMES } from "../oci/media-types.ts";
import type { HostedRepoListing } from "../maintenance/hosted-ls.ts";
import { html, type Html } from "./html.ts";

// The status page's section for the hosted repositories (hosted.repositories). When the admin API
// is on (admin.token), an admin logs in there with that token (kept in the tab's sessionStorage,
// never in a cookie, so no other site can make the browser use it) and gets a delete button per
// tag and per manifest, which the page's script turns into POST /admin/hosted/delete with the
// token as its Bearer (status-page.ts).

/** As the cache's table: beyond this many, GET /admin/hosted has them all. */
const MAX_SHOWN = 500;

/** The hosted repositories, apart from the cache: tags, declared sizes, and deletes for an admin. */
export function hostedCard(repos: HostedRepoListing[], admin: boolean): Html {
  const total = repos.reduce((a, r) => a + r.bytes, 0);
  const login = admin
    ? html`<div class="admin-login">
        <span class="logged-out">
          <input
            id="admin-token"
            type="password"
            autocomplete="off"
            placeholder="admin token"
            aria-label="admin token"
          />
          <button type="button" data-action="login">Log in</button>
        </span>
        <span class="logged-in">admin <button type="button" data-action="logout">Log out</button></span>
        <span id="admin-status" class="muted" role="status"></span>
      </div>`
    : undefined;
  const del = (repo: string, reference: string, label: string) =>
    admin
      ? html`<button
          type="button"
          class="logged-in"
          data-action="delete"
          data-repo="${repo}"
          data-reference="${reference}"
        >
          ${label}
        </button>`
      : undefined;
  const body =
    repos.length === 0
      ? html`<p class="muted" id="hosted">
          Nothing pushed yet: <code>docker push &lt;mirror&gt;/&lt;hosted name&gt;:tag</code>.
        </p>`
      : html`<table id="hosted">
          <thead>
            <tr>
              <th>Repository / tag</th>
              <th>Digest</th>
              <th>Type</th>
              <th class="num">Size</th>
              <th></th>
            </tr>
          </thead>
          ${repos.slice(0, MAX_SHOWN).map((r) => {
            const head = html`<tr class="repo">
              <td colspan="3">
                <span class="name">${r.name}</span>
                <span class="muted"
                  >${r.tags.length === 1 ? "1 tag" : `${r.tags.length} tags`}${
                    r.unreachable > 0 ? ` · ${r.unreachable} untagged (gc removes them)` : ""
                  }</span
                >
              </td>
              <td class="num">${formatBytes(r.bytes)}</td>
              <td></td>
            </tr>`;
            const tags = r.tags.map(
              (t) =>
                html`<tr class="tag">
                  <td class="name">${t.tag}</td>
                  <td><code title="${t.digest}">${shortDigest(t.digest)}</code></td>
                  <td class="muted">${MANIFEST_TYPE_NAMES[t.mediaType] ?? t.mediaType}</td>
                  <td class="num">${formatBytes(t.bytes)}</td>
                  <td class="actions">${del(r.name, t.tag, "untag")} ${del(r.name, t.digest, "delete")}</td>
                </tr>`,
            );
            return html`<tbody>
              ${head}${tags}
            </tbody>`;
          })}
        </table>`;
  return html`<section class="card" id="hosted-repositories">
    <h2>
      Hosted repositories
      <span class="muted">${formatCount(repos.length)} · ${formatBytes(total)} declared</span>
    </h2>
    ${login} ${body}
  </section>`;
}
