// tproxy dashboard: polls the monitoring JSON API and draws it. No framework, no network
// beyond this server. The bearer token (when the API wants one) is asked for once and
// kept in sessionStorage: it leaves with the tab, and never appears in a URL.
(function () {
  "use strict";

  var TOKEN_KEY = "tproxy-monitoring-token";
  var POLL_MS = 5000;
  var PAGE = 100; // the API's largest page
  var EVENTS_SHOWN = 50; // newest events in the events panel
  var MAX_ROWS = 1000; // workers and clients loaded per poll; beyond that the table says so
  var DIFF1 = BigInt("0xffff") << BigInt(208);

  var state = { sortKey: "name", sortAsc: true, filter: "", range: "hour", rows: [], total: 0, history: null, timer: null };

  function $(id) { return document.getElementById(id); }

  function setText(id, text) { $(id).textContent = text; }

  // -- formatting ----------------------------------------------------------------

  function fmtHashrate(hs) {
    if (hs === null || hs === undefined || !isFinite(hs)) return "–";
    var units = ["H/s", "kH/s", "MH/s", "GH/s", "TH/s", "PH/s", "EH/s"];
    var i = 0;
    while (Math.abs(hs) >= 1000 && i < units.length - 1) { hs /= 1000; i++; }
    return hs.toFixed(hs >= 100 ? 0 : hs >= 10 ? 1 : 2) + " " + units[i];
  }

  function fmtCount(n) { return (n || 0).toLocaleString("en-US"); }

  function fmtAgo(unix) {
    if (!unix) return "never";
    var s = Math.max(0, Date.now() / 1000 - unix);
    if (s < 60) return Math.round(s) + " s ago";
    if (s < 3600) return Math.round(s / 60) + " min ago";
    if (s < 86400) return (s / 3600).toFixed(1) + " h ago";
    return (s / 86400).toFixed(1) + " d ago";
  }

  function fmtDiff(d) {
    if (!d) return "–";
    if (d >= 1e6) return (d / 1e6).toFixed(2) + " M";
    if (d >= 1e3) return (d / 1e3).toFixed(2) + " k";
    if (d < 0.01) return d.toExponential(2);
    return d >= 10 ? d.toFixed(0) : d.toPrecision(3);
  }

  function difficulty(targetHex) {
    var t = BigInt("0x" + targetHex);
    if (t === BigInt(0)) return 0;
    return Number((DIFF1 * BigInt(1000000)) / t) / 1e6;
  }

  // -- fetching ------------------------------------------------------------------

  function NeedToken() {}

  function api(path, okStatuses) {
    var headers = { Accept: "application/json" };
    var token = sessionStorage.getItem(TOKEN_KEY);
    if (token) headers.Authorization = "Bearer " + token;
    return fetch(path, { headers: headers, cache: "no-store" }).then(function (r) {
      if (r.status === 401) throw new NeedToken();
      if (!r.ok && (okStatuses || []).indexOf(r.status) < 0) {
        return r.text().then(function (t) { throw new Error(path + ": HTTP " + r.status + " " + t.slice(0, 120)); });
      }
      return r.json();
    });
  }

  function allPages(path, listKey) {
    var items = [];
    function next(offset) {
      var sep = path.indexOf("?") < 0 ? "?" : "&";
      return api(path + sep + "offset=" + offset + "&limit=" + PAGE).then(function (page) {
        var got = page[listKey];
        items = items.concat(got);
        var total = listKey === "extended_channels" ? page.total_extended : page.total;
        if (got.length === PAGE && items.length < Math.min(total, MAX_ROWS)) return next(offset + PAGE);
        return { items: items, total: total };
      });
    }
    return next(0);
  }

  // -- rendering -----------------------------------------------------------------

  function renderHealth(h) {
    var el = $("health");
    el.textContent = h.status === "ok" ? "healthy" : "unavailable: " + (h.reason || "");
    el.className = "badge " + (h.status === "ok" ? "ok" : "bad");
  }

  function renderUpstream(server, channels) {
    var up = server.upstream;
    var st = !up.connected ? "disconnected" : up.channel_open ? "connected" : "no channel";
    setText("upstream-state", st);
    $("upstream-state").className = "big " + (up.connected && up.channel_open ? "state-mining" : "bad");
    setText("upstream-address", "pool: " + (up.address || "–"));
    setText("upstream-since", up.since ? "since " + new Date(up.since * 1000).toLocaleString() + " (" + fmtAgo(up.since) + ")" : "");
    setText("upstream-channels", channels.map(function (c) {
      return "channel " + c.channel_id + " · " + c.user_identity;
    }).join(", ") || "no channel open");
  }

  function renderShares(channels, clients) {
    var acc = 0, rej = 0, sub = 0, ack = 0, urej = 0, reasons = {};
    clients.forEach(function (c) { acc += c.shares_accepted; rej += c.shares_rejected; });
    channels.forEach(function (c) {
      sub += c.shares_submitted; ack += c.shares_acknowledged; urej += c.shares_rejected;
      Object.keys(c.shares_rejected_by_reason).forEach(function (k) {
        reasons[k] = (reasons[k] || 0) + c.shares_rejected_by_reason[k];
      });
    });
    setText("shares", fmtCount(acc) + " accepted · " + fmtCount(rej) + " rejected");
    setText("shares-upstream", "upstream: " + fmtCount(sub) + " submitted, " + fmtCount(ack) + " acknowledged, " + fmtCount(urej) + " rejected");
    var list = Object.keys(reasons).filter(function (k) { return reasons[k] > 0; })
      .map(function (k) { return k + ": " + fmtCount(reasons[k]); });
    setText("reject-reasons", list.length ? "reject reasons: " + list.join(", ") : "no upstream rejects");
  }

  function renderFarm(global, server) {
    var sv1 = global.sv1_clients || { total_clients: 0, total_hashrate: 0 };
    var el = $("farm-hashrate");
    el.textContent = fmtHashrate(sv1.total_hashrate);
    el.setAttribute("data-value", String(sv1.total_hashrate));
    setText("farm-miners", fmtCount(sv1.total_clients) + " miner connections");
    setText("farm-upstream-hashrate", "announced upstream: " + fmtHashrate(server.total_hashrate));
  }

  function svg(tag, attrs, text) {
    var el = document.createElementNS("http://www.w3.org/2000/svg", tag);
    Object.keys(attrs).forEach(function (k) { el.setAttribute(k, attrs[k]); });
    if (text !== undefined) el.textContent = text;
    return el;
  }

  function renderChart() {
    var chart = $("chart");
    var samples = state.history ? state.history[state.range] : [];
    var w = Math.max(300, chart.clientWidth || 800), h = 200, left = 70, bottom = 18;
    chart.setAttribute("viewBox", "0 0 " + w + " " + h);
    chart.textContent = "";
    var span = state.range === "hour" ? 3600 : 86400;
    var now = Date.now() / 1000, t0 = now - span;
    var max = 0;
    samples.forEach(function (s) { if (s.hashrate > max) max = s.hashrate; });
    max = max > 0 ? max * 1.1 : 1;
    function x(t) { return left + ((t - t0) / span) * (w - left - 5); }
    function y(v) { return 5 + (1 - v / max) * (h - bottom - 5); }
    [0, 0.5, 1].forEach(function (f) {
      chart.appendChild(svg("line", { x1: left, x2: w - 5, y1: y(max * f), y2: y(max * f), "class": "grid" }));
      chart.appendChild(svg("text", { x: 4, y: y(max * f) + 4 }, fmtHashrate(max * f)));
    });
    [0, 0.25, 0.5, 0.75, 1].forEach(function (f) {
      var t = t0 + span * f;
      var label = f === 1 ? "now" : "-" + (state.range === "hour" ? Math.round((1 - f) * 60) + " min" : Math.round((1 - f) * 24) + " h");
      chart.appendChild(svg("text", { x: Math.min(x(t), w - 30), y: h - 3 }, label));
    });
    var pts = samples.filter(function (s) { return s.at >= t0; })
      .map(function (s) { return x(s.at).toFixed(1) + "," + y(s.hashrate).toFixed(1); });
    if (pts.length) {
      var first = pts[0].split(",")[0], last = pts[pts.length - 1].split(",")[0];
      chart.appendChild(svg("polygon", { points: first + "," + y(0) + " " + pts.join(" ") + " " + last + "," + y(0), "class": "area" }));
      chart.appendChild(svg("polyline", { points: pts.join(" "), "class": "line" }));
    }
    setText("chart-note", samples.length ? samples.length + " samples, kept in the proxy's memory since it started"
      : "no samples yet");
  }

  function workerRows(workers, clients) {
    var byName = {};
    clients.forEach(function (c) { (byName[c.worker_name] = byName[c.worker_name] || []).push(c); });
    return workers.map(function (w) {
      var cs = byName[w.worker_name] || [];
      var win = w.windows;
      var last = win ? win["5m"].last_share_at || win["24h"].last_share_at : null;
      var accepted = 0, rejected = 0, agents = {}, diff = 0;
      cs.forEach(function (c) {
        accepted += c.shares_accepted; rejected += c.shares_rejected;
        if (c.last_share_at && (!last || c.last_share_at > last)) last = c.last_share_at;
        if (c.user_agent) agents[c.user_agent] = true;
        diff = Math.max(diff, difficulty(c.target_hex));
      });
      if (!cs.length && win) { accepted = win["24h"].shares_accepted; rejected = win["24h"].shares_rejected; }
      var live = w.hashrate !== null ? w.hashrate : (win ? win["5m"].hashrate : null);
      var st = w.connections === 0 ? "offline" : last && Date.now() / 1000 - last < 300 ? "mining" : "idle";
      return {
        name: w.worker_name, state: st, hashrate: live, difficulty: diff, lastShare: last,
        accepted: accepted, rejected: rejected, agent: Object.keys(agents).join(", "), connections: w.connections
      };
    });
  }

  function renderWorkers() {
    var total = state.total;
    var f = state.filter.toLowerCase();
    var rows = state.rows.filter(function (r) {
      return !f || (r.name + " " + r.state + " " + r.agent).toLowerCase().indexOf(f) >= 0;
    });
    var key = state.sortKey, dir = state.sortAsc ? 1 : -1;
    rows.sort(function (a, b) {
      var va = a[key], vb = b[key];
      if (va === vb) return 0;
      if (va === null || va === undefined) return 1;
      if (vb === null || vb === undefined) return -1;
      return (va < vb ? -1 : 1) * dir;
    });
    var body = document.createElement("tbody");
    rows.forEach(function (r) {
      var tr = document.createElement("tr");
      tr.setAttribute("data-worker", r.name);
      [[r.name, ""], [r.state + (r.connections > 1 ? " ×" + r.connections : ""), "state-" + r.state],
       [fmtHashrate(r.hashrate), "num"], [fmtDiff(r.difficulty), "num"], [fmtAgo(r.lastShare), "num"],
       [fmtCount(r.accepted), "num"], [fmtCount(r.rejected), "num" + (r.rejected ? " bad" : "")], [r.agent || "–", "agent"]
      ].forEach(function (cell) {
        var td = document.createElement("td");
        td.textContent = cell[0];
        if (cell[1]) td.className = cell[1];
        tr.appendChild(td);
      });
      body.appendChild(tr);
    });
    var table = $("workers");
    table.replaceChild(body, table.tBodies[0]);
    var shown = rows.length + " shown of " + fmtCount(total);
    setText("workers-count", total > state.rows.length ? shown + " (first " + state.rows.length + " loaded)" : shown);
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th) {
      th.className = (th.classList.contains("num") ? "num " : "") + (th.getAttribute("data-key") === key ? "sorted" + (state.sortAsc ? " asc" : "") : "");
    });
  }

  // -- events (the share log's events table; 503 while its database is down) --------

  function renderEvents(page) {
    var body = document.createElement("tbody");
    (page.items || []).forEach(function (e) {
      var tr = document.createElement("tr");
      var diff = e.type === "difficulty" ? fmtDiff(e.old_difficulty) + " → " + fmtDiff(e.difficulty) : "";
      [new Date(e.at * 1000).toLocaleString(), e.type, e.worker_name || "–", e.reason, diff, e.detail || e.address]
        .forEach(function (text) {
          var td = document.createElement("td");
          td.textContent = text;
          tr.appendChild(td);
        });
      body.appendChild(tr);
    });
    var table = $("events");
    table.replaceChild(body, table.tBodies[0]);
    setText("events-note", page.items ? "latest " + page.items.length + " of " + fmtCount(page.total)
      : "unavailable: " + (page.error || "no answer"));
  }

  function pollEvents() {
    return api("/api/v1/events?limit=" + EVENTS_SHOWN, [503]).then(renderEvents, function (e) {
      if (!(e instanceof NeedToken)) renderEvents({ error: e.message });
    });
  }

  // -- the poll loop --------------------------------------------------------------

  function poll() {
    clearTimeout(state.timer);
    var health = api("/api/v1/health", [503]);
    var summary = Promise.all([api("/api/v1/global"), api("/api/v1/server"), api("/api/v1/history"),
      allPages("/api/v1/server/channels", "extended_channels")]);
    var tables = Promise.all([allPages("/api/v1/workers", "items"), allPages("/api/v1/sv1/clients", "items")]);
    pollEvents(); // on its own: the events' database being down must not blank the rest
    return Promise.all([health, summary, tables]).then(function (r) {
      var global = r[1][0], server = r[1][1], channels = r[1][3].items;
      var workers = r[2][0], clients = r[2][1].items;
      renderHealth(r[0]);
      renderUpstream(server, channels);
      renderFarm(global, server);
      renderShares(channels, clients);
      state.history = r[1][2];
      renderChart();
      state.rows = workerRows(workers.items, clients);
      state.total = workers.total;
      renderWorkers();
      $("error").hidden = true;
      $("token-form").hidden = true;
      setText("updated", "updated " + new Date().toLocaleTimeString());
    }).catch(function (e) {
      if (e instanceof NeedToken) {
        sessionStorage.removeItem(TOKEN_KEY);
        $("token-form").hidden = false;
        $("token").focus();
        return; // polling resumes when a token is entered
      }
      $("error").hidden = false;
      setText("error", "last update failed: " + e.message + " (retrying)");
    }).then(function () {
      if ($("token-form").hidden) state.timer = setTimeout(poll, document.hidden ? POLL_MS * 6 : POLL_MS);
    });
  }

  function wire() {
    $("token-form").addEventListener("submit", function (ev) {
      ev.preventDefault();
      sessionStorage.setItem(TOKEN_KEY, $("token").value.trim());
      $("token").value = "";
      $("token-form").hidden = true;
      poll();
    });
    $("filter").addEventListener("input", function (ev) { state.filter = ev.target.value; renderWorkers(); });
    $("workers").tHead.addEventListener("click", function (ev) {
      var key = ev.target.getAttribute && ev.target.getAttribute("data-key");
      if (!key) return;
      state.sortAsc = state.sortKey === key ? !state.sortAsc : key === "name" || key === "agent" || key === "state";
      state.sortKey = key;
      renderWorkers();
    });
    Array.prototype.forEach.call(document.querySelectorAll(".tabs button"), function (b) {
      b.addEventListener("click", function () {
        state.range = b.getAttribute("data-range");
        Array.prototype.forEach.call(document.querySelectorAll(".tabs button"), function (o) { o.classList.toggle("on", o === b); });
        renderChart();
      });
    });
    document.addEventListener("visibilitychange", function () { if (!document.hidden) poll(); });
  }

  wire();
  poll();
})();
