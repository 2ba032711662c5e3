// spectask dashboard: plain JavaScript, no dependencies, every value shown through
// textContent (payloads and ids are untrusted), charts drawn as inline SVG.
"use strict";

const STATES = ["queued", "started", "retrying", "succeeded", "failed", "dead", "cancelled"];
const SVG = "http://www.w3.org/2000/svg";
const PAGE = 50;
let snapshot = null;
let taskOffset = 0;
let lastListRefresh = 0;
let pendingConfirm = null;

function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (value !== null && value !== undefined && value !== false) node.setAttribute(key, value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function s(tag, attrs = {}, text = null) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  if (text !== null) node.textContent = text;
  return node;
}

async function api(path, options = {}) {
  const response = await fetch(path, {
    headers: { "Content-Type": "application/json" }, credentials: "same-origin", ...options,
  });
  let body = null;
  try { body = await response.json(); } catch (_) { body = null; }
  if (!response.ok) {
    const error = new Error((body && body.detail) || `${response.status} ${response.statusText}`);
    error.body = body;
    error.status = response.status;
    throw error;
  }
  return body;
}

function table(headers, rows, numeric = []) {
  return h("table", {},
    h("thead", {}, h("tr", {}, headers.map((name, i) => h("th", { class: numeric.includes(i) ? "num" : "" }, name)))),
    h("tbody", {}, rows));
}

function cell(value, numeric = false, cls = "") {
  return h("td", { class: (numeric ? "num " : "") + cls }, value === null || value === undefined ? "–" : value);
}

function ago(iso) {
  if (!iso) return "–";
  const seconds = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
  return seconds < 90 ? `${seconds.toFixed(0)} s ago` : `${(seconds / 60).toFixed(0)} min ago`;
}

// --- live overview -----------------------------------------------------------------------

function renderCounts(counts) {
  const types = Object.keys(counts);
  const totals = Object.fromEntries(STATES.map((state) => [state, 0]));
  const rows = types.map((type) => {
    STATES.forEach((state) => { totals[state] += counts[type][state] || 0; });
    return h("tr", { "data-type": type }, cell(type || "(unknown)"),
      STATES.map((state) => cell(counts[type][state] || 0, true, `state-${state}`)));
  });
  rows.push(h("tr", { class: "total" }, cell("all"), STATES.map((state) => cell(totals[state], true))));
  document.getElementById("counts").replaceChildren(table(["type", ...STATES], rows, STATES.map((_, i) => i + 1)));
}

function renderQueues(report) {
  document.getElementById("queue-source").textContent = report.source ? `source: ${report.source}` : "";
  document.getElementById("queue-note").textContent = report.note || "";
  const rate = (value) => (value === null || value === undefined ? null : value.toFixed(1));
  const rows = (report.queues || []).map((q) => h("tr", { "data-queue": q.name },
    cell(q.name), cell(q.kind), q.missing ? cell("missing") : cell(q.ready, true),
    cell(q.unacked, true), cell(q.consumers, true), cell(rate(q.publish_rate), true), cell(rate(q.deliver_rate), true)));
  document.getElementById("queues").replaceChildren(
    table(["queue", "kind", "ready", "unacked", "consumers", "in/s", "out/s"], rows, [2, 3, 4, 5, 6]));
}

function renderWorkers(workers) {
  if (!workers.length) {
    document.getElementById("workers").replaceChildren(h("p", { class: "note" }, "no worker heartbeats lately"));
    return;
  }
  const rows = workers.map((w) => h("tr", { "data-worker": w.worker_id },
    cell(w.worker_id), cell(w.state, false, `state-${w.state}`), cell(w.host), cell(w.pid, true),
    cell(w.task_types.join(", ")), cell(w.concurrency, true), cell(w.in_flight, true),
    cell(w.processed, true), cell(w.failed, true), cell(ago(w.last_heartbeat))));
  document.getElementById("workers").replaceChildren(table(
    ["worker", "state", "host", "pid", "types", "concurrency", "in flight", "processed", "failed", "last heartbeat"],
    rows, [3, 5, 6, 7, 8]));
}

