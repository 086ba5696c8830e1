// The talk page: a xiaozhi device in the browser (docs/xiaozhi-protocol.md). The microphone goes
// up as raw Opus packets (protocol version 1: one packet per binary message, 16 kHz mono, 60 ms);
// the reply comes down as Opus (24 kHz, 60 ms) and is played as it streams. Half-duplex like the
// firmware: no microphone audio is sent while the reply plays, so the speaker cannot talk to itself.
// Barge-in: hands-free, speaking over the reply (the microphone's level, measured here, above
// BARGE_RMS for BARGE_HOLD_MS); push-to-talk, pressing the button. Either sends `abort` with the
// reason the firmware gives for a wake word during a reply (wake_word_detected), stops playback at
// once and listens; the "Stop reply" button sends a plain abort (a device button sends no reason).
//
// Everything the tests need to measure is on window.vp (decoded samples and their energy, the turns
// with their latencies, the notices shown).

const UP_RATE = 16000;
const UP_FRAME_MS = 60;
const VOICED_RMS = 0.01; // about -40 dBFS: above room noise, below quiet speech
const RECONNECT_MAX_S = 15;
// Speaking over the reply: about -30 dBFS, a voice near the microphone; room noise and (with
// headphones, or speakers at a moderate volume) the reply's own echo stay below it. The microphone
// has no echo cancellation (it would alter what the ASR hears), so loud speakers can trip it: the
// "barge in by speaking" box turns it off.
const BARGE_RMS = 0.03;
// Held that long, net of the short dips between syllables: a cough or a click does not interrupt.
const BARGE_HOLD_MS = 300;
// The words that triggered it are sent after the listen start, so the server hears them too.
const PREROLL_FRAMES = 10;

const $ = (id) => document.getElementById(id);
const vp = (window.vp = {
  state: "disconnected",
  codec: { encoder: "", decoder: "" },
  turns: [],
  decodedSamples: 0,
  decodedSeconds: 0,
  sumSquares: 0,
  rms: 0,
  framesSent: 0,
  voicedFrames: 0,
  lastVoicedAt: null,
  framesAfterAbort: 0,
  playedAfterAbort: 0, // decoded frames played after an abort (a bug if ever > 0)
  aborts: [], // {reason, by, at, turn}: what the page sent
  replySources: 0, // reply buffers scheduled and not yet ended (0 = silent)
  notices: [],
  recordMic: false,
  micFrames: [],
  sentPackets: [],
  closeCode: null,
});

// --- identity: a stable fake MAC per browser, so tokens and allow-lists can name it --------------
function deviceIdentity() {
  let id = localStorage.getItem("vp.deviceId");
  if (!id) {
    const bytes = crypto.getRandomValues(new Uint8Array(6));
    bytes[0] = (bytes[0] | 0x02) & 0xfe; // locally administered, unicast
    id = Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join(":");
    localStorage.setItem("vp.deviceId", id);
  }
  let client = localStorage.getItem("vp.clientId");
  if (!client) {
    client = crypto.randomUUID();
    localStorage.setItem("vp.clientId", client);
  }
  return { deviceId: id, clientId: client };
}
const identity = deviceIdentity();
$("device-id").textContent = identity.deviceId;
$("client-id").textContent = identity.clientId;
const params = new URLSearchParams(location.search);
if (params.get("token")) localStorage.setItem("vp.token", params.get("token"));
if (params.get("mode")) document.querySelector(`input[name=mode][value=${params.get("mode")}]`).checked = true;
if (params.get("bargein") === "off") $("bargein").checked = false;
$("token").value = localStorage.getItem("vp.token") || "";
// ?codec=wasm uses the libopus WebAssembly build even where WebCodecs exists (how the fallback is tested).
const forceWasm = params.get("codec") === "wasm";

// --- UI helpers ----------------------------------------------------------------------------------
function setState(state) {
  vp.state = state;
  $("state").textContent = state;
  $("state").dataset.state = state;
}
function notice(kind, text) {
  vp.notices.push({ kind, text });
  const box = $("notice");
  box.hidden = !text;
  box.className = `notice ${kind}`;
  box.textContent = text;
}
function mode() {
  return document.querySelector("input[name=mode]:checked").value;
}

