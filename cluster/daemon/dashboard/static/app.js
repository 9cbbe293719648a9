// The dashboard: reads the daemon's JSON (relative URLs only: the page works on the Unix
// socket behind a tunnel, on TCP, or under a proxy's prefix), re-reads it periodically,
// and follows the daemon's server-sent events (api/events) to update within moments.
import {
  ago, bits, chart, clock, duration, el, fill, markdown, median, number, put,
} from "./render.js";

const $ = (id) => document.getElementById(id);
const PERIOD = { status: 5, cluster: 15, queue: 10, runs: 30, incidents: 30, requests: 10 };
const state = {
  status: null, cluster: null, queue: [], runs: [], openRun: null, connected: false,
};

async function get(path) {
  const response = await fetch(path, { credentials: "same-origin", cache: "no-store" });
  if (response.status === 401) {
    $("auth").hidden = false;
    throw new Error("unauthorized");
  }
  if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
  $("auth").hidden = true;
  return response.json();
}

// --- loaders: each reads one route and renders its panel --------------------------------

const loaders = {
  async status() {
    state.status = await get("api/status");
    renderStatus(state.status);
  },
  async cluster() {
    state.cluster = await get("api/cluster");
    renderCluster(state.cluster);
  },
  async queue() {
    state.queue = await get("api/queue");
    renderJobs();
  },
  async runs() {
    state.runs = await get("api/runs?limit=30");
    renderRuns();
  },
  async incidents() {
    renderIncidents(await get("api/incidents?limit=30"));
  },
  async requests() {
    renderRequests(await get("api/requests?limit=300"));
  },
};

const timers = {};
function soon(name, delay = 200) {
  clearTimeout(timers[name]);
  timers[name] = setTimeout(() => load(name), delay);
}

async function load(name) {
  try {
    await loaders[name]();
    if (state.connected) setLive("live");
  } catch (error) {
    // Shown on the page, not thrown: a daemon restarting is not a page error.
    setLive(error.message === "unauthorized" ? "token needed" : "stale");
  }
}

function setLive(word) {
  $("live").dataset.live = word.replace(" ", "-");
  $("live").textContent = word;
}

// --- cluster ------------------------------------------------------------------------------

function setState(value, reason) {
  $("state").textContent = value;
  $("state").dataset.state = value;
  $("state-reason").textContent = reason || "";
}

function renderStatus(s) {
  setState(s.state, s.state_reason);
  const desired = s.desired.profile
    ? `${s.desired.profile}${s.desired.split ? ` split ${s.desired.split.join("/")}` : ""}`
    : "nothing";
  $("desired").textContent = desired;
  // While a job has the cluster, what served before is gone: it is started again after.
  const lent = s.state === "job";
  const serving = lent ? { pids: {} } : s.serving;
  $("serving-profile").textContent = lent ? `nothing: ${s.state_reason || "a job"} has the cluster`
    : serving.profile ? `${serving.profile} split ${serving.split}` : "nothing";
  $("serving-endpoint").textContent = serving.endpoint || "-";
  $("serving-since").textContent = serving.since
    ? `${clock(serving.since)} (${ago(serving.since)})` : "-";
  const pids = Object.entries(serving.pids || {});
  put($("pids"), pids.map(([name, pid]) =>
    el("li", { dataset: { component: name } }, el("span", {}, name), " ", el("code", {}, pid))));
  $("next-restart").textContent = s.next_restart_at ? clock(s.next_restart_at) : "-";
  $("daemon-pid").textContent = `pid ${s.pid}, up ${duration(Date.now() / 1000 - s.started)}`;
}

function level(value) {
  return el("span", { class: `level ${value || "unknown"}` }, value || "?");
}