function lineChart(target, series, lines) {
  const width = 460, height = 150, pad = 28;
  const values = series.flatMap((point) => lines.map((line) => point[line.key])).filter((v) => v !== null && v !== undefined);
  const top = Math.max(1e-9, ...values, 0) * 1.1 || 1;
  const x = (i) => pad + (i * (width - pad - 6)) / Math.max(1, series.length - 1);
  const y = (v) => height - pad + 4 - ((height - pad) * v) / top;
  const svg = s("svg", { viewBox: `0 0 ${width} ${height}`, width: "100%", role: "img", "data-points": values.length });
  svg.append(s("line", { x1: pad, y1: y(0), x2: width - 6, y2: y(0), stroke: "#ccd" }));
  svg.append(s("text", { x: 2, y: y(top / 1.1) + 4 }, (top / 1.1).toPrecision(2)));
  svg.append(s("text", { x: 2, y: y(0) }, "0"));
  svg.append(s("text", { x: pad, y: height - 4 }, "-15 min"));
  svg.append(s("text", { x: width - 40, y: height - 4 }, "now"));
  for (const line of lines) {
    const points = series.map((point, i) => [i, point[line.key]]).filter(([, v]) => v !== null && v !== undefined);
    if (!points.length) continue;
    svg.append(s("polyline", { points: points.map(([i, v]) => `${x(i)},${y(v)}`).join(" "), fill: "none",
      stroke: line.color, "stroke-width": 1.6, "data-series": line.key }));
    if (points.length < 3) points.forEach(([i, v]) => svg.append(s("circle", { cx: x(i), cy: y(v), r: 2.5, fill: line.color })));
  }
  lines.forEach((line, i) => svg.append(s("text", { x: width - 120 + i * 50, y: 12, fill: line.color }, line.key)));
  document.getElementById(target).replaceChildren(svg);
}

function renderSnapshot(data) {
  snapshot = data;
  renderCounts(data.counts || {});
  document.getElementById("counts-note").textContent = data.counts_every > 1 ? `counted every ${data.counts_every} s (a large store)` : "";
  renderQueues(data.queues || {});
  renderWorkers(data.workers || []);
  lineChart("chart-throughput", data.history || [], [{ key: "per_second", color: "#2457c5" }]);
  lineChart("chart-latency", data.history || [], [{ key: "p50", color: "#1d7a46" }, { key: "p95", color: "#b3261e" }]);
  const types = document.querySelector("#task-filters select[name=type]");
  for (const type of Object.keys(data.counts || {})) {
    if (type && ![...types.options].some((o) => o.value === type)) types.append(h("option", { value: type }, type));
  }
  if (data.changed && data.changed.length && currentView() === "tasks" && Date.now() - lastListRefresh > 2000) {
    loadTasks();
  }
  const shown = currentView() === "task" ? currentTaskId() : null;
  if (shown && (data.changed || []).includes(shown)) loadTask(shown, true);
}

function connectLive() {
  const status = document.getElementById("live-status");
  const source = new EventSource("/api/live");
  source.addEventListener("snapshot", (event) => {
    status.textContent = "live";
    status.dataset.version = JSON.parse(event.data).version;
    renderSnapshot(JSON.parse(event.data));
  });
  source.onerror = () => { status.textContent = "reconnecting…"; };
}

// --- tasks -------------------------------------------------------------------------------

