// The status page: polls /api/status (a summary of the gateway's own metrics with the last minutes
// of history, see gateway/web.py) and draws it with uPlot. window.vpStatus holds the last answer
// for the tests.
"use strict";

const STAGES = ["vad", "asr", "llm", "tts"];
const COLORS = { vad: "#8a94a6", asr: "#2d6cdf", llm: "#d7263d", tts: "#2d9d5b" };
const POLL_MS = 2000;
const $ = (id) => document.getElementById(id);
const fmtMs = (s) => (s === null || s === undefined ? "–" : Math.round(s * 1000));
const pct = (x) => (x === null || x === undefined ? "–" : `${Math.round(x * 100)}%`);

function makeChart(el, title, unit, series) {
  const width = Math.max(300, el.clientWidth || 360);
  return new uPlot(
    {
      title, width, height: 200,
      scales: { x: { time: true } },
      axes: [{}, { label: unit, size: 60 }],
      series: [{}, ...series.map((s) => ({ label: s, stroke: COLORS[s] || "#1d2330", width: 2, spanGaps: true }))],
    },
    [[], ...series.map(() => [])],
    el,
  );
}

const charts = {
  load: makeChart($("chart-load"), "compute per stage", "cores", STAGES),
  latency: makeChart($("chart-latency"), "mean latency", "ms", STAGES),
  queue: makeChart($("chart-queue"), "mean queue wait", "ms", STAGES),
  sessions: makeChart($("chart-sessions"), "devices and first audio", "", ["devices", "first audio s"]),
};

function render(s) {
  window.vpStatus = s;
  $("updated").textContent = `updated ${new Date(s.time * 1000).toLocaleTimeString()}`;
  $("sessions").textContent = s.sessions;
  $("turns").textContent = s.turns;
  $("first-audio").textContent = s.first_audio_mean_s === null ? "–" : `${fmtMs(s.first_audio_mean_s)} ms`;
  $("binds").textContent = s.binding_stage || "idle";
  const last = s.series.length ? s.series[s.series.length - 1].stages : {};
  const body = $("stages").tBodies[0];
  body.innerHTML = "";
  for (const stage of STAGES) {
    const req = s.requests[stage] || {};
    const ok = req.ok || 0;
    const errors = Object.entries(req).filter(([k]) => k !== "ok").reduce((a, [, v]) => a + v, 0);
    const lat = s.latency[stage];
    const wait = s.queue_wait[stage];
    const row = body.insertRow();
    row.id = `stage-${stage}`;
    if (stage === s.binding_stage) row.className = "binds";
    const cells = [
      stage, ok, errors,
      lat && lat.count ? fmtMs(lat.sum / lat.count) : "–",
      wait && wait.count ? fmtMs(wait.sum / wait.count) : "–",
      last[stage] ? `${last[stage].busy_cores.toFixed(2)} cores, ${pct(last[stage].load)}` : "–",
      `${last[stage] ? last[stage].inflight : 0} / ${s.max_concurrency[stage] ?? "–"}`,
      stage in s.cache_hit_ratio ? pct(s.cache_hit_ratio[stage]) : "",
    ];
    cells.forEach((v, i) => {
      const td = row.insertCell();
      td.textContent = v;
      if (i > 0) td.className = "num";
    });
  }
  const xs = s.series.map((p) => p.t);
  const per = (key, scale) => STAGES.map((st) => s.series.map((p) => {
    const v = p.stages[st][key];
    return v === null ? null : v * scale;
  }));
  charts.load.setData([xs, ...per("busy_cores", 1)]);
  charts.latency.setData([xs, ...per("latency_s", 1000)]);
  charts.queue.setData([xs, ...per("queue_wait_s", 1000)]);
  charts.sessions.setData([xs, s.series.map((p) => p.sessions), s.series.map((p) => p.first_audio_s)]);
  if (s.pipeline) renderPipeline(s.pipeline);
}

// The VoicePipeline part: the operator's plan and conditions, or why there are none (state "none":
// no operator; "error": the gateway may not or cannot read it, with the message to act on).
function cellRow(body, values, numeric = []) {
  const row = body.insertRow();
  values.forEach((v, i) => {
    const td = row.insertCell();
    td.textContent = v === null || v === undefined || v === "" ? "–" : v;
    if (numeric.includes(i)) td.className = "num";
  });
  return row;
}
function renderPipeline(p) {
  const state = $("pipeline-state");
  $("pipeline-name").textContent = p.name ? `${p.namespace}/${p.name}` : "";
  $("pipeline").dataset.state = p.state;
  state.hidden = !p.message;
  state.className = `notice ${p.state === "error" ? "error" : p.state === "none" ? "" : "warn"}`;
  state.textContent = p.message;
  $("pipeline-body").hidden = p.state !== "ok";
  if (p.state !== "ok") return;
  const fits = p.fits === false ? " (does not fit)" : "";
  $("pipeline-summary").textContent =
    `${p.devices ?? "–"} devices wanted, ${p.supportedDevices ?? "–"} supported${fits} on ${p.nodeSize ?? "–"}; ` +
    `bottleneck ${p.bottleneck || "–"}` + (p.recommendation ? `. ${p.recommendation}` : "");
  const plan = $("plan").tBodies[0];
  plan.innerHTML = "";
  for (const s of p.stages) {
    const row = cellRow(plan, [s.stage, s.replicas, s.engine, `${s.cpuRequest ?? "–"} / ${s.cpu ?? "–"}`, s.memory,
      s.batchSize, s.maxConcurrency, s.devices], [1, 3, 4, 5, 6, 7]);
    row.id = `plan-${s.stage}`;
    if (s.stage === p.bottleneck) row.className = "binds";
  }
  const conds = $("conditions").tBodies[0];
  conds.innerHTML = "";
  for (const c of p.conditions) {
    const since = c.lastTransitionTime ? new Date(c.lastTransitionTime).toLocaleString() : "";
    const row = cellRow(conds, [c.type, c.status, c.reason, c.message, since]);
    row.id = `condition-${c.type}`;
    // Degraded is the one condition whose True is bad news.
    const good = c.type === "Degraded" ? c.status === "False" : c.status === "True";
    row.cells[1].className = c.status === "Unknown" ? "" : good ? "ok" : "bad";
  }
}

async function poll() {
  try {
    const answer = await fetch("/api/status", { cache: "no-store" });
    if (!answer.ok) throw new Error(`HTTP ${answer.status}`);
    render(await answer.json());
    $("notice").hidden = true;
  } catch (e) {
    $("notice").hidden = false;
    $("notice").className = "notice warn";
    $("notice").textContent = `Cannot reach the gateway (${e.message}); retrying.`;
  } finally {
    setTimeout(poll, POLL_MS);
  }
}
poll();