// --- codecs: WebCodecs where the browser has it, the vendored libopus wasm otherwise ---------------
// WebCodecs is fed at 48 kHz, the microphone's own rate: its Opus encoder runs at 48 kHz anyway, and
// resampling twice (to 16 kHz in the page, back up in the encoder) measurably hurt the transcripts.
// Opus packets do not carry a rate: the gateway decodes them at the 16 kHz the hello declares.
const WEBCODECS_RATE = 48000;
async function makeEncoder(onPacket) {
  const config = {
    codec: "opus",
    sampleRate: WEBCODECS_RATE,
    numberOfChannels: 1,
    bitrate: Number(new URLSearchParams(location.search).get("bitrate")) || 32000,
    opus: { frameDuration: UP_FRAME_MS * 1000, format: "opus", application: "voip", complexity: Number(params.get("complexity")) || 10 },
  };
  if (!forceWasm && "AudioEncoder" in window && (await AudioEncoder.isConfigSupported(config).catch(() => ({}))).supported) {
    const enc = new AudioEncoder({
      output: (chunk) => {
        const bytes = new Uint8Array(chunk.byteLength);
        chunk.copyTo(bytes);
        onPacket(bytes);
      },
      error: (e) => notice("error", `Opus encoder failed: ${e.message}`),
    });
    enc.configure(config);
    let ts = 0;
    vp.codec.encoder = "WebCodecs";
    return {
      rate: WEBCODECS_RATE,
      encode(frame) {
        enc.encode(new AudioData({ format: "f32", sampleRate: WEBCODECS_RATE, numberOfFrames: frame.length,
          numberOfChannels: 1, timestamp: ts, data: frame }));
        ts += UP_FRAME_MS * 1000;
      },
    };
  }
  const { Encoder } = await import("/static/vendor/opus-wasm.mjs");
  const enc = new Encoder({ channels: 1, sample_rate: UP_RATE, application: "voip" });
  vp.codec.encoder = "libopus wasm";
  return {
    rate: UP_RATE,
    encode(frame) {
      const pcm = new Int16Array(frame.length);
      for (let i = 0; i < frame.length; i++) pcm[i] = Math.max(-1, Math.min(1, frame[i])) * 32767;
      onPacket(enc.encode(new Uint8Array(pcm.buffer)));
    },
  };
}

async function makeDecoder(rate, onPcm) {
  const config = { codec: "opus", sampleRate: rate, numberOfChannels: 1 };
  if (!forceWasm && "AudioDecoder" in window && (await AudioDecoder.isConfigSupported(config).catch(() => ({}))).supported) {
    let ts = 0;
    let discardBelow = 0; // packets sent to the decoder before an abort: their output is dropped
    const dec = new AudioDecoder({
      output: (data) => {
        if (data.timestamp < discardBelow) {
          data.close(); // decoded after the abort (WebCodecs is asynchronous): never played
          return;
        }
        const pcm = new Float32Array(data.numberOfFrames);
        data.copyTo(pcm, { planeIndex: 0, format: "f32-planar" });
        const decodedRate = data.sampleRate; // WebCodecs may decode Opus at 48 kHz whatever was asked
        data.close();
        onPcm(pcm, decodedRate);
      },
      error: (e) => notice("error", `Opus decoder failed: ${e.message}`),
    });
    dec.configure(config);
    vp.codec.decoder = "WebCodecs";
    return {
      decode(packet) {
        dec.decode(new EncodedAudioChunk({ type: "key", timestamp: ts, data: packet }));
        ts += 60000;
      },
      discardPending() {
        discardBelow = ts;
      },
    };
  }
  const { Decoder } = await import("/static/vendor/opus-wasm.mjs");
  const dec = new Decoder({ channels: 1, sample_rate: rate });
  vp.codec.decoder = "libopus wasm";
  return {
    decode(packet) {
      const bytes = dec.decode(packet);
      const pcm16 = new Int16Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 2);
      onPcm(Float32Array.from(pcm16, (v) => v / 32768), rate);
    },
    discardPending() {}, // synchronous: nothing is pending
  };
}

