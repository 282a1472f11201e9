// The live rainbow: polls /status and redraws the page from it.
//
// Every value from the cluster reaches the DOM as a text node or through setAttribute on elements
// built here, never as HTML to parse, so an annotation holding "<script>" shows as text.
"use strict";

const POLL_MS = 1000;
const TIMELINE_LENGTH = 8;

// --- building elements -------------------------------------------------------------------------

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") el.className = value;
    else el.setAttribute(key, String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

function svg(tag, attrs) {
  const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [key, value] of Object.entries(attrs || {})) el.setAttribute(key, String(value));
  return el;
}

// --- formatting --------------------------------------------------------------------------------

function duration(seconds) {
  if (seconds === null || seconds === undefined || !isFinite(seconds)) return "-";
  let s = Math.floor(Math.abs(seconds));
  const sign = seconds < 0 ? "-" : "";
  const units = [["d", 86400], ["h", 3600], ["m", 60], ["s", 1]];
  const parts = [];
  for (const [unit, size] of units) {
    const n = Math.floor(s / size);
    s -= n * size;
    if (n || parts.length) parts.push([n, unit]);
  }
  if (!parts.length) return "0s";
  const shown = parts.slice(0, 2).filter((p, i) => i === 0 || p[0] !== 0);
  return sign + shown.map(([n, unit]) => n + unit).join("");
}

function count(value) {
  if (value === null || value === undefined) return "?";
  return Number.isInteger(value) ? String(value) : String(Math.round(value * 100) / 100);
}

function clock(iso) {
  if (!iso) return "-";
  const date = new Date(iso);
  return isNaN(date) ? String(iso) : date.toLocaleTimeString();
}

// A CSS color for a color's name: its hex digits when it is hex, a CSS color name when the
// browser knows it, else nothing (the swatch is then drawn hatched as "not a color").
function paint(name) {
  const text = String(name || "");
  if (/^[0-9a-f]{6}$|^[0-9a-f]{3}$/i.test(text)) return "#" + text;
  if (/^[a-z]+$/i.test(text) && CSS.supports("color", text)) return text;
  return null;
}

function swatch(name) {
  const el = h("span", { class: "swatch", "aria-hidden": "true" });
  const css = paint(name);
  if (css) el.style.backgroundColor = css;
  else el.classList.add("nocolor");
  return el;
}

// Connection samples, [unix time, connections] oldest first, as a small line; the last point is
// drawn as a dot.
function sparkline(samples) {
  const points = (samples || [])
    .filter((p) => Array.isArray(p) && isFinite(p[0]) && isFinite(p[1]))
    .map(([t, value]) => ({ t, value }));
  if (points.length < 2) return null;
  const width = 96, height = 22, pad = 2;
  const times = points.map((p) => p.t), values = points.map((p) => p.value);
  const t0 = Math.min(...times), t1 = Math.max(...times);
  const top = Math.max(1, ...values);
  const x = (t) => pad + ((t - t0) / Math.max(1e-9, t1 - t0)) * (width - 2 * pad);
  const y = (v) => height - pad - (v / top) * (height - 2 * pad);
  const line = points.map((p) => `${x(p.t).toFixed(1)},${y(p.value).toFixed(1)}`).join(" ");
  const el = svg("svg", { class: "spark", viewBox: `0 0 ${width} ${height}`, width, height,
    role: "img", "aria-label": `connections, last ${points.length} samples, peak ${count(top)}` });
  el.append(svg("polyline", { points: line }));
  const last = points[points.length - 1];
  el.append(svg("circle", { cx: x(last.t).toFixed(1), cy: y(last.value).toFixed(1), r: 2 }));
  return el;
}

// --- reading /status ---------------------------------------------------------------------------
// All knowledge of the document's field names (camelCase, as the README documents them) is here:
// the rest of the page reads `view`.

function readStatus(doc) {
  const plan = doc.plan || null;
  const cycle = doc.cycle || null;
  const settings = doc.settings || {};
  const policy = doc.policy || {};
  return {
    identity: doc.identity || "?",
    leader: !!doc.leader,
    leaderElect: !!settings.leaderElect,
    ready: !!doc.ready,
    dryRun: !!(plan && plan.dryRun) || !!settings.dryRun,
    paused: !!(plan && plan.paused),
    policyValid: policy.valid !== false,
    policyErrors: policy.errors || [],
    policySource: policy.source || "",
    cycle: cycle && {
      number: cycle.number,
      startedAt: cycle.startedAt,
      duration: cycle.durationSeconds,
      ok: cycle.ok !== false,
      error: cycle.error || null,
    },
    prometheusErrors: cycle ? cycle.prometheusErrors || [] : [],
    now: plan ? plan.now : null,
    summary: plan ? plan.summary : "",
    apps: plan ? plan.apps || [] : [],
    warnings: plan ? plan.warnings || [] : [],
    recent: doc.recentActions || [],
  };
}