async function loadTasks() {
  lastListRefresh = Date.now();
  const form = new FormData(document.getElementById("task-filters"));
  const params = new URLSearchParams({ limit: PAGE, offset: taskOffset });
  for (const [key, value] of form) if (value) params.set(key, value);
  const target = document.getElementById("task-list");
  try {
    const data = await api(`/api/tasks?${params}`);
    const rows = data.tasks.map((t) => h("tr", { class: "clickable", "data-task": t.task_id, onclick: () => { location.hash = `#task/${encodeURIComponent(t.task_id)}`; } },
      cell(t.task_id), cell(t.state, false, `state-${t.state}`), cell(t.message_type), cell(t.attempts, true),
      cell(t.worker_id), cell(ago(t.updated_at))));
    target.replaceChildren(rows.length ? table(["task", "state", "type", "attempts", "worker", "updated"], rows, [3])
      : h("p", { class: "note" }, "no tasks match"));
    document.getElementById("page-info").textContent = `${taskOffset + 1}–${taskOffset + data.tasks.length}`;
    document.getElementById("next-page").disabled = data.tasks.length < PAGE;
    document.getElementById("prev-page").disabled = taskOffset === 0;
  } catch (error) {
    target.replaceChildren(h("p", { class: "error" }, error.message));
  }
}

function json(value) { return h("pre", {}, JSON.stringify(value, null, 2)); }

function currentTaskId() { return decodeURIComponent(location.hash.split("/").slice(1).join("/")); }

async function loadTask(taskId, quietly = false) {
  const target = document.getElementById("task-detail");
  const note = document.getElementById("task-message");
  const kept = quietly && note ? note.textContent : "";
  if (!quietly) target.replaceChildren(h("p", { class: "note" }, "loading…"));
  let task;
  try { task = await api(`/api/tasks/${encodeURIComponent(taskId)}`); } catch (error) {
    target.replaceChildren(h("p", { class: "error" }, error.message));
    return;
  }
  const final = ["succeeded", "failed", "dead", "cancelled"].includes(task.state);
  const cancel = h("button", { type: "button", id: "cancel-task", class: "danger", disabled: final ? "disabled" : null,
    onclick: async (event) => {
      event.target.disabled = true;
      try { await api(`/api/tasks/${encodeURIComponent(taskId)}/cancel`, { method: "POST" });
        message.textContent = "cancellation requested";
      } catch (error) { message.textContent = error.message; }
    } }, "Cancel task");
  const message = h("span", { id: "task-message", class: "note" }, kept);
  const fields = [["state", task.state], ["type", task.message_type], ["attempts", task.attempts], ["worker", task.worker_id],
    ["progress", task.progress !== undefined ? `${task.progress}% ${task.progress_message || ""}` : null],
    ["submitted", task.submitted_at], ["started", task.started_at], ["finished", task.finished_at], ["dead reason", task.dead_reason]];
  const parts = [h("h2", {}, `Task ${task.task_id} `, h("span", { class: `badge state-${task.state}`, id: "task-state" }, task.state)),
    h("p", {}, cancel, " ", message),
    h("dl", { class: "fields" }, fields.filter(([, v]) => v !== null && v !== undefined).map(([k, v]) => [h("dt", {}, k), h("dd", {}, String(v))])),
    h("h3", {}, "Timeline"),
    h("ol", { class: "timeline", id: "task-timeline" }, task.timeline.map((step) => h("li", { "data-event": step.event },
      h("strong", {}, step.event), step.at ? ` at ${step.at}` : "", step.attempt ? ` (attempt ${step.attempt})` : "",
      step.source === "result" || step.source === "dead_letter" ? ` [${step.source === "result" ? "result" : "dead letter"}]` : "",
      step.worker_id ? ` on ${step.worker_id}` : "",
      step.progress !== undefined ? ` ${step.progress}% ${step.message || ""}` : (step.message && !step.error ? ` — ${step.message}` : ""),
      step.error ? ` — ${step.error}` : "")))];
  const stored = task.task_payload;
  if (stored) {
    const check = stored.truncated ? "truncated: the stored copy keeps its first 64 KiB"
      : stored.payload_valid === true ? `valid ${stored.schema}`
      : stored.payload_valid === false ? `does not match its schema: ${stored.payload_errors.map((e) => `${e.path}: ${e.message}`).join("; ")}` : "";
    parts.push(h("h3", {}, "Payload"), h("p", { class: "note", id: "task-payload-check" }, check),
      h("div", { id: "task-payload" }, stored.payload !== undefined ? json(stored.payload) : h("pre", {}, stored.preview)));
  }
  if (task.result) parts.push(h("h3", {}, "Result"), json(task.result));
  if (task.error) parts.push(h("h3", {}, "Error"), h("p", { class: "error" }, `${task.error.type}: ${task.error.message}`),
    task.error.traceback ? h("pre", {}, task.error.traceback) : null);
  if (task.dead_letter) {
    const dl = task.dead_letter;
    parts.push(h("h3", {}, "Payload (from its dead letter)"), dl.payload !== undefined ? json(dl.payload) : h("pre", {}, dl.body_preview));
    if (dl.traceback) parts.push(h("h3", {}, "Traceback"), h("pre", {}, dl.traceback));
    parts.push(h("button", { type: "button", onclick: () => askConfirm(`Replay ${task.task_id}?`, () => replay({ task_ids: [task.task_id] })) }, "Replay"));
  }
  target.replaceChildren(...parts);
}