// --- playback: schedule each decoded frame right after the previous one -------------------------
let player = null;
let playAt = 0;
let playing = [];
function play(pcm, rate) {
  vp.decodedSamples += pcm.length;
  vp.decodedSeconds += pcm.length / rate;
  for (const v of pcm) vp.sumSquares += v * v;
  vp.rms = Math.sqrt(vp.sumSquares / vp.decodedSamples);
  if (currentTurn) currentTurn.audioSeconds += pcm.length / rate;
  if (vp.abortedAt) vp.playedAfterAbort++; // must stay 0: an aborted reply is silent at once
  if (!player) return;
  const buffer = player.createBuffer(1, pcm.length, rate);
  buffer.copyToChannel(pcm, 0);
  const source = player.createBufferSource();
  source.buffer = buffer;
  source.connect(player.destination);
  // A small lead absorbs network jitter; a late frame starts now rather than in the past.
  playAt = Math.max(playAt, player.currentTime + 0.08);
  source.start(playAt);
  playAt += buffer.duration;
  playing.push(source);
  vp.replySources = playing.length;
  source.onended = () => {
    playing = playing.filter((s) => s !== source);
    vp.replySources = playing.length;
  };
}
function stopPlayback() {
  if (decoder) decoder.discardPending();
  for (const s of playing) s.stop();
  playing = [];
  vp.replySources = 0;
  playAt = 0;
}

// --- microphone ------------------------------------------------------------------------------
let mic = null; // { ctx, stream, node }
let encoder = null;
let listening = false; // a listen start is open
let speaking = false; // between tts start and tts stop
let lastVoicedAt = null;
let bargeMs = 0; // speech heard over the reply, net (see BARGE_HOLD_MS)
let preroll = []; // the last frames heard over the reply
let stopOwed = false; // we aborted: the server's tts stop answers that, it does not end a new turn
let levelEl = $("level").firstElementChild;

async function openMic() {
  if (mic) return true;
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    notice("error", "This page needs microphone access, which browsers only give to https:// pages or localhost. Open it as http://localhost:8000/ or behind TLS.");
    return false;
  }
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({
      audio: { channelCount: 1, echoCancellation: false, noiseSuppression: false, autoGainControl: false },
    });
  } catch (e) {
    const denied = e.name === "NotAllowedError" || e.name === "SecurityError";
    notice("error", denied
      ? "Microphone access was denied. Allow the microphone for this site (the icon in the address bar) and press Connect again."
      : `No usable microphone (${e.name}: ${e.message}).`);
    vp.micError = e.name;
    return false;
  }
  encoder = await makeEncoder((packet) => {
    if (ws && ws.readyState === WebSocket.OPEN) {
      ws.send(packet);
      vp.framesSent++;
      if (vp.recordMic) vp.sentPackets.push(Array.from(packet));
    }
  });
  const ctx = new AudioContext({ sampleRate: encoder.rate });
  await ctx.audioWorklet.addModule("/static/mic-worklet.js");
  const frameSamples = (encoder.rate * UP_FRAME_MS) / 1000;
  const node = new AudioWorkletNode(ctx, "mic-frames", { processorOptions: { frameSamples } });
  ctx.createMediaStreamSource(stream).connect(node);
  node.port.onmessage = (event) => onMicFrame(event.data);
  mic = { ctx, stream, node };
  return true;
}

function onMicFrame(frame) {
  let sum = 0;
  for (const v of frame) sum += v * v;
  const rms = Math.sqrt(sum / frame.length);
  levelEl.style.width = `${Math.min(100, rms * 400)}%`;
  if (!ws || ws.readyState !== WebSocket.OPEN) return;
  if (speaking) {
    if (mode() !== "auto" || !$("bargein").checked) return;
    preroll.push(frame);
    if (preroll.length > PREROLL_FRAMES) preroll.shift();
    bargeMs = rms > BARGE_RMS ? bargeMs + UP_FRAME_MS : Math.max(0, bargeMs - UP_FRAME_MS);
    if (bargeMs >= BARGE_HOLD_MS) bargeIn("voice");
    return;
  }
  if (!listening) return;
  sendMic(frame, rms);
}

