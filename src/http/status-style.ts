// The status page's stylesheet, inline in the page (nothing is fetched from elsewhere). Light and
// dark follow the browser's setting.

export const STATUS_CSS = `
:root { color-scheme: light dark; --fg: #1d2330; --muted: #667085; --bg: #f5f6f8; --card: #fff;
  --line: #e2e5ea; --good: #23844f; --up: #98a2b3; --bad: #c0392b; }
@media (prefers-color-scheme: dark) {
  :root { --fg: #e6e8eb; --muted: #9aa3af; --bg: #13161b; --card: #1c2027; --line: #2d333c;
    --good: #4cc38a; --up: #5f6b7a; --bad: #ef6b5b; }
}
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
  color: var(--fg); background: var(--bg); }
main { max-width: 1120px; margin: 0 auto; padding: 18px 20px 28px; }
header { display: flex; align-items: baseline; gap: 12px; flex-wrap: wrap; margin-bottom: 14px; }
h1 { font-size: 20px; margin: 0; }
h2 { font-size: 13px; font-weight: 600; margin: 0 0 6px; color: var(--muted); }
h2 .muted { font-weight: 400; margin-left: 6px; }
a { color: inherit; }
.muted { color: var(--muted); }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: 12px 14px; }
section.card { margin-bottom: 12px; overflow-x: auto; }
.cards, .charts { display: grid; gap: 12px; margin-bottom: 12px; }
.cards { grid-template-columns: repeat(auto-fit, minmax(210px, 1fr)); }
.charts { grid-template-columns: repeat(auto-fit, minmax(340px, 1fr)); }
.big { font-size: 26px; font-weight: 600; font-variant-numeric: tabular-nums; }
svg.meter { display: block; width: 100%; height: 6px; margin: 6px 0 4px; }
.meter .track { fill: var(--line); } .meter .fill { fill: var(--good); }
svg.chart { display: block; width: 100%; height: auto; }
.chart .grid { stroke: var(--line); } .chart .label { fill: var(--muted); font-size: 10px; }
.chart polyline.hit { fill: none; stroke: var(--good); stroke-width: 2; }
.chart circle.hit, .chart rect.cache { fill: var(--good); } .chart rect.upstream { fill: var(--up); }
.legend i { display: inline-block; width: 9px; height: 9px; border-radius: 2px; margin: 0 4px 0 10px; }
.legend i.cache { background: var(--good); } .legend i.upstream { background: var(--up); }
table { width: 100%; border-collapse: collapse; font-variant-numeric: tabular-nums; }
th, td { text-align: left; padding: 4px 8px; border-bottom: 1px solid var(--line); vertical-align: top; }
th { font-size: 12px; font-weight: 600; color: var(--muted); }
th.num, td.num { text-align: right; white-space: nowrap; }
tr.repo td { padding-top: 9px; font-weight: 600; }
tr.repo .muted { font-weight: 400; }
tr.tag td:first-child { padding-left: 22px; }
td.name { word-break: break-all; }
td.when { white-space: nowrap; }
code { font: 12px ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
.badge { padding: 1px 8px; border-radius: 10px; font-size: 12px; font-weight: 600; white-space: nowrap; }
.badge.ok { color: var(--good); background: color-mix(in srgb, var(--good) 14%, transparent); }
.badge.bad { color: var(--bad); background: color-mix(in srgb, var(--bad) 14%, transparent); }
.badge.unknown { color: var(--muted); background: var(--line); }
footer { font-size: 12px; }
.admin-login { margin-bottom: 8px; display: flex; gap: 8px; align-items: center; flex-wrap: wrap; }
.logged-in, html.admin .logged-out { display: none; }
html.admin .logged-in { display: inline; }
td.actions { white-space: nowrap; text-align: right; }
button { font: inherit; font-size: 12px; padding: 1px 8px; cursor: pointer; }
`;