function renderCluster(c) {
  $("cluster-name").textContent = c.name;
  fill($("hosts").tBodies[0], c.hosts.map((h) => el("tr", { dataset: { host: h.name } },
    el("td", {}, el("strong", {}, h.name), h.head ? el("span", { class: "tag" }, "head") : null,
      h.serving ? el("span", { class: "tag" }, "serving") : null),
    el("td", { title: h.link_detail }, level(h.link), ` ${h.link_interface} ${h.link_address}`),
    el("td", { title: h.build_text || "" }, h.build ? el("code", {}, h.build) : "-",
      h.build_problem ? el("span", { class: "error" }, ` ${h.build_problem}`) : null),
    el("td", {}, h.transport))), "no hosts", 4);
  fill($("links").tBodies[0], c.links.map((l) => el("tr", { dataset: { worker: l.worker } },
    el("td", {}, `${l.head} → ${l.worker}`),
    el("td", {}, l.address),
    el("td", { title: l.detail }, level(l.up === null ? null : l.up ? "up" : "down")),
    el("td", {}, l.rtt || "-"),
    el("td", {}, bits(l.throughput_bps),
      l.measured_at ? el("span", { class: "muted" }, ` (${ago(l.measured_at)})`) : null))),
    "a single host: no links", 5);
  fill($("components").tBodies[0], c.components.map((p) => el("tr",
    { class: p.alive ? "" : "dead", dataset: { component: `${p.host}/${p.component}` } },
    el("td", {}, p.host), el("td", {}, p.component), el("td", {}, el("code", {}, p.pid ?? "-")),
    el("td", {}, p.alive ? p.state : "dead"), el("td", {}, p.alive ? duration(p.uptime_s) : "-"),
    el("td", {}, p.profile || "-"), el("td", {}, p.split || "-"), el("td", {}, p.port ?? "-"),
    el("td", {}, p.health === "-" ? "-" : level(p.health)))),
  c.components_at ? "nothing runs" : "not read yet", 9);
  renderHealth(c);
  const errors = Object.entries(c.errors || {}).map(([k, v]) => `${k}: ${v}`);
  if (c.note) errors.unshift(c.note);
  $("cluster-errors").hidden = !errors.length;
  $("cluster-errors").textContent = errors.join(" · ");
}

function renderHealth(c) {
  const counts = { ok: 0, warn: 0, fail: 0 };
  for (const check of c.checks) counts[check.level] += 1;
  $("health-summary").textContent = c.health_at
    ? `${counts.ok} ok, ${counts.warn} warn, ${counts.fail} fail · ${c.health_profile
      ? `against ${c.health_profile}` : "no profile"} · ${ago(c.health_at)}`
    : "not run yet";
  const row = (k) => el("tr", { class: k.level },
    el("td", {}, k.host), el("td", {}, k.name), el("td", {}, level(k.level)),
    el("td", {}, k.value), el("td", {}, k.detail));
  const head = () => el("thead", {}, el("tr", {},
    ["host", "check", "verdict", "value", "detail"].map((h) => el("th", {}, h))));
  const problems = c.checks.filter((k) => k.level !== "ok");
  const fine = c.checks.filter((k) => k.level === "ok");
  put($("health"),
    problems.length ? el("table", { class: "checks" }, head(), el("tbody", {}, problems.map(row)))
      : null,
    fine.length ? el("details", {}, el("summary", {}, `${fine.length} checks ok`),
      el("table", { class: "checks" }, head(), el("tbody", {}, fine.map(row)))) : null,
  );
}

// --- incidents ----------------------------------------------------------------------------

function renderIncidents(incidents) {
  const items = incidents.map((i) => el("li", { class: i.recovered ? "recovered" : "open" },
    el("div", { class: "when" }, clock(i.started)),
    el("div", {},
      el("span", { class: "tag cls" }, i.cls), " ", i.evidence,
      i.cause ? el("span", { class: "muted" }, ` (cause: ${i.cause})`) : null,
      el("div", { class: "muted" }, i.recovered
        ? `recovered after ${duration(i.recovered - i.started)}` : "not recovered yet",
      `, ${i.restarts} restart${i.restarts === 1 ? "" : "s"}`),
      Object.keys(i.log_tails).length ? el("details", {}, el("summary", {}, "log tails"),
        Object.entries(i.log_tails).map(([name, tail]) =>
          el("div", {}, el("h5", {}, name), el("pre", {}, tail)))) : null)));
  put($("timeline"), (items.length ? items
    : [el("li", { class: "muted" }, "no incidents")]));
}