// --- drawing -----------------------------------------------------------------------------------

function banner(kind, title, ...detail) {
  return h("div", { class: `banner ${kind}`, role: "status", "data-banner": kind },
    h("strong", {}, title), detail.length ? " " : null, ...detail);
}

function drawBanners(view) {
  const out = [];
  if (view.leaderElect && !view.leader) {
    out.push(banner("not-leader", "Not the leader.",
      `${view.identity} is a standby replica: it plans but does not act. The leader's page shows what is done.`));
  }
  if (view.dryRun) {
    out.push(banner("dry-run", "Dry run.", "Actions are planned and shown, never applied."));
  }
  if (view.paused) {
    out.push(banner("paused", "Paused.", "The policy pauses scale-downs and deletes; colors are still watched and stamped."));
  }
  if (view.prometheusErrors.length) {
    out.push(banner("prometheus", "Prometheus is failing.",
      "Connections are unknown, so nothing is scaled down or deleted on them.",
      h("ul", {}, view.prometheusErrors.map((f) =>
        h("li", {}, h("code", {}, f.query), ` (${f.cause}): `, f.message)))));
  }
  if (!view.policyValid) {
    out.push(banner("policy", "The policy is invalid;", "the last good one stays in force.",
      h("ul", {}, view.policyErrors.map((e) => h("li", {}, e)))));
  }
  if (view.cycle && !view.cycle.ok && view.cycle.error) {
    out.push(banner("cycle", "The last cycle failed:", view.cycle.error));
  }
  if (!view.ready) {
    out.push(banner("not-ready", "Not ready.", "The caches are syncing or no valid policy is loaded yet."));
  }
  return out;
}

function nextAction(color, app) {
  if (app.blocked) return h("span", { class: "blocked-cell" }, "blocked: ", app.blocked);
  const actions = color.actions || [];
  const disruptive = actions.filter((a) => a.kind !== "annotate");
  const shown = disruptive[0] || actions[0];
  if (shown) {
    return h("span", { class: `action ${shown.kind}` },
      h("b", {}, shown.kind), " ", shown.reason, shown.message ? h("div", { class: "muted small" }, shown.message) : null);
  }
  if (color.held) return h("span", { class: "held" }, "held: ", color.held);
  return h("span", { class: "muted" }, "-");
}

function connectionsCell(color) {
  const c = color.connections || {};
  const unevaluated = color.replicas === 0 && (c.value === null || c.value === undefined);
  const text = unevaluated ? "-" : c.value === null || c.value === undefined ? "unknown" : count(c.value);
  const cell = h("td", { class: "num", "data-field": "connections" },
    h("span", { class: unevaluated ? "muted" : c.value === null ? "unknown" : "" }, text));
  const line = sparkline(color.history);
  if (line) cell.append(line);
  if (c.value === null && !unevaluated && c.cause) cell.append(h("div", { class: "muted small" }, c.cause));
  return cell;
}

// The drain forecast: an ETA to the floor, or why there is none. It never decides anything.
function forecastCell(color) {
  const f = color.forecast;
  if (!f) return h("td", { "data-field": "forecast", class: "muted" }, "-");
  const detail = `${f.points} samples` + (f.method ? `, ${f.method} fit` : "") + `, floor ${f.floor}`;
  if (f.etaSeconds === null || f.etaSeconds === undefined) {
    return h("td", { "data-field": "forecast", class: "muted small", title: detail }, f.reason || "-");
  }
  return h("td", { "data-field": "forecast", title: detail },
    "~" + duration(f.etaSeconds),
    f.late ? h("div", { class: "small held" }, "maxRetiredAge comes first: connections will be cut") : null);
}

