// The phone page: one status stream (server-sent events), two buttons.
"use strict";
const $ = (id) => document.getElementById(id);
let current = null;

function text(el, value) { if (el.textContent !== value) el.textContent = value; }

function meterRow(name, a) {
  const pct = a.device_ok ? Math.max(0, Math.min(100, (a.peak_dbfs + 60) / 60 * 100)) : 0;
  let row = document.querySelector(`.meter[data-track="${name}"]`);
  if (!row) {
    row = document.createElement("div");
    row.className = "meter";
    row.dataset.track = name;
    row.innerHTML = '<div class="name"><span class="track"></span><span class="value"></span></div>' +
                    '<div class="bar"><div class="fill"></div><div class="clip"></div></div>';
    row.querySelector(".track").textContent = name;
    $("meters").appendChild(row);
  }
  const fill = row.querySelector(".fill");
  fill.style.width = pct.toFixed(1) + "%";
  fill.classList.toggle("hot", a.peak_dbfs > -6);
  row.querySelector(".clip").classList.toggle("on", !!a.clipping);
  const lufs = a.loudness_lufs === null ? "" : ` · ${a.loudness_lufs.toFixed(1)} LUFS`;
  text(row.querySelector(".value"), !a.device_ok ? "device missing" :
       `${a.peak_dbfs.toFixed(1)} dBFS${lufs}${a.silent ? " · SILENT" : ""}${a.clipping ? " · CLIP" : ""}`);
}

function list(el, items, empty) {  // items: text, or [node or text, ...] for one row
  el.replaceChildren(...(items.length ? items : [empty]).map((t) => {
    const li = document.createElement("li");
    li.append(...[].concat(t));
    if (!items.length) li.className = "muted";
    return li;
  }));
}

function render(s) {
  current = s;
  text($("device"), s.device);
  const st = $("state");
  text(st, s.state);
  st.className = "state " + s.state;
  const live = ["GOING_LIVE", "LIVE", "DEGRADED"].includes(s.state);
  $("go").hidden = live;
  $("stop").hidden = !live;
  $("go").disabled = !["READY", "FAULT"].includes(s.state);
  text($("summary"), s.summary);
  $("alarms-box").hidden = !s.conditions.length && !s.fault;
  list($("alarms"), (s.fault ? ["FAULT: " + s.fault] : []).concat(s.conditions), "none");

  const media = (s.components.media || {});
  if (media.audio) Object.entries(media.audio).forEach(([n, a]) => meterRow(n, a));
  if (media.state === "running") {
    text($("encoder"), media.live ? `${media.encoder}${media.encoder_hardware ? " (hardware)" : ""} · ` +
         `${media.fps} fps · ${(media.bitrate_kbps / 1000).toFixed(1)} Mb/s` : "idle (not live)");
    const srt = (media.outputs || {}).srt;
    text($("stream"), srt ? `${srt.url} · ${srt.connected ? "connected" : "not connected"} · SRT latency ` +
         `${srt.latency_ms} ms` + (srt.pop_moves ? ` · moved ${srt.pop_moves}× this show` : "") : "no stream");
    const rec = (media.outputs || {}).recorder;
    text($("recording"), rec && rec.session ? `${rec.recording ? "recording" : (rec.stopped || "finalized")} · ` +
         `${(rec.bytes / 1e6).toFixed(1)} MB · ${rec.seconds.toFixed(0)} s in closed segments` : "not recording");
  }
  const power = s.components.power;
  if (power && power.sources) {
    list($("power"), Object.entries(power.sources).map(([n, p]) => {
      if (p.stale) return `${n}: not answering`;
      const parts = [p.on_mains === false ? "ON BATTERY" : p.on_mains ? "mains" : "…"];
      if (p.charge_percent !== null) parts.push(`${p.charge_percent.toFixed(0)} %`);
      if (p.runtime_seconds !== null) parts.push(`${(p.runtime_seconds / 60).toFixed(0)} min left`);
      return `${n}: ${parts.join(" · ")}`;
    }).concat(power.shutdown_in_seconds !== null && power.shutdown_in_seconds !== undefined ?
              [`powering off in ${power.shutdown_in_seconds.toFixed(0)} s unless mains return`] : []),
    "no power monitor");
  }
  const uplinks = s.components.uplinks || {};
  drawLinks(uplinks.links || {});
  drawPanel(s.components.panel || {});
  sample(s);
}