// --- jobs ---------------------------------------------------------------------------------

function jobWhen(job) {
  const r = job.request;
  if (job.finished) return `finished ${clock(job.finished)}`;
  if (job.started) return `started ${clock(job.started)}`;
  if (r.window) return `window ${r.window}`;
  if (r.at) return `at ${clock(r.at)}`;
  return `queued ${clock(job.created)}`;
}

function renderJobs() {
  const rows = state.queue.map((j) => el("tr", { dataset: { job: j.id, status: j.status } },
    el("td", {}, j.id), el("td", {}, `${j.request.kind} ${j.request.target}`),
    el("td", {}, el("span", { class: `tag ${j.status}` }, j.status)), el("td", {}, jobWhen(j)),
    el("td", {}, j.run_id ? el("a", { href: `#run/${j.run_id}` }, `run ${j.run_id}`) : "-"),
    el("td", { class: "muted" }, j.applied ? `${j.message} applied` : j.message)));
  fill($("queue").tBodies[0], rows, "no jobs", 6);
  const running = state.queue.find((j) => ["running", "draining"].includes(j.status));
  if (!running) {
    put($("running-job"));
    return;
  }
  const p = running.progress;
  const bar = el("progress", { max: p.total || 1, value: p.total ? p.done : 0 });
  put($("running-job"), el("div", { class: "card", id: "job-progress" },
    el("strong", {}, `job ${running.id}: ${running.request.kind} ${running.request.target}`),
    " ", el("span", { class: `tag ${running.status}` }, running.status),
    el("div", {}, bar, ` ${p.done}/${p.total ?? "?"}`,
      p.eta_s !== null ? ` · ETA ${duration(p.eta_s)}` : ""),
    el("div", { class: "muted" }, p.what || ""),
    p.best ? el("div", {}, el("strong", {}, "best so far: "), p.best) : null));
}

function onProgress(data) {
  const job = state.queue.find((j) => j.id === data.job);
  if (!job) return soon("queue");
  const { job: _id, at: _at, ...progress } = data;
  job.progress = { ...job.progress, ...progress };
  renderJobs();
}

// --- results ------------------------------------------------------------------------------

function renderRuns() {
  fill($("runs").tBodies[0], state.runs.map((r) => el("tr",
    { dataset: { run: r.id }, class: state.openRun === r.id ? "open" : "" },
    el("td", {}, el("a", { href: `#run/${r.id}` }, r.id)), el("td", {}, r.kind),
    el("td", {}, r.profile || "-"), el("td", {}, el("span", { class: `tag ${r.status}` }, r.status)),
    el("td", {}, clock(r.started_at)),
    el("td", {}, r.finished_at ? duration(r.finished_at - r.started_at) : "-"))),
  "no runs recorded", 6);
}

async function openRun(id) {
  state.openRun = id;
  renderRuns();
  const box = $("run-view");
  box.hidden = false;
  let view;
  try {
    view = await get(`api/runs/${id}/view`);
  } catch (error) {
    put(box, el("p", { class: "error" }, `run ${id}: ${error.message}`));
    return;
  }
  const file = (name) => `api/runs/${id}/files/${name}`;
  const stamp = view.run.finished_at || Date.now();  // a running run's plot is redrawn
  put(box,
    el("h3", {}, view.title, " ", el("span", { class: `tag ${view.status}` }, view.status)),
    el("p", {}, view.summary),
    view.sweep ? el("div", { class: "verdict" }, markdown(view.sweep.verdict)) : null,
    el("p", { class: "downloads" }, "download: ", view.files.map((name) =>
      el("a", { href: file(name), download: `run-${id}-${name}` }, name))),
    view.files.includes("report.png")
      ? el("img", { id: "run-plot", src: `${file("report.png")}?v=${stamp}`,
        alt: `${view.title}: the report's plot` }) : null,
    view.matrices.map(renderMatrix),
    view.ladder.length ? renderLadder(view) : null,
    el("details", { open: true }, el("summary", {}, "report.md"), markdown(view.markdown)),
  );
}

