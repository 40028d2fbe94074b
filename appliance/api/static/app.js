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

function list(el, items, empty) {
  el.replaceChildren(...(items.length ? items : [empty]).map((t) => {
    const li = document.createElement("li");
    li.textContent = t;
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
  list($("links"), Object.entries(uplinks.links || {}).map(([n, l]) => {
    const parts = [l.standby ? "standby" : l.state];
    if (l.rtt_ms !== null && l.rtt_ms !== undefined) parts.push(`${l.rtt_ms} ms`);
    if (l.health !== undefined) parts.push(`health ${(l.health * 100).toFixed(0)} %`);
    if (l.radio && l.radio.sinr !== undefined) parts.push(`${l.radio.rat || ""} SINR ${l.radio.sinr} dB`);
    if (l.used_mb) parts.push(`${l.used_mb} MB` + (l.cap_mb ? ` of ${l.cap_mb}` : ""));
    return `${n}: ${parts.join(" · ")}`;
  }), "no uplink data");
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
  img.onload = () => { $("preview").src = img.src; };
  img.src = "/api/snapshot.jpg?t=" + Date.now();
}
setInterval(refreshPreview, 2000);
connect();