function sendMic(frame, rms) {
  if (rms > VOICED_RMS) {
    lastVoicedAt = vp.lastVoicedAt = performance.now();
    vp.voicedFrames++;
    if (!currentTurn || currentTurn.done) newTurn();
  }
  if (vp.recordMic) vp.micFrames.push(Array.from(frame)); // a test hook: what was sent, before Opus
  encoder.encode(frame);
}

// --- turns -------------------------------------------------------------------------------------
let currentTurn = null;
function newTurn() {
  currentTurn = { n: vp.turns.length + 1, transcript: "", reply: "", sttMs: null, firstTokenMs: null,
    firstAudioMs: null, audioSeconds: 0, aborted: false, done: false, speechEnd: null };
  vp.turns.push(currentTurn);
  const row = document.createElement("tr");
  row.id = `turn-${currentTurn.n}`;
  row.innerHTML = "<td></td><td class=said></td><td class=reply></td><td class=stt></td><td class=tok></td><td class=aud></td><td class=secs></td>";
  row.cells[0].textContent = currentTurn.n;
  $("turns").tBodies[0].prepend(row);
  return currentTurn;
}
function since(turn) {
  // The latencies start where the user stopped speaking: the last frame above the voice threshold.
  if (turn.speechEnd === null) turn.speechEnd = lastVoicedAt ?? performance.now();
  return Math.round(performance.now() - turn.speechEnd);
}
function render(turn) {
  const row = $(`turn-${turn.n}`);
  if (!row) return;
  row.querySelector(".said").textContent = turn.transcript;
  row.querySelector(".reply").textContent = turn.reply + (turn.aborted ? " [stopped]" : "");
  row.querySelector(".stt").textContent = turn.sttMs ?? "";
  row.querySelector(".tok").textContent = turn.firstTokenMs ?? "";
  row.querySelector(".aud").textContent = turn.firstAudioMs ?? "";
  row.querySelector(".secs").textContent = turn.audioSeconds ? turn.audioSeconds.toFixed(1) : "";
}

// --- connection ----------------------------------------------------------------------------------
let ws = null;
let decoder = null;
let wanted = false; // the user wants a connection (reconnect after a loss)
let retryDelay = 1;
let retryTimer = null;
let downRate = 24000;

function wsUrl() {
  const q = new URLSearchParams({ "device-id": identity.deviceId, "client-id": identity.clientId, "protocol-version": "1" });
  const token = localStorage.getItem("vp.token");
  if (token) q.set("authorization", `Bearer ${token}`);
  return `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/xiaozhi/v1/?${q}`;
}

function send(body) {
  if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(body));
}

function listenStart() {
  listening = true;
  send({ type: "listen", state: "start", mode: mode() });
  setState(mode() === "auto" ? "listening (hands-free)" : "listening");
}
function listenStop() {
  if (!listening) return;
  listening = false;
  send({ type: "listen", state: "stop" });
  setState("thinking");
}