function colorRow(color, app) {
  const protectedColor = color.state === "protected";
  return h("tr", { "data-color": color.color, "data-state": color.state },
    h("td", { class: "colorname" }, swatch(color.color), h("code", {}, color.color),
      // A Rollout color names its ReplicaSet and says so; a Deployment color its Deployment.
      h("div", { class: "muted small", "data-field": "kind" },
        color.kind && color.kind !== "Deployment" ? `${color.deployment} (${color.kind})` : color.deployment)),
    h("td", {}, h("span", { class: `state s-${color.state}`, "data-field": "state" }, color.state),
      // What holds it, by name: rainbowd.io/protect, or rainbowd.io/hold-until and its reason.
      protectedColor ? h("div", { class: "small", "data-field": "guard" }, (color.guards || []).join("; ")) : null),
    h("td", { class: "num", "data-field": "replicas" }, `${color.readyReplicas ?? 0}/${color.replicas}`),
    connectionsCell(color),
    h("td", { "data-field": "retired-for" }, duration(color.retiredFor)),
    forecastCell(color),
    h("td", { "data-field": "action" }, nextAction(color, app)),
    h("td", { class: "note", "data-field": "note" }, color.note || ""));
}

function timeline(entries) {
  if (!entries.length) return h("p", { class: "muted small timeline-empty" }, "no actions yet");
  return h("ol", { class: "timeline" }, entries.map((e) =>
    h("li", { class: `outcome-${e.outcome}` },
      h("time", {}, clock(e.at)), " ", swatch(e.color), h("code", {}, e.color), " ",
      h("b", {}, e.kind), " ", e.reason, " ",
      h("span", { class: `outcome o-${e.outcome}` }, e.outcome),
      e.error ? h("span", { class: "error" }, " ", e.error) : null,
      e.message ? h("div", { class: "muted small" }, e.message) : null)));
}

function appCard(app, recent) {
  const mine = recent.filter((e) => e.namespace === app.namespace && e.app === app.app)
    .slice(-TIMELINE_LENGTH).reverse();
  return h("article", { class: "app", "data-app": `${app.namespace}/${app.app}` },
    h("h2", {}, app.app, h("span", { class: "muted" }, ` in ${app.namespace}`),
      app.rule ? h("span", { class: "rule muted" }, ` rule ${app.rule}`) : null),
    app.blocked ? banner("blocked", `Blocked: ${app.blocked}.`, app.message || "") : null,
    h("div", { class: "rainbow", "aria-hidden": "true" },
      (app.colors || []).map((c) => {
        const band = swatch(c.color);
        band.classList.add(`s-${c.state}`);
        return band;
      })),
    h("table", {},
      h("thead", {}, h("tr", {}, ["color", "state", "replicas", "connections", "retired for",
        "drained in", "next action", "note"].map((t) => h("th", {}, t)))),
      h("tbody", {}, (app.colors || []).map((c) => colorRow(c, app)))),
    h("h3", {}, "Recent actions"),
    timeline(mine));
}

function draw(view) {
  const c = view.cycle;
  document.getElementById("daemon").replaceChildren(
    h("span", {}, view.identity),
    " · ", h("span", { "data-field": "leader" }, view.leader ? "leader" : "standby"),
    " · ", c ? `cycle #${c.number} at ${clock(c.startedAt)} took ${Math.round((c.duration || 0) * 1000)} ms` : "no cycle yet",
    view.summary ? h("div", { class: "summary" }, view.summary) : null);
  document.getElementById("banners").replaceChildren(...drawBanners(view));
  const apps = view.apps.map((app) => appCard(app, view.recent));
  document.getElementById("apps").replaceChildren(
    ...(apps.length ? apps : [h("p", { class: "muted" }, c ? "no managed apps" : "waiting for the first cycle")]));
  document.getElementById("warnings").replaceChildren(...(view.warnings.length
    ? [h("h3", {}, "Warnings"), h("ul", { class: "warnings" }, view.warnings.map((w) => h("li", {}, w)))]
    : []));
}

// --- polling -----------------------------------------------------------------------------------

let failures = 0;

async function poll() {
  try {
    const response = await fetch("/status", { cache: "no-store", headers: { Accept: "application/json" } });
    if (!response.ok) throw new Error(`/status answered HTTP ${response.status}`);
    const view = readStatus(await response.json());
    failures = 0;
    document.body.classList.remove("stale");
    draw(view);
    document.body.dataset.updated = String(Date.now());
  } catch (error) {
    failures += 1;
    document.body.classList.add("stale");
    const lost = banner("unreachable", "Cannot reach the daemon;", `${error.message || error}. Retrying.`);
    const banners = document.getElementById("banners");
    banners.querySelector("[data-banner=unreachable]")?.remove();
    banners.prepend(lost);
  } finally {
    setTimeout(poll, failures ? Math.min(10000, POLL_MS * 2 ** failures) : POLL_MS);
  }
}

poll();