// --- dead letters ------------------------------------------------------------------------

function askConfirm(text, action) {
  pendingConfirm = action;
  document.getElementById("confirm-text").textContent = text + " ";
  document.getElementById("confirm").hidden = false;
  document.getElementById("confirm").scrollIntoView();
}

async function replay(selection) {
  const message = document.getElementById("dlq-message");
  try {
    const report = await api("/api/dead-letters/replay", { method: "POST", body: JSON.stringify({ ...selection, confirm: true }) });
    message.textContent = `replayed ${report.replayed.length}` + (report.failed.length ? `, ${report.failed.length} failed: ${report.failed.map((f) => f.error).join("; ")}` : "");
  } catch (error) { message.textContent = error.message; }
  loadDeadLetters();
}

async function purge(reason, expected) {
  const message = document.getElementById("dlq-message");
  try {
    const report = await api("/api/dead-letters/purge", { method: "POST", body: JSON.stringify({ reason, expected, confirm: true }) });
    message.textContent = `deleted ${report.deleted}`;
  } catch (error) { message.textContent = error.message; }
  loadDeadLetters();
}

let deadLetters = null;

async function loadDeadLetters() {
  const target = document.getElementById("dlq-groups");
  try { deadLetters = await api("/api/dead-letters"); } catch (error) {
    target.replaceChildren(h("p", { class: "error" }, error.message));
    return;
  }
  const groups = Object.entries(deadLetters.by_reason);
  if (!groups.length) { target.replaceChildren(h("p", { class: "note", id: "dlq-empty" }, `no dead letters in ${deadLetters.queue}`)); return; }
  target.replaceChildren(...groups.map(([reason, letters]) => h("article", { "data-reason": reason },
    h("h3", {}, `${reason} (${letters.length}) `,
      h("button", { type: "button", onclick: () => askConfirm(`Replay the ${letters.length} dead letters with reason ${reason}?`, () => replay({ reason })) }, "Replay these"), " ",
      h("button", { type: "button", class: "danger", onclick: () => askConfirm(`Delete the ${letters.length} dead letters with reason ${reason}? This cannot be undone.`, () => purge(reason, letters.length)) }, "Purge these")),
    table(["task", "type", "error", "attempts", "age", "payload", ""], letters.map((dl) => h("tr", { "data-task": dl.task_id },
      cell(dl.task_id), cell(dl.message_type), cell(dl.error), cell(dl.attempts, true), cell(dl.age_seconds !== null ? `${dl.age_seconds.toFixed(0)} s` : null),
      h("td", {}, dl.payload !== undefined ? h("code", {}, JSON.stringify(dl.payload).slice(0, 120)) : (dl.body_preview || "").slice(0, 120),
        dl.payload_valid === false ? h("span", { class: "error" }, " (does not match its schema)") : null),
      h("td", {}, h("button", { type: "button", class: "replay-one", onclick: () => askConfirm(`Replay ${dl.task_id}?`, () => replay({ task_ids: [dl.task_id] })) }, "Replay"))))))));
}

// --- topology ----------------------------------------------------------------------------