async function connect() {
  wanted = true;
  clearTimeout(retryTimer);
  if (!(await openMic())) {
    wanted = false;
    return;
  }
  if (!player) player = new AudioContext();
  await player.resume();
  setState("connecting");
  let refused = false;
  let busy = false;
  const socket = (ws = new WebSocket(wsUrl()));
  socket.binaryType = "arraybuffer";
  socket.onopen = () => {
    send({ type: "hello", version: 1, transport: "websocket", features: {},
      audio_params: { format: "opus", sample_rate: UP_RATE, channels: 1, frame_duration: UP_FRAME_MS } });
  };
  socket.onmessage = async (event) => {
    if (typeof event.data !== "string") {
      if (!decoder) return;
      if (vp.abortedAt) {
        vp.framesAfterAbort++; // already on the wire when the abort left: not played
        return;
      }
      if (currentTurn && currentTurn.firstAudioMs === null && !currentTurn.done) {
        currentTurn.firstAudioMs = since(currentTurn);
        render(currentTurn);
      }
      decoder.decode(new Uint8Array(event.data));
      return;
    }
    if (event.data === "认证失败") {
      refused = true; // the reference server's words before close 4001
      return;
    }
    let msg;
    try {
      msg = JSON.parse(event.data);
    } catch {
      return;
    }
    onMessage(msg);
    if (msg.type === "error" && msg.code === "busy") busy = true;
  };
  socket.onclose = (event) => {
    if (socket !== ws) return;
    vp.closeCode = event.code;
    listening = speaking = false;
    decoder = null;
    $("talk").disabled = $("abort").disabled = true;
    $("connect").textContent = "Connect";
    stopPlayback();
    if (refused || event.code === 4001) {
      wanted = false;
      setState("refused");
      $("token-box").hidden = false;
      notice("error", localStorage.getItem("vp.token")
        ? "The gateway refused this device's token (认证失败, close 4001). Paste a valid token below."
        : "The gateway requires a device token (认证失败, close 4001). Paste one below.");
      return;
    }
    if (!wanted) {
      setState("disconnected");
      return;
    }
    if (busy || event.code === 1013) {
      notice("warn", `The server is busy (at capacity). Retrying in ${retryDelay} s…`);
    } else if (event.code === 4003) {
      notice("warn", "Closed after a long silence (idle timeout). Press Connect to talk again.");
      wanted = false;
      setState("disconnected");
      return;
    } else {
      notice("warn", `Connection lost (code ${event.code}${event.reason ? ": " + event.reason : ""}). Reconnecting in ${retryDelay} s…`);
    }
    setState("reconnecting");
    retryTimer = setTimeout(connect, retryDelay * 1000);
    retryDelay = Math.min(RECONNECT_MAX_S, retryDelay * 2);
  };
}

async function onMessage(msg) {
  const turn = currentTurn;
  switch (msg.type) {
    case "hello":
      downRate = (msg.audio_params && msg.audio_params.sample_rate) || 24000;
      decoder = await makeDecoder(downRate, play);
      $("codec").textContent = `Opus: ${vp.codec.encoder} up, ${vp.codec.decoder} down`;
      retryDelay = 1;
      notice("", "");
      setState("connected");
      $("talk").disabled = mode() === "auto";
      $("abort").disabled = false;
      $("connect").textContent = "Disconnect";
      if (mode() === "auto") listenStart();
      break;
    case "stt":
      if (!turn || turn.done) newTurn();
      currentTurn.transcript = msg.text || "";
      currentTurn.sttMs = since(currentTurn);
      render(currentTurn);
      setState("thinking");
      break;
    case "llm":
      if (turn && !turn.done && turn.firstTokenMs === null) turn.firstTokenMs = since(turn);
      if (turn) render(turn);
      break;
    case "tts":
      if (msg.state === "start") {
        speaking = true;
        stopOwed = false;
        bargeMs = 0;
        preroll = [];
        // What reached us of the aborted reply after the abort (dropped, not played).
        if (vp.abortedAt && vp.aborts.length) vp.aborts[vp.aborts.length - 1].lateFrames = vp.framesAfterAbort;
        vp.abortedAt = null; // a new reply: its frames are not late frames of the aborted one
        setState("speaking");
      } else if (msg.state === "sentence_start" && turn && !turn.done) {
        if (turn.firstTokenMs === null) turn.firstTokenMs = since(turn);
        turn.reply += (turn.reply ? " " : "") + (msg.text || "");
        render(turn);
      } else if (msg.state === "stop") {
        speaking = false;
        if (stopOwed) {
          stopOwed = false; // the answer to our abort: the page has moved on already
          if (vp.aborts.length) vp.aborts[vp.aborts.length - 1].answered = true;
          break;
        }
        if (turn && !turn.done) {
          turn.done = true;
          render(turn);
        }
        // Hands-free: listen again once the reply has finished playing, as the firmware does.
        const left = player ? Math.max(0, playAt - player.currentTime) : 0;
        setTimeout(() => {
          if (turn) render(turn);
          if (mode() === "auto" && ws && ws.readyState === WebSocket.OPEN && !speaking) listenStart();
          else if (ws && ws.readyState === WebSocket.OPEN && !speaking) setState("connected");
        }, left * 1000);
      }
      break;
    case "error":
      if (msg.code === "busy") notice("warn", "The server is busy (at capacity).");
      else notice("warn", `Server says ${msg.code}: ${msg.message}`);
      break;
  }
}

