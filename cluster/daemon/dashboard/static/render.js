// Small DOM helpers for the dashboard: elements, numbers and times for people, the
// report's Markdown and the requests' charts. Every text goes in through textContent
// (never innerHTML), so nothing the daemon reports can become markup.

const SVG = "http://www.w3.org/2000/svg";

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  setAttrs(node, attrs);
  return put(node, ...children);
}

// Replace a node's children: nested arrays are flattened, null and false left out.
export function put(node, ...children) {
  const nodes = children.flat(Infinity).filter((c) => c !== null && c !== undefined && c !== false);
  node.replaceChildren(
    ...nodes.map((c) => (c instanceof Node ? c : document.createTextNode(String(c)))));
  return node;
}

function setAttrs(node, attrs) {
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
}

function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  for (const child of children) {
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export function fill(tbody, rows, empty, columns) {
  put(tbody, rows.length ? rows : el("tr", {}, el("td", { colspan: columns, class: "muted" }, empty)));
}

// --- numbers and times --------------------------------------------------------------------

export function duration(seconds) {
  if (seconds === null || seconds === undefined) return "-";
  let s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s}s`;
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  s %= 60;
  if (h >= 48) return `${Math.floor(h / 24)}d ${h % 24}h`;
  return h ? `${h}h${String(m).padStart(2, "0")}m` : `${m}m${String(s).padStart(2, "0")}s`;
}

export function ago(epoch) {
  return epoch ? `${duration(Date.now() / 1000 - epoch)} ago` : "-";
}

export function clock(epoch) {
  if (!epoch) return "-";
  const when = new Date(epoch * 1000);
  const today = new Date().toDateString() === when.toDateString();
  return today ? when.toLocaleTimeString() : when.toLocaleString();
}

export function number(value, digits = 1) {
  return value === null || value === undefined ? "-" : Number(value).toFixed(digits);
}

export function bits(bps) {
  if (bps === null || bps === undefined) return "-";
  return bps >= 1e9 ? `${(bps / 1e9).toFixed(2)} Gbit/s` : `${(bps / 1e6).toFixed(0)} Mbit/s`;
}

export function median(values) {
  const sorted = values.filter((v) => v !== null && v !== undefined).sort((a, b) => a - b);
  if (!sorted.length) return null;
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

// --- the report's Markdown: headings, tables, lists, paragraphs, `code`, **bold** -------

function inline(text) {
  const parts = text.split(/(`[^`]*`|\*\*[^*]+\*\*)/);
  return parts.filter(Boolean).map((part) => {
    if (part.startsWith("`") && part.endsWith("`") && part.length > 1) {
      return el("code", {}, part.slice(1, -1));
    }
    if (part.startsWith("**") && part.endsWith("**") && part.length > 4) {
      return el("strong", {}, part.slice(2, -2));
    }
    return document.createTextNode(part);
  });
}

function cells(line) {
  return line.trim().replace(/^\|/, "").replace(/\|$/, "").split("|").map((c) => c.trim());
}

