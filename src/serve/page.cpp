// The cluster page served at GET /: static HTML + JS that polls /cluster.json every second and
// draws the devices (with the units each holds), the stages' measured ms per token, tokens/s, the
// queue, and the event log. No external resources (it must work offline).
#include "serve/server.h"

namespace ll::serve {

const std::string& cluster_page_html() {
  static const std::string page = R"HTML(<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>LinguaLinked cluster</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font-family:system-ui,sans-serif;margin:1.5em;background:#f7f7f5;color:#222}
h1{font-size:1.4em;margin:0 0 .2em} h2{font-size:1.1em;margin:1.2em 0 .4em}
.summary span{display:inline-block;margin-right:1.5em;padding:.3em .6em;background:#fff;border:1px solid #ddd;border-radius:4px}
table{border-collapse:collapse;background:#fff;min-width:40em} th,td{border:1px solid #ddd;padding:.3em .7em;text-align:left}
th{background:#eee} td.num{text-align:right;font-variant-numeric:tabular-nums}
.bar{display:inline-block;height:.8em;background:#4a8;vertical-align:middle}
.ok{color:#070} .bad{color:#b00} #events td:first-child{white-space:nowrap;color:#666}
</style></head><body>
<h1>LinguaLinked cluster</h1>
<div id="model">loading…</div>
<div class="summary"><span>status <b id="status">?</b></span><span>tokens/s <b id="toks">0</b></span>
<span>queue <b id="queue">0</b></span><span>in flight <b id="inflight">0</b></span>
<span>requests <b id="requests">0</b></span><span>rebalances <b id="rebalances">0</b></span>
<span>failovers <b id="failovers">0</b></span></div>
<h2>Devices</h2>
<table id="devices"><thead><tr><th>device</th><th>address</th><th>units</th><th>weights MiB</th><th>resident MiB</th><th>compute ms</th></tr></thead><tbody></tbody></table>
<h2>Stages</h2>
<table id="stages"><thead><tr><th>#</th><th>device</th><th>units</th><th>ms / token</th><th></th></tr></thead><tbody></tbody></table>
<h2>Events</h2>
<table id="events"><thead><tr><th>time</th><th>kind</th><th>event</th></tr></thead><tbody></tbody></table>
<script>
"use strict";
function cell(row, text, cls) { const td = document.createElement("td"); td.textContent = text; if (cls) td.className = cls; row.appendChild(td); return td; }
function fill(id, rows) { const body = document.querySelector("#" + id + " tbody"); body.replaceChildren(...rows); }
function mib(b) { return (b / 1048576).toFixed(1); }
function units(u) { return u.map(r => r[0] === r[1] ? String(r[0]) : r[0] + "–" + r[1]).join(", ") || "none"; }
function draw(c) {
  document.getElementById("model").textContent = "model " + c.model + " — " + c.mode;
  const st = document.getElementById("status"); st.textContent = c.healthy ? "serving" : "unavailable"; st.className = c.healthy ? "ok" : "bad";
  document.getElementById("toks").textContent = c.tok_s.toFixed(1);
  document.getElementById("queue").textContent = c.queue.queued + " / " + c.queue.capacity;
  document.getElementById("inflight").textContent = c.queue.in_flight;
  document.getElementById("requests").textContent = c.requests_total;
  document.getElementById("rebalances").textContent = c.counters.rebalances;
  document.getElementById("failovers").textContent = c.counters.failovers;
  fill("devices", c.devices.map(d => { const tr = document.createElement("tr"); cell(tr, d.name); cell(tr, d.address);
    cell(tr, units(d.units)); cell(tr, mib(d.weight_bytes), "num"); cell(tr, mib(d.rss_bytes), "num"); cell(tr, d.compute_ms.toFixed(1), "num"); return tr; }));
  const worst = Math.max(1e-9, ...c.stages.map(s => s.compute_ms_per_token));
  fill("stages", c.stages.map((s, i) => { const tr = document.createElement("tr"); cell(tr, String(i)); cell(tr, s.device);
    cell(tr, s.first_unit + "–" + s.last_unit); cell(tr, s.compute_ms_per_token.toFixed(3), "num");
    const bar = document.createElement("span"); bar.className = "bar"; bar.style.width = (120 * s.compute_ms_per_token / worst) + "px"; cell(tr, "").appendChild(bar); return tr; }));
  fill("events", c.events.slice().reverse().map(e => { const tr = document.createElement("tr");
    cell(tr, new Date(e.time * 1000).toLocaleTimeString()); cell(tr, e.kind); cell(tr, e.text); return tr; }));
}
async function poll() {
  try { const r = await fetch("/cluster.json", {cache: "no-store"}); if (r.ok) draw(await r.json()); }
  catch (e) { const st = document.getElementById("status"); st.textContent = "no answer"; st.className = "bad"; }
  setTimeout(poll, 1000);
}
poll();
</script></body></html>
)HTML";
  return page;
}

}  // namespace ll::serve