function disconnect() {
  wanted = false;
  clearTimeout(retryTimer);
  if (ws) ws.close(1000, "bye");
  setState("disconnected");
}

// --- controls ----------------------------------------------------------------------------------
$("connect").onclick = () => (ws && ws.readyState <= WebSocket.OPEN ? disconnect() : connect());
const talk = $("talk");
const press = (e) => {
  e.preventDefault();
  if (talk.disabled || (listening && !speaking)) return;
  lastVoicedAt = null;
  if (speaking) bargeIn("press"); // talking over the reply interrupts it, as on the device
  else listenStart();
  talk.classList.add("down");
};
const release = () => {
  if (!listening || mode() !== "manual") return;
  talk.classList.remove("down");
  listenStop();
};
talk.addEventListener("pointerdown", press);
talk.addEventListener("pointerup", release);
talk.addEventListener("pointerleave", release);
document.addEventListener("keydown", (e) => e.code === "Space" && !e.repeat && e.target === document.body && press(e));
document.addEventListener("keyup", (e) => e.code === "Space" && e.target === document.body && release());

// Stop the reply now: abort (the server cancels the reply and answers tts stop), silence what was
// scheduled, drop the frames still in flight, close the turn. `reason` as the firmware sends it:
// none for a button, wake_word_detected when the user talks over the reply.
function abort(reason, by = "button") {
  vp.abortedAt = performance.now();
  vp.framesAfterAbort = 0;
  vp.aborts.push({ reason: reason || null, by, at: vp.abortedAt, turn: currentTurn ? currentTurn.n : null });
  send(reason ? { type: "abort", reason } : { type: "abort" });
  stopOwed = speaking;
  speaking = false;
  bargeMs = 0;
  stopPlayback();
  if (currentTurn && !currentTurn.done) {
    currentTurn.aborted = currentTurn.done = true;
    render(currentTurn);
  }
}
// Talking over the reply (by voice, hands-free; by the button, push-to-talk): abort and listen at
// once, like the firmware's wake word during a reply (abort, then listen start). By voice, the
// frames that were heard go up first: they are the start of what the user is saying.
function bargeIn(by) {
  const heard = preroll;
  preroll = [];
  abort("wake_word_detected", by);
  listenStart();
  vp.aborts[vp.aborts.length - 1].playingAfter = vp.replySources; // 0: silent at once
  if (by === "press") return;
  for (const frame of heard) {
    let sum = 0;
    for (const v of frame) sum += v * v;
    sendMic(frame, Math.sqrt(sum / frame.length));
  }
}
function stopButton() {
  abort();
  if (mode() === "auto" && ws && ws.readyState === WebSocket.OPEN) listenStart(); // hands-free goes on
  else if (ws && ws.readyState === WebSocket.OPEN) setState("connected");
}
$("abort").onclick = stopButton;
document.querySelectorAll("input[name=mode]").forEach((r) =>
  r.addEventListener("change", () => {
    if (!ws || ws.readyState !== WebSocket.OPEN) return;
    talk.disabled = mode() === "auto";
    if (mode() === "auto" && !speaking) listenStart();
    else if (listening) listenStop();
  }));
$("token-save").onclick = () => {
  const token = $("token").value.trim();
  if (token) localStorage.setItem("vp.token", token);
  else localStorage.removeItem("vp.token");
  $("token-box").hidden = true;
  notice("", "");
  connect();
};
window.vpControls = { connect, disconnect, listenStart, listenStop, abort: stopButton };