async function loadTopology() {
  const topo = await api("/api/topology");
  const rowHeight = 22, left = 150, right = 620, width = 900;
  const height = Math.max(topo.exchanges.length, topo.queues.length) * rowHeight + 30;
  const ex = Object.fromEntries(topo.exchanges.map((e, i) => [e.name, 20 + i * rowHeight * Math.max(1, topo.queues.length / Math.max(1, topo.exchanges.length))]));
  const qu = Object.fromEntries(topo.queues.map((q, i) => [q.name, 20 + i * rowHeight]));
  const svg = s("svg", { viewBox: `0 0 ${width} ${height}`, width: "100%", id: "topology-svg" });
  for (const edge of topo.edges) {
    const fromQueue = edge.kind === "dead_letters";
    const y1 = fromQueue ? qu[edge.from] : ex[edge.from];
    const y2 = fromQueue ? ex[edge.to] : qu[edge.to];
    if (y1 === undefined || y2 === undefined) continue;
    const x1 = fromQueue ? right : left, x2 = fromQueue ? left : right;
    const mid = (x1 + x2) / 2;
    svg.append(s("path", { d: `M${x1},${y1} C${mid},${y1} ${mid},${y2} ${x2},${y2}`, fill: "none",
      stroke: fromQueue ? "#b3261e" : "#8da2c9", "stroke-dasharray": fromQueue ? "4 3" : "", "data-edge": `${edge.from}->${edge.to}` },
    ));
    svg.lastChild.append(s("title", {}, `${edge.from} → ${edge.to} ${edge.key}`));
  }
  for (const e of topo.exchanges) {
    svg.append(s("rect", { x: 10, y: ex[e.name] - 9, width: left - 12, height: 18, rx: 4, fill: "#e7ecf7", "data-exchange": e.name }));
    svg.append(s("text", { x: 16, y: ex[e.name] + 4, fill: "#1d2430" }, `${e.name} (${e.type})`));
  }
  for (const q of topo.queues) {
    const colour = q.kind === "delay" ? "#fff4e5" : q.kind === "stream" ? "#eef7ee" : "#f0f2f5";
    svg.append(s("rect", { x: right, y: qu[q.name] - 9, width: width - right - 10, height: 18, rx: 4, fill: colour, "data-queue": q.name }));
    svg.append(s("text", { x: right + 6, y: qu[q.name] + 4, fill: "#1d2430" }, q.name + (q.ttl_ms ? ` (TTL ${q.ttl_ms} ms)` : q.kind === "stream" ? " (stream)" : "")));
  }
  document.getElementById("topology-diagram").replaceChildren(svg);
}

// --- submit form from the JSON Schema ------------------------------------------------------

let operations = [];

function resolve(schema, root) {
  while (schema && schema.$ref) schema = root.$defs[schema.$ref.split("/").pop()];
  if (schema && schema.anyOf) {
    const real = schema.anyOf.filter((option) => option.type !== "null");
    if (real.length === 1) return { ...resolve(real[0], root), nullable: true, default: schema.default, description: schema.description };
  }
  return schema || {};
}

function fieldFor(name, schema, root, required) {
  const spec = resolve(schema, root);
  const id = `field-${name}`;
  const label = h("label", { for: id }, `${name}${required ? " *" : ""}`, spec.description ? h("span", { class: "note" }, ` — ${spec.description}`) : null);
  let input;
  if (spec.type === "object" && spec.properties) {
    const box = h("fieldset", { "data-name": name, "data-kind": "object" }, h("legend", {}, name));
    for (const [key, sub] of Object.entries(spec.properties)) box.append(fieldFor(`${name}.${key}`, sub, root, (spec.required || []).includes(key)));
    return box;
  }
  if (spec.enum) input = h("select", { id, name }, required ? null : h("option", { value: "" }, "–"), spec.enum.map((v) => h("option", { value: v }, v)));
  else if (spec.type === "boolean") input = h("select", { id, name }, h("option", { value: "" }, "–"), h("option", { value: "true" }, "true"), h("option", { value: "false" }, "false"));
  else if (spec.type === "integer" || spec.type === "number") input = h("input", { id, name, type: "number", step: spec.type === "integer" ? "1" : "any" });
  else if (spec.type === "array") input = h("input", { id, name, placeholder: "comma-separated" });
  else if (spec.type === "string") input = h("input", { id, name });
  else input = h("textarea", { id, name, placeholder: "JSON" });
  input.dataset.kind = spec.type === "array" ? `array:${resolve(spec.items, root).type || "string"}` : (spec.type || "json");
  if (spec.default !== undefined && spec.default !== null) input.placeholder = `default: ${JSON.stringify(spec.default)}`;
  return h("div", { class: "field", "data-name": name }, label, input, h("div", { class: "error", id: `error-${name}` }));
}

