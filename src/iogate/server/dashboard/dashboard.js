// iogate dashboard: polls this gateway's own JSON routes every second and renders them.
// Sources: GET /health (version), GET /v1/stats (resources, cache, slow operations,
// insights) and GET /v1/alerts (rules and what fires); the last two need the admin
// scope once keys are configured. Hand-written, no dependencies, no build step; every
// value is put into the page as text (textContent), never as HTML.
"use strict";

(function () {
  const POLL_MS = 1000;
  const TIMEOUT_MS = 2500;
  const KEY_STORE = "iogate.admin_key";
  const $ = (id) => document.getElementById(id);

  let key = sessionStorage.getItem(KEY_STORE);
  let timer = null;

  function el(tag, text, cls) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (cls) node.className = cls;
    return node;
  }

  function fmt(n, digits) {
    if (n === null || n === undefined || Number.isNaN(n)) return "—";
    return Number(n).toFixed(digits);
  }

  function pct(share) {
    if (share === null || share === undefined) return "—";
    return (share * 100).toFixed(share > 0 && share < 0.01 ? 2 : 1) + " %";
  }

  function duration(s) {
    s = Math.floor(s);
    const d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600);
    const m = Math.floor((s % 3600) / 60), r = s % 60;
    if (d) return d + "d " + h + "h";
    if (h) return h + "h " + m + "m";
    if (m) return m + "m " + r + "s";
    return r + "s";
  }

  async function getJson(path) {
    const headers = { Accept: "application/json" };
    if (key) headers.Authorization = "Bearer " + key;
    const ctl = new AbortController();
    const t = setTimeout(() => ctl.abort(), TIMEOUT_MS);
    try {
      const resp = await fetch(path, { headers, signal: ctl.signal, cache: "no-store" });
      const body = await resp.json().catch(() => null);
      return { status: resp.status, body };
    } finally {
      clearTimeout(t);
    }
  }

  function setStatus(state, text) {
    const s = $("status");
    s.dataset.state = state;
    s.textContent = text;
  }

  function askForKey(message) {
    $("main").hidden = true;
    $("login").hidden = false;
    $("forget").hidden = true;
    $("login-error").textContent = message || "";
    setStatus("locked", "admin key needed");
    $("key").focus();
  }

  // ---- resources --------------------------------------------------------

  const STATE_LABEL = {
    closed: "closed", open: "open", half_open: "half-open",
    forced_open: "open", disabled: "disabled",
  };

  function breakerCell(cb) {
    const td = el("td");
    if (!cb) {
      td.appendChild(el("span", "none", "badge state-none"));
      return td;
    }
    const badge = el("span", STATE_LABEL[cb.state] || cb.state, "badge state-" + cb.state);
    badge.dataset.state = cb.state;
    badge.dataset.role = "breaker";
    td.appendChild(badge);
    if (cb.state === "forced_open") td.appendChild(el("span", "forced", "tag"));
    const moves = Object.entries(cb.transitions || {});
    const detail = [];
    if (cb.trips) detail.push(cb.trips + (cb.trips === 1 ? " trip" : " trips"));
    if (cb.not_permitted) detail.push(cb.not_permitted + " refused");
    for (const [move, n] of moves) detail.push(move.replace("->", " → ") + " ×" + n);
    if (detail.length) td.appendChild(el("div", detail.join(" · "), "muted small"));
    return td;
  }

  function lastMinute(ops) {
    let calls = 0, errors = 0;
    for (const op of ops) { calls += op.last_minute.calls; errors += op.last_minute.errors; }
    return { calls, errors };
  }

  function resourceRow(name, r, seconds) {
    const tr = el("tr", null, "resource");
    tr.dataset.resource = name;
    const ops = Object.entries(r.operations || {});
    const lm = lastMinute(ops.map(([, op]) => op));
    const active = ops.filter(([, op]) => op.last_minute.calls > 0);
    // p50/p99 are per operation: one active operation gives the resource's own; with
    // several, the rows below give each and the resource row shows the slowest p99.
    const single = active.length === 1 ? active[0][1].last_minute.latency_ms : null;
    const p99 = active.length ? Math.max(...active.map(([, op]) => op.last_minute.latency_ms.p99)) : null;
    tr.appendChild(el("td", name, "name"));
    tr.appendChild(el("td", r.kind, "kind"));
    tr.appendChild(breakerCell(r.circuit_breaker));
    tr.appendChild(el("td", fmt(lm.calls / seconds, 2), "num"));
    const errTd = el("td", lm.calls ? pct(lm.errors / lm.calls) : "—", "num");
    if (lm.errors) errTd.classList.add("bad");
    tr.appendChild(errTd);
    tr.appendChild(el("td", single ? fmt(single.p50, 2) : "—", "num"));
    tr.appendChild(el("td", p99 === null ? "—" : fmt(p99, 2), "num"));
    tr.appendChild(el("td", r.in_flight ?? "—", "num"));
    const pool = r.pool;
    tr.appendChild(el("td", pool
      ? pool.in_use + " / " + pool.idle + " / " + pool.waiting + " (of " + pool.max_size + ")"
      : "—", pool && pool.waiting ? "bad" : ""));
    const rl = r.rate_limiter;
    tr.appendChild(el("td", rl ? rl.waited + " / " + rl.rejected : "—", rl && rl.rejected ? "bad" : ""));
    tr.appendChild(el("td", r.retries ?? "—", "num"));
    const rows = [tr];
    if (active.length > 1) {
      for (const [opName, op] of active) {
        const sub = el("tr", null, "operation");
        sub.appendChild(el("td", "↳ " + opName, "name"));
        sub.appendChild(el("td", ""));
        sub.appendChild(el("td", ""));
        sub.appendChild(el("td", fmt(op.last_minute.calls / seconds, 2), "num"));
        sub.appendChild(el("td", pct(op.last_minute.errors / op.last_minute.calls), "num"));
        sub.appendChild(el("td", fmt(op.last_minute.latency_ms.p50, 2), "num"));
        sub.appendChild(el("td", fmt(op.last_minute.latency_ms.p99, 2), "num"));
        for (let i = 0; i < 4; i++) sub.appendChild(el("td", ""));
        rows.push(sub);
      }
    }
    return rows;
  }

  function renderResources(stats) {
    const seconds = Math.max(1, Math.min(60, stats.uptime_s));
    const body = $("resources").tBodies[0];
    const rows = [];
    for (const [name, r] of Object.entries(stats.resources)) rows.push(...resourceRow(name, r, seconds));
    if (!rows.length) {
      const tr = el("tr");
      const td = el("td", "no resource is configured", "muted");
      td.colSpan = 11;
      tr.appendChild(td);
      rows.push(tr);
    }
    body.replaceChildren(...rows);
  }

  // ---- alerts, cache, insights, slow operations --------------------------

  function renderAlerts(alerts) {
    const box = $("alerts");
    if (!alerts) { box.replaceChildren(el("p", "unavailable", "muted")); return; }
    if (!alerts.rules.length) {
      box.replaceChildren(el("p", "No alert rule is configured ([[observability.alerts]]).", "muted"));
      return;
    }
    const list = el("ul", null, "plain");
    for (const rule of alerts.rules) {
      const firing = alerts.firing.filter((f) => f.rule === rule.rule);
      const li = el("li");
      li.dataset.rule = rule.rule;
      li.appendChild(el("span", firing.length ? "firing" : "ok", "badge " + (firing.length ? "state-open" : "state-closed")));
      const bounds = [];
      if (rule.max_error_rate !== null) bounds.push("error rate > " + pct(rule.max_error_rate));
      if (rule.max_p99_s !== null) bounds.push("p99 > " + fmt(rule.max_p99_s * 1000, 0) + " ms");
      li.appendChild(el("span", " " + (rule.resource === "*" ? "every resource" : rule.resource) + ": " +
        bounds.join(" or ") + " over " + rule.window + " (≥ " + rule.min_calls + " calls)"));
      if (firing.length) {
        li.appendChild(el("div", firing.map((f) => f.resource + " " + f.condition.replace("_", " ")).join(", "), "bad small"));
      }
      list.appendChild(li);
    }
    box.replaceChildren(list, el("p", "evaluated every " + alerts.interval_s + " s", "muted small"));
  }

  function renderCache(cache) {
    const body = $("cache").tBodies[0];
    const rows = [];
    for (const [tier, t] of [["memory (L1)", cache.l1], ["redis (L2)", cache.l2]]) {
      if (!t) continue;
      const tr = el("tr");
      tr.appendChild(el("td", tier));
      tr.appendChild(el("td", t.hits + t.misses ? pct(t.hit_rate) : "—", "num"));
      tr.appendChild(el("td", t.hits, "num"));
      tr.appendChild(el("td", t.misses, "num"));
      tr.appendChild(el("td", t.entries ?? "—", "num"));
      tr.appendChild(el("td", t.evictions ?? "—", "num"));
      rows.push(tr);
    }
    body.replaceChildren(...rows);
    $("cache-extra").textContent = "overall hit rate " + pct(cache.hit_rate) + " · loads " + cache.loads +
      " · coalesced " + cache.coalesced + " · invalidations " + cache.invalidations;
  }

  function renderInsights(insights) {
    const list = $("insights");
    if (!insights.length) { list.replaceChildren(el("li", "Nothing needs attention.", "muted")); return; }
    list.replaceChildren(...insights.map((i) => {
      const what = i.kind === "slow"
        ? "p99 " + fmt(i.value, 1) + " ms above " + fmt(i.threshold, 0) + " ms"
        : "success rate " + pct(i.value) + " below " + pct(i.threshold);
      return el("li", i.resource + " · " + i.operation + ": " + what + " (" + i.calls + " calls, last 5 min)", "warn");
    }));
  }

  function renderSlow(slow) {
    const body = $("slow").tBodies[0];
    if (!slow.length) {
      const tr = el("tr");
      const td = el("td", "None slower than the slow threshold.", "muted");
      td.colSpan = 6;
      tr.appendChild(td);
      body.replaceChildren(tr);
      return;
    }
    body.replaceChildren(...slow.slice(0, 20).map((s) => {
      const tr = el("tr");
      tr.appendChild(el("td", new Date(s.at * 1000).toLocaleTimeString()));
      tr.appendChild(el("td", s.resource));
      tr.appendChild(el("td", s.operation));
      tr.appendChild(el("td", s.outcome, s.outcome === "ok" ? "" : "bad"));
      tr.appendChild(el("td", fmt(s.duration_ms, 1), "num"));
      tr.appendChild(el("td", s.statement || "", "mono"));
      return tr;
    }));
  }

  // ---- polling -----------------------------------------------------------

  async function poll() {
    timer = null;
    try {
      const [stats, alerts] = await Promise.all([getJson("/v1/stats"), getJson("/v1/alerts")]);
      if (stats.status === 401 || stats.status === 403) {
        const detail = (stats.body && stats.body.detail) || "HTTP " + stats.status;
        const hadKey = Boolean(key);
        if (hadKey) { sessionStorage.removeItem(KEY_STORE); key = null; }
        askForKey(hadKey ? "That key was refused: " + detail : "");
        return; // resumes when a key is entered
      }
      if (stats.status !== 200 || !stats.body) throw new Error("GET /v1/stats answered " + stats.status);
      $("login").hidden = true;
      $("main").hidden = false;
      $("forget").hidden = !key;
      $("uptime").textContent = "up " + duration(stats.body.uptime_s);
      renderResources(stats.body);
      renderAlerts(alerts.status === 200 ? alerts.body : null);
      renderCache(stats.body.cache);
      renderInsights(stats.body.insights);
      renderSlow(stats.body.slow_operations);
      setStatus("live", "live · " + new Date().toLocaleTimeString());
    } catch (err) {
      setStatus("error", "no answer: " + (err && err.name === "AbortError" ? "timed out" : err.message));
    }
    timer = setTimeout(poll, POLL_MS);
  }

  function restart() {
    if (timer !== null) clearTimeout(timer);
    poll();
  }

  document.addEventListener("DOMContentLoaded", () => {
    getJson("/health").then((h) => {
      if (h.body && h.body.version) $("version").textContent = "v" + h.body.version;
    }).catch(() => {});
    $("login").addEventListener("submit", (ev) => {
      ev.preventDefault();
      key = $("key").value.trim();
      $("key").value = "";
      if (key) sessionStorage.setItem(KEY_STORE, key);
      $("login").hidden = true;
      restart();
    });
    $("forget").addEventListener("click", () => {
      sessionStorage.removeItem(KEY_STORE);
      key = null;
      restart();
    });
    poll();
  });
})();