function renderMatrix(m) {
  return el("div", { class: "matrix" }, el("h4", {}, `${m.config}: shape × target`),
    el("table", {}, el("thead", {}, el("tr", {}, el("th", {}, "shape"),
      m.targets.map((t) => el("th", { class: "num" }, t)))),
    el("tbody", {}, m.shapes.map((shape, i) => el("tr", {}, el("th", {}, shape),
      m.cells[i].map((cell) => cell
        ? el("td", { class: cell.passed ? "pass" : "fail", title: cell.words.join(", ") },
          cell.passed ? "PASS" : cell.words.find((w) => !w.startsWith("PASS")) || "FAIL")
        : el("td", { class: "muted" }, "·")))))));
}

function renderLadder(view) {
  return el("div", { class: "ladder" },
    el("h4", {}, `ceiling: ${view.ceiling === null ? "none" : `${view.ceiling} tokens`}`),
    el("ol", {}, view.ladder.map((s) => el("li", { class: s.passed ? "pass" : "fail" },
      `${s.target} tokens: ${s.passed ? "pass" : `fail${s.failure_class ? ` (${s.failure_class})` : ""}`}`))));
}

function route() {
  const match = /^#run\/(\d+)$/.exec(location.hash);
  if (match) {
    openRun(Number(match[1]));
    $("results").scrollIntoView();
  }
}

// --- requests -----------------------------------------------------------------------------

function renderRequests(records) {
  const ok = records.filter((r) => r.status < 400);
  const failed = records.length - ok.length;
  $("requests-summary").textContent = records.length
    ? `${records.length} recent request(s), ${failed} failed · median tg ${number(median(
      ok.map((r) => r.tg_tps)))} tok/s · median TTFT ${number(median(ok.map((r) => r.ttft_s)), 3)} s`
    : "no requests through the front door yet";
  const points = (key) => ok.filter((r) => r[key] !== null).map((r) => [r.at, r[key]]);
  put($("chart-speed"), chart([
    { name: "tg tok/s", cls: "tg", points: points("tg_tps") },
    { name: "pp tok/s", cls: "pp", points: points("pp_tps") },
  ], { unit: " tok/s", empty: "no speeds yet" }));
  put($("chart-ttft"), chart([
    { name: "TTFT s", cls: "ttft", points: points("ttft_s") },
  ], { unit: " s", digits: 3, empty: "no streamed requests yet" }));
}

// --- live: the event stream, and periodic re-reads ---------------------------------------

function connect() {
  const events = new EventSource("api/events");
  events.onopen = () => {
    state.connected = true;
    setLive("live");
    for (const name of Object.keys(loaders)) soon(name, 0);  // what happened meanwhile
  };
  events.onerror = () => {
    state.connected = false;
    setLive("reconnecting");
  };
  const on = (kind, handler) => events.addEventListener(kind, (e) => handler(JSON.parse(e.data)));
  on("state", (d) => { setState(d.state, d.reason); soon("status"); });
  for (const kind of ["incident", "recovered", "adopted", "desired"]) {
    on(kind, () => { soon("status"); soon("incidents"); });
  }
  on("job", () => { soon("queue"); soon("runs"); soon("status"); });
  on("progress", onProgress);
  on("cluster", () => soon("cluster"));
  on("request", () => soon("requests", 1000));
}

for (const [name, seconds] of Object.entries(PERIOD)) {
  load(name);
  setInterval(() => load(name), seconds * 1000);
}
window.addEventListener("hashchange", route);
route();
connect();