function convert(kind, raw) {
  if (kind === "integer" || kind === "number") { const n = Number(raw); if (raw.trim() === "" || Number.isNaN(n)) throw new Error("must be a number"); return n; }
  if (kind === "boolean") return raw === "true";
  if (kind.startsWith("array:")) {
    const itemKind = kind.slice(6);
    return raw.split(",").map((part) => part.trim()).filter((part) => part !== "").map((part) => convert(itemKind, part));
  }
  if (kind === "json") return JSON.parse(raw);
  return raw;
}

function checkValue(spec, value) {
  const problems = [];
  if (typeof value === "number") {
    if (spec.type === "integer" && !Number.isInteger(value)) problems.push("must be a whole number");
    if (spec.minimum !== undefined && value < spec.minimum) problems.push(`must be at least ${spec.minimum}`);
    if (spec.maximum !== undefined && value > spec.maximum) problems.push(`must be at most ${spec.maximum}`);
  }
  if (typeof value === "string") {
    if (spec.minLength !== undefined && value.length < spec.minLength) problems.push(`needs at least ${spec.minLength} characters`);
    if (spec.maxLength !== undefined && value.length > spec.maxLength) problems.push(`at most ${spec.maxLength} characters`);
    if (spec.pattern && !new RegExp(spec.pattern, "u").test(value)) problems.push(`must match ${spec.pattern}`);
  }
  if (Array.isArray(value)) {
    if (spec.minItems !== undefined && value.length < spec.minItems) problems.push(`needs at least ${spec.minItems} items`);
    if (spec.maxItems !== undefined && value.length > spec.maxItems) problems.push(`at most ${spec.maxItems} items`);
  }
  return problems;
}

function collect(schema, root, prefix, errors) {
  const result = {};
  for (const [key, sub] of Object.entries(schema.properties || {})) {
    const name = prefix ? `${prefix}.${key}` : key;
    const spec = resolve(sub, root);
    const required = (schema.required || []).includes(key);
    if (spec.type === "object" && spec.properties) {
      const inner = collect(spec, root, name, errors);
      if (Object.keys(inner).length || required) result[key] = inner;
      continue;
    }
    const input = document.getElementById(`field-${name}`);
    const raw = input.value;
    if (raw === "") { if (required) errors[name] = ["is required"]; continue; }
    try {
      const value = convert(input.dataset.kind, raw);
      const problems = checkValue(spec, value);
      if (Array.isArray(value) && spec.items) value.forEach((item) => problems.push(...checkValue(resolve(spec.items, root), item)));
      if (problems.length) errors[name] = problems; else result[key] = value;
    } catch (error) { errors[name] = [error.message]; }
  }
  return result;
}

function showErrors(errors) {
  document.querySelectorAll("#submit-form .error").forEach((node) => { node.textContent = ""; });
  for (const [name, problems] of Object.entries(errors)) {
    const node = document.getElementById(`error-${name}`) || document.getElementById("submit-result");
    node.textContent = `${name}: ${problems.join("; ")}`;
  }
}