export function markdown(text) {
  const out = el("div", { class: "markdown" });
  const lines = text.split("\n");
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    const heading = /^(#{1,4})\s+(.*)$/.exec(line);
    if (heading) {
      out.append(el(`h${Math.min(heading[1].length + 2, 6)}`, {}, inline(heading[2])));
      i += 1;
    } else if (line.trim().startsWith("|")) {
      const block = [];
      while (i < lines.length && lines[i].trim().startsWith("|")) block.push(lines[i++]);
      const rule = block.length > 1 && /^[\s|:-]+$/.test(block[1]);
      const align = rule ? cells(block[1]).map((c) => (c.endsWith(":") ? "num" : "")) : [];
      const head = rule ? [block[0]] : [];
      const body = rule ? block.slice(2) : block;
      out.append(
        el("table", { class: "report" },
          el("thead", {}, head.map((row) => el("tr", {},
            cells(row).map((c, k) => el("th", { class: align[k] }, inline(c)))))),
          el("tbody", {}, body.map((row) => el("tr", {},
            cells(row).map((c, k) => el("td", { class: align[k] }, inline(c))))))));
    } else if (/^\s*[-*]\s+/.test(line)) {
      const items = [];
      while (i < lines.length && /^\s*[-*]\s+/.test(lines[i])) {
        items.push(el("li", {}, inline(lines[i++].replace(/^\s*[-*]\s+/, ""))));
      }
      out.append(el("ul", {}, items));
    } else if (line.trim()) {
      const para = [];
      while (i < lines.length && lines[i].trim() && !/^(#|\||\s*[-*]\s)/.test(lines[i])) {
        para.push(lines[i++]);
      }
      out.append(el("p", {}, inline(para.join(" "))));
    } else {
      i += 1;
    }
  }
  return out;
}

// --- a time-series chart in SVG ---------------------------------------------------------

// The smallest 1, 2 or 5 times a power of ten at or above value: an axis' top, whose half
// (the middle tick) is a round number too.
function niceCeiling(value) {
  if (!(value > 0)) return 1;
  const power = 10 ** Math.floor(Math.log10(value));
  return [1, 2, 5, 10].map((m) => m * power).find((top) => top >= value * (1 - 1e-9));
}

// series: [{name, cls, points: [[epochSeconds, value], ...]}]; drawn as lines with dots,
// the y axis from 0 to the largest value, the x axis over the points' time span.
export function chart(series, { unit = "", digits = 1, empty = "no data" } = {}) {
  const width = 560;
  const height = 200;
  const pad = { left: 52, right: 12, top: 12, bottom: 28 };
  const all = series.flatMap((s) => s.points);
  if (!all.length) return el("p", { class: "muted chart-empty" }, empty);
  const t0 = Math.min(...all.map((p) => p[0]));
  const t1 = Math.max(...all.map((p) => p[0]));
  const top = niceCeiling(Math.max(...all.map((p) => p[1])) * 1.05);
  const x = (t) => pad.left + (t1 > t0 ? ((t - t0) / (t1 - t0)) * (width - pad.left - pad.right)
    : (width - pad.left - pad.right) / 2);
  const y = (v) => height - pad.bottom - (v / top) * (height - pad.top - pad.bottom);
  const root = svg("svg", { viewBox: `0 0 ${width} ${height}`, class: "plot", role: "img" });
  for (const frac of [0, 0.5, 1]) {
    const v = top * frac;
    root.append(
      svg("line", { x1: pad.left, x2: width - pad.right, y1: y(v), y2: y(v), class: "grid" }),
      svg("text", { x: pad.left - 6, y: y(v) + 4, class: "tick", "text-anchor": "end" },
        String(Number(v.toPrecision(3)))),
    );
  }
  const labels = t1 > t0 ? [[t0, "start"], [t1, "end"]] : [[t0, "middle"]];
  for (const [t, anchor] of labels) {
    root.append(svg("text", { x: x(t), y: height - 8, class: "tick", "text-anchor": anchor },
      new Date(t * 1000).toLocaleTimeString()));
  }
  let legendX = pad.left + 8;
  for (const s of series) {
    if (!s.points.length) continue;
    const path = s.points.map((p) => `${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join(" ");
    root.append(svg("polyline", { points: path, class: `line ${s.cls}` }));
    for (const [t, v] of s.points) {
      root.append(svg("circle", { cx: x(t), cy: y(v), r: 2.5, class: `dot ${s.cls}` },
        svg("title", {}, `${s.name}: ${Number(v).toFixed(digits)}${unit} at ${clock(t)}`)));
    }
    root.append(svg("text", { x: legendX, y: pad.top + 10, class: `legend ${s.cls}` }, s.name));
    legendX += 12 + 8 * s.name.length;
  }
  return root;
}