// --- the uplinks, with signal bars for the cellular one ---------------------------------------
function bars(rsrp) {
  const span = document.createElement("span");
  span.className = "sig";
  span.title = `RSRP ${rsrp} dBm`;
  const n = [-110, -100, -90, -80].filter((edge) => rsrp >= edge).length;  // as statusview.signal_bars
  for (let i = 0; i < 4; i++) {
    const b = document.createElement("b");
    if (i < n) b.className = "on";
    span.appendChild(b);
  }
  return span;
}

function drawLinks(links) {
  const items = Object.entries(links).map(([n, l]) => {
    const parts = [l.standby ? "standby" : l.state];
    if (l.rtt_ms !== null && l.rtt_ms !== undefined) parts.push(`${l.rtt_ms} ms`);
    if (l.share_percent !== undefined && l.state === "up") parts.push(`${l.share_percent.toFixed(0)} % of the traffic`);
    if (l.health !== undefined) parts.push(`health ${(l.health * 100).toFixed(0)} %`);
    if (l.radio && l.radio.sinr !== undefined) parts.push(`${l.radio.rat || ""} SINR ${l.radio.sinr} dB`);
    if (l.used_mb) parts.push(`${l.used_mb} MB` + (l.cap_mb ? ` of ${l.cap_mb}` : ""));
    const text = `${n}: ${parts.join(" · ")}`;
    return l.radio && l.radio.rsrp !== undefined ? [bars(l.radio.rsrp), text] : text;
  });
  list($("links"), items, "no uplink data");
}

// --- the front panel as it is lit now (the daemon's table: appliance/panel/patterns.py) --------
let panelKey = "";
function drawPanel(panel) {
  const leds = Object.entries(panel.leds || {});
  const key = leds.map(([n, l]) => n + l.pattern + l.meaning).join("|");
  if (key === panelKey) return;
  panelKey = key;
  if (!leds.length) {
    $("panel").replaceChildren(Object.assign(document.createElement("span"), {className: "muted", textContent: "no panel"}));
    return;
  }
  $("panel").replaceChildren(...leds.map(([name, led]) => {
    const el = document.createElement("div");
    el.className = `led ${name} ${led.pattern.replace(/ /g, "-")}`;
    el.title = `${led.label}: ${led.pattern}: ${led.meaning}`;
    el.dataset.pattern = led.pattern;
    el.appendChild(document.createElement("i"));
    el.appendChild(Object.assign(document.createElement("span"), {textContent: led.label}));
    return el;
  }));
}

// --- the last five minutes, a point a second, never more -------------------------------------
const KEEP = 300;
class History {
  constructor() { this.t = []; this.cols = new Map(); }
  push(t, values) {
    this.t.push(t);
    for (const [k, col] of this.cols) col.push(k in values ? values[k] : null);
    for (const k of Object.keys(values)) {
      if (!this.cols.has(k)) {
        const col = new Array(this.t.length - 1).fill(null);
        col.push(values[k]);
        this.cols.set(k, col);
      }
    }
    if (this.t.length > KEEP) {
      this.t.shift();
      for (const col of this.cols.values()) col.shift();
    }
    for (const [k, col] of this.cols) if (col.every((v) => v === null)) this.cols.delete(k);  // a link that left
  }
}

const COLOURS = ["#2196f3", "#00bcd4", "#ffc107", "#e91e63", "#8bc34a", "#ab47bc"];
class Chart {
  constructor(el, unit, range) { this.el = el; this.unit = unit; this.range = range; this.h = new History();
                                 this.u = null; this.keys = ""; }
  push(t, values) {
    this.h.push(t, values);
    const keys = [...this.h.cols.keys()];
    const data = [this.h.t, ...keys.map((k) => this.h.cols.get(k))];
    if (this.u && keys.join("|") === this.keys) { this.u.setData(data); return; }
    if (this.u) this.u.destroy();
    this.keys = keys.join("|");
    if (!keys.length) { this.u = null; return; }
    const axis = {stroke: "#999", grid: {stroke: "#262626"}, ticks: {stroke: "#333"}};
    this.u = new uPlot({
      width: Math.max(240, this.el.clientWidth || 320), height: 150,
      scales: {x: {time: true}, y: this.range ? {range: this.range} : {}},
      series: [{}, ...keys.map((k, i) => ({label: k, stroke: COLOURS[i % COLOURS.length], width: 1.5}))],
      axes: [axis, {...axis, label: this.unit, size: 50}],
      legend: {live: false},
      cursor: {show: false},
    }, data, this.el);
  }
  resize() { if (this.u) this.u.setSize({width: Math.max(240, this.el.clientWidth || 320), height: 150}); }
}

