// HTML that is escaped by construction, for the status page. Everything interpolated into an
// html`...` template is escaped unless it is itself an Html value (a fragment built the same way,
// or a constant the page's own code wrote). Repository and tag names come from clients and from
// the upstream: a name like `<script>` must show as text, never run.

export class Html {
  constructor(readonly text: string) {}
  toString(): string {
    return this.text;
  }
}

export type Part = Html | string | number | null | undefined | false | ReadonlyArray<Part>;

const ENTITIES: Record<string, string> = {
  "&": "&amp;",
  "<": "&lt;",
  ">": "&gt;",
  '"': "&quot;",
  "'": "&#39;",
};

/** Text for an element's content or a quoted attribute value. */
export function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => ENTITIES[c]!);
}

function render(p: Part): string {
  if (p === null || p === undefined || p === false) return "";
  if (p instanceof Html) return p.text;
  if (Array.isArray(p)) return p.map(render).join("");
  return escapeHtml(String(p));
}

/** The template tag: html`<td>${name}</td>` escapes `name`; arrays are joined, null and false dropped. */
export function html(strings: TemplateStringsArray, ...parts: Part[]): Html {
  let out = strings[0]!;
  parts.forEach((p, i) => {
    out += render(p) + strings[i + 1]!;
  });
  return new Html(out);
}

/** Markup the page's own code wrote (CSS, the script), never data. */
export function trusted(text: string): Html {
  return new Html(text);
}