function buildForm() {
  const op = operations.find((o) => o.message_type === document.getElementById("submit-operation").value);
  const form = document.getElementById("submit-form");
  if (!op) { form.replaceChildren(); return; }
  const schema = op.schema;
  form.replaceChildren(...Object.entries(schema.properties || {}).map(([key, sub]) => fieldFor(key, sub, schema, (schema.required || []).includes(key))),
    h("button", { type: "submit", id: "submit-button" }, `Submit ${op.message_type}`));
}

async function submitForm(event) {
  event.preventDefault();
  const op = operations.find((o) => o.message_type === document.getElementById("submit-operation").value);
  const errors = {};
  const payload = collect(op.schema, op.schema, "", errors);
  const result = document.getElementById("submit-result");
  result.replaceChildren();
  showErrors(errors);
  if (Object.keys(errors).length) { result.append(h("p", { class: "error", id: "submit-invalid" }, "fix the fields above: nothing was published")); return; }
  try {
    const done = await api("/api/submit", { method: "POST", body: JSON.stringify({ message_type: op.message_type, payload }) });
    result.append(h("p", { id: "submitted" }, "submitted ", h("a", { href: `#task/${encodeURIComponent(done.task_id)}` }, done.task_id)));
  } catch (error) {
    const serverErrors = {};
    for (const item of (error.body && error.body.errors) || []) (serverErrors[item.path] = serverErrors[item.path] || []).push(item.message);
    showErrors(serverErrors);
    result.append(h("p", { class: "error", id: "submit-invalid" }, error.message));
  }
}

async function loadOperations() {
  operations = await api("/api/operations");
  const select = document.getElementById("submit-operation");
  select.replaceChildren(...operations.map((o) => h("option", { value: o.message_type }, o.message_type)));
  buildForm();
}

// --- views -------------------------------------------------------------------------------

function currentView() {
  const name = (location.hash || "#overview").slice(1).split("/")[0];
  return ["overview", "tasks", "task", "dlq", "topology", "submit"].includes(name) ? name : "overview";
}

function showView() {
  const view = currentView();
  document.querySelectorAll(".view").forEach((node) => node.classList.toggle("active", node.id === `view-${view}`));
  if (view === "tasks") loadTasks();
  if (view === "task") loadTask(currentTaskId());
  if (view === "dlq") loadDeadLetters();
  if (view === "topology") loadTopology().catch((error) => { document.getElementById("topology-diagram").textContent = error.message; });
  if (view === "submit" && !operations.length) loadOperations().catch((error) => { document.getElementById("submit-result").textContent = error.message; });
}

document.addEventListener("DOMContentLoaded", () => {
  const states = document.querySelector("#task-filters select[name=state]");
  STATES.forEach((state) => states.append(h("option", { value: state }, state)));
  document.getElementById("task-filters").addEventListener("submit", (event) => { event.preventDefault(); taskOffset = 0; loadTasks(); });
  document.getElementById("next-page").addEventListener("click", () => { taskOffset += PAGE; loadTasks(); });
  document.getElementById("prev-page").addEventListener("click", () => { taskOffset = Math.max(0, taskOffset - PAGE); loadTasks(); });
  document.getElementById("dlq-refresh").addEventListener("click", loadDeadLetters);
  document.getElementById("dlq-replay-all").addEventListener("click", () => askConfirm(`Replay all ${deadLetters ? deadLetters.total : ""} dead letters?`, () => replay({ all: true })));
  document.getElementById("dlq-purge-all").addEventListener("click", () => askConfirm(`Delete all ${deadLetters ? deadLetters.total : ""} dead letters? This cannot be undone.`, () => purge(null, deadLetters ? deadLetters.total : 0)));
  document.getElementById("confirm-yes").addEventListener("click", () => { document.getElementById("confirm").hidden = true; const action = pendingConfirm; pendingConfirm = null; if (action) action(); });
  document.getElementById("confirm-no").addEventListener("click", () => { document.getElementById("confirm").hidden = true; pendingConfirm = null; });
  document.getElementById("submit-operation").addEventListener("change", buildForm);
  document.getElementById("submit-form").addEventListener("submit", submitForm);
  window.addEventListener("hashchange", showView);
  showView();
  connectLive();
});