const charts = {
  throughput: new Chart($("chart-throughput"), "kb/s per uplink"),
  rtt: new Chart($("chart-rtt"), "RTT ms"),
  bitrate: new Chart($("chart-bitrate"), "kb/s"),
  audio: new Chart($("chart-audio"), "peak dBFS", [-60, 0]),
};
window.addEventListener("resize", () => Object.values(charts).forEach((c) => c.resize()));

let lastSample = 0;
let lastBytes = {};
function sample(s) {
  const now = Date.now() / 1000;
  if (now - lastSample < 0.9) return;  // a point a second, whatever the event rate
  const dt = now - lastSample;
  lastSample = now;
  const media = s.components.media || {};
  const srt = (media.outputs || {}).srt || {};
  const bond = (srt.bond || {}).links || {};
  const links = (s.components.uplinks || {}).links || {};
  const throughput = {}, rtt = {};
  for (const [n, l] of Object.entries(links)) {
    const bytes = bond[n] ? bond[n].bytes : null;
    if (bytes !== null && lastBytes[n] !== undefined && bytes >= lastBytes[n] && dt < 5) {
      throughput[n] = Math.round((bytes - lastBytes[n]) * 8 / 1000 / dt);
    } else if (l.state !== undefined) throughput[n] = bytes === null ? 0 : null;
    if (bytes !== null) lastBytes[n] = bytes; else delete lastBytes[n];
    if (l.rtt_ms !== null && l.rtt_ms !== undefined) rtt[n] = l.rtt_ms;
  }
  charts.throughput.push(now, throughput);
  charts.rtt.push(now, rtt);
  const bitrate = {};
  if (media.live) {
    bitrate.target = media.target_bitrate_kbps;
    bitrate.encoded = media.bitrate_kbps;
    if (srt.abr && srt.abr.delivered_kbps !== null) bitrate.delivered = srt.abr.delivered_kbps;
  }
  charts.bitrate.push(now, bitrate);
  const audio = {};
  for (const [n, a] of Object.entries(media.audio || {})) audio[n] = a.device_ok ? Math.max(-60, a.peak_dbfs) : null;
  charts.audio.push(now, audio);
}

async function post(path, body) {
  const r = await fetch(path, { method: "POST", headers: { "Content-Type": "application/json" },
                                body: JSON.stringify(body || {}) });
  if (r.status === 401) showLogin();
  return r;
}

function showLogin() { $("login").hidden = false; }

$("go").addEventListener("click", () => post("/api/live"));
$("stop").addEventListener("click", () => {
  if (confirm("Stop the show? The stream ends and the recording is closed.")) post("/api/stop");
});
$("login-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const r = await post("/api/login", { token: $("token").value });
  if (r.ok) { $("login").hidden = true; connect(); }
  else text($("login-error"), r.status === 429 ? "Too many attempts: wait a minute." : "Wrong token.");
});

let source = null;
async function connect() {
  const r = await fetch("/api/status");
  if (r.status === 401) { showLogin(); return; }
  if (r.ok) render(await r.json());
  if (source) source.close();
  source = new EventSource("/api/events");
  source.addEventListener("status", (e) => render(JSON.parse(e.data)));
}

function refreshPreview() {
  if (!current) return;
  const img = new Image();
  img.onload = () => {
    $("preview").src = img.src;
    $("preview").hidden = false;
    $("preview-wait").hidden = true;  // a placeholder until the first frame, never a broken image
  };
  img.src = "/api/snapshot.jpg?t=" + Date.now();
}
setInterval(refreshPreview, 3000);
setTimeout(refreshPreview, 500);
connect();
