// Latency HUD and output tools: what the server and this browser measure, over the transformed video.
//
// It watches the call that app.js exposes as window.speakdraw.state.call (a Call from call.js), and needs
// nothing else from the page: it listens to the call's `control` channel itself (stats, pong) and polls
// the peer connection's getStats() once a second.
//
// Figures shown, and where each comes from:
// - server stages (matte / diffuse / encode / total, ms): the last frame's timings in the `stats` message;
//   "in server" is `shown_age_ms`, a frame's age from arrival to being handed to the encoder.
// - fps (decoded, this browser), jitter buffer (ms per frame over the last second), RTT (ICE candidate pair).
// - net: the server's send → this browser's receive time of a frame (requestVideoFrameCallback metadata:
//   receiveTime − captureTime, where captureTime comes from the server's RTP sender reports, i.e. the send
//   time it stamped). That crosses clocks: when the browser does not expose it, or its median is negative
//   (Chromium's sender-clock estimate is off, seen on loopback), half the data-channel ping RTT stands in.
// - display: receive → expected display of a frame (same metadata, this browser's clock only): jitter
//   buffer + decode + render; where missing, the getStats jitter-buffer delay stands in.
// - round trip (est.): a camera frame's way there and back: camera encode (getStats outbound-rtp) + uplink
//   (ping RTT / 2) + in server + net (downlink) + display. Not included, for want of a measurement: the
//   server's receive jitter buffer and decode before a frame reaches the pipeline.
//
// Keys: "h" toggles the HUD (not while typing). Output tools: snapshot (#snapshot in the call bar: a PNG of the
// remote video, client side), "open output" (the session's MJPEG stream) and "copy OBS URL" (the same,
// absolute, with token); the last two and the HUD button go into #output-tools ("More" on a phone).

import { token } from "./api.js";

const $ = (id) => document.getElementById(id);
const POLL_MS = 1000;
const STORAGE_KEY = "speakdraw.hud";

const hud = {
  // Shown by default on wide screens; on a phone it would cover much of the picture, so off until asked for.
  visible: (localStorage.getItem(STORAGE_KEY) || (matchMedia("(max-width: 700px)").matches ? "off" : "on")) === "on",
  call: null,
  channel: null, // the call's control channel we listen to
  server: null, // last stats message
  rttMs: null, // data-channel ping
  iceRttMs: null,
  fps: null,
  jitterMs: null,
  encodeMs: null, // this browser's camera encode time per frame
  frameNetMs: null, // receive − capture (send), median over recent frames' metadata
  netMs: null, // the downlink figure used: frameNetMs when usable, else ping RTT / 2
  netSource: null, // "frames" | "ping"
  displayMs: null, // receive → expected display
  roundTripMs: null,
  frames: 0, // frames seen by requestVideoFrameCallback
  prev: null, // previous inbound-rtp sample
  prevOut: null, // previous outbound-rtp sample
};
// For the console and the browser tests.
window.speakdraw = window.speakdraw || {};
window.speakdraw.hud = hud;

function fmt(value, digits = 0, unit = " ms") {
  return typeof value === "number" && Number.isFinite(value) ? `${value.toFixed(digits)}${unit}` : "–";
}

function outputUrl(sessionId, absolute) {
  const path = `/api/sessions/${encodeURIComponent(sessionId)}/stream.mjpg${token ? `?token=${encodeURIComponent(token)}` : ""}`;
  return absolute ? new URL(path, window.location.href).href : path;
}

// ---- DOM ---------------------------------------------------------------------------------------

function buildTools(box) {
  box.innerHTML = `
    <button id="hud-toggle" type="button" aria-pressed="false" title="Latency HUD (key: h)">HUD</button>
    <a id="open-output" class="button disabled" target="_blank" rel="noopener" aria-disabled="true"
       title="The transformed video as MJPEG, for a second screen">Open output</a>
    <button id="copy-obs-url" type="button" disabled title="MJPEG URL for an OBS media/browser source">Copy OBS URL</button>
    <input id="obs-url" type="text" readonly hidden aria-label="OBS URL" />`;
  $("hud-toggle").addEventListener("click", () => setVisible(!hud.visible));
  $("snapshot").addEventListener("click", snapshot);
  $("copy-obs-url").addEventListener("click", copyObsUrl);
}

function buildHud(box) {
  const rows = [
    ["fps", "hud-fps", "frames per second this browser decodes"],
    ["server", "hud-server", "last frame: matte / diffuse / encode / total (ms, server)"],
    ["in server", "hud-in-server", "a frame's age from arrival to the encoder (ms)"],
    ["jitter buf", "hud-jitter", "receiver jitter-buffer delay per frame (getStats)"],
    ["RTT", "hud-rtt", "ICE round trip (getStats) · data-channel ping"],
    ["net", "hud-net", "server send → browser receive of a frame (frames: measured; ping: RTT / 2)"],
    ["display", "hud-display", "browser receive → display of a frame (jitter buffer, decode, render)"],
    ["cam encode", "hud-encode", "this browser's camera encode time per frame (getStats)"],
    ["round trip", "hud-round-trip", "est. camera → screen: encode + uplink + in server + downlink + display"],
  ];
  box.innerHTML = rows
    .map(([label, id, title]) => `<div title="${title}"><span>${label}</span><b id="${id}">–</b></div>`)
    .join("");
}

function setVisible(visible) {
  hud.visible = visible;
  localStorage.setItem(STORAGE_KEY, visible ? "on" : "off");
  const box = $("hud");
  if (box) box.hidden = !visible;
  const button = $("hud-toggle");
  if (button) button.setAttribute("aria-pressed", String(visible));
}

function render() {
  const s = hud.server || {};
  const lat = s.latency_ms || {};
  $("hud-fps").textContent = hud.fps === null ? "–" : fmt(hud.fps, 1, "");
  $("hud-server").textContent = hud.server
    ? `${fmt(lat.matte, 0, "")} / ${fmt(lat.diffuse, 0, "")} / ${fmt(lat.encode, 0, "")} / ${fmt(lat.total, 0)}`
    : "–";
  $("hud-in-server").textContent = fmt(s.shown_age_ms, 0);
  $("hud-jitter").textContent = fmt(hud.jitterMs, 0);
  $("hud-rtt").textContent = `${fmt(hud.iceRttMs, 0, "")} · ${fmt(hud.rttMs, 0)}`;
  $("hud-net").textContent = hud.netMs === null ? "–" : `${fmt(hud.netMs, 0)} (${hud.netSource})`;
  $("hud-net").title = hud.frameNetMs === null ? "" : `frame metadata: receive − capture = ${fmt(hud.frameNetMs, 1)}`;
  $("hud-display").textContent = fmt(hud.displayMs, 0);
  $("hud-encode").textContent = fmt(hud.encodeMs, 0);
  $("hud-round-trip").textContent = hud.roundTripMs === null ? "–" : `${fmt(hud.roundTripMs, 0)} est.`;
}

function updateTools() {
  const id = hud.call && hud.call.sessionId;
  const link = $("open-output");
  if (id) {
    link.href = outputUrl(id, false);
    link.classList.remove("disabled");
    link.removeAttribute("aria-disabled");
  } else {
    link.removeAttribute("href");
    link.classList.add("disabled");
    link.setAttribute("aria-disabled", "true");
    $("obs-url").hidden = true;
  }
  $("copy-obs-url").disabled = !id;
  const video = $("remote-video");
  $("snapshot").disabled = !(id && video && video.videoWidth);
}

// ---- measurements ------------------------------------------------------------------------------

function estimateRoundTrip() {
  const s = hud.server;
  const rtt = hud.rttMs ?? hud.iceRttMs;
  if (!s || typeof s.shown_age_ms !== "number" || rtt === null || rtt === undefined) return null;
  const downlink = hud.netSource === "frames" ? hud.netMs : rtt / 2;
  const display = hud.displayMs ?? hud.jitterMs ?? 0;
  return (hud.encodeMs || 0) + rtt / 2 + s.shown_age_ms + downlink + display;
}

function recompute() {
  const rtt = hud.rttMs ?? hud.iceRttMs;
  if (hud.frameNetMs !== null && hud.frameNetMs >= 0) {
    hud.netMs = hud.frameNetMs;
    hud.netSource = "frames";
  } else if (typeof rtt === "number") {
    hud.netMs = rtt / 2;
    hud.netSource = "ping";
  }
  hud.roundTripMs = estimateRoundTrip();
}

function onChannelMessage(event) {
  let msg;
  try {
    msg = JSON.parse(event.data);
  } catch {
    return;
  }
  if (msg.type === "stats") {
    hud.server = msg;
  } else if (msg.type === "pong" && typeof msg.t === "number") {
    hud.rttMs = performance.now() - msg.t;
  } else {
    return;
  }
  recompute();
  render();
}

function median(values) {
  if (!values.length) return null;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
}

/** Per displayed frame: receive − capture where the browser gives both (Chromium does for WebRTC). */
function watchFrames(video, call) {
  if (!video || !("requestVideoFrameCallback" in HTMLVideoElement.prototype)) return;
  const samples = [];
  const onFrame = (now, meta) => {
    if (hud.call !== call) return;
    hud.frames += 1;
    if (typeof meta.receiveTime === "number" && meta.receiveTime > 0) {
      const net = typeof meta.captureTime === "number" && meta.captureTime > 0 ? meta.receiveTime - meta.captureTime : null;
      samples.push([net, meta.expectedDisplayTime - meta.receiveTime]);
      if (samples.length > 30) samples.shift();
      hud.frameNetMs = median(samples.map((s) => s[0]).filter((v) => v !== null));
      hud.displayMs = median(samples.map((s) => s[1]));
    }
    video.requestVideoFrameCallback(onFrame);
  };
  video.requestVideoFrameCallback(onFrame);
}

async function pollStats(call) {
  if (!call.pc) return;
  const report = await call.pc.getStats().catch(() => null);
  if (!report || hud.call !== call) return;
  let inbound = null;
  let outbound = null;
  let pair = null;
  for (const stat of report.values()) {
    if (stat.type === "inbound-rtp" && stat.kind === "video") inbound = stat;
    if (stat.type === "outbound-rtp" && stat.kind === "video") outbound = stat;
    if (stat.type === "candidate-pair" && stat.nominated && stat.state === "succeeded") pair = stat;
  }
  if (pair && typeof pair.currentRoundTripTime === "number") hud.iceRttMs = pair.currentRoundTripTime * 1000;
  const prevOut = hud.prevOut;
  if (outbound && typeof outbound.totalEncodeTime === "number") {
    if (prevOut && outbound.framesEncoded > prevOut.framesEncoded) {
      hud.encodeMs =
        ((outbound.totalEncodeTime - prevOut.totalEncodeTime) * 1000) / (outbound.framesEncoded - prevOut.framesEncoded);
    }
    hud.prevOut = { framesEncoded: outbound.framesEncoded, totalEncodeTime: outbound.totalEncodeTime };
  }
  if (inbound) {
    const prev = hud.prev;
    if (typeof inbound.framesPerSecond === "number") hud.fps = inbound.framesPerSecond;
    else if (prev && inbound.timestamp > prev.timestamp) {
      hud.fps = ((inbound.framesDecoded - prev.framesDecoded) * 1000) / (inbound.timestamp - prev.timestamp);
    } else hud.fps = 0;
    if (prev && typeof inbound.jitterBufferDelay === "number") {
      const emitted = inbound.jitterBufferEmittedCount - prev.jitterBufferEmittedCount;
      if (emitted > 0) hud.jitterMs = ((inbound.jitterBufferDelay - prev.jitterBufferDelay) * 1000) / emitted;
    }
    hud.prev = {
      timestamp: inbound.timestamp,
      framesDecoded: inbound.framesDecoded || 0,
      jitterBufferDelay: inbound.jitterBufferDelay || 0,
      jitterBufferEmittedCount: inbound.jitterBufferEmittedCount || 0,
    };
  }
  recompute();
  render();
}

// ---- call tracking ------------------------------------------------------------------------------

function attach(call) {
  detach();
  hud.call = call;
  watchFrames($("remote-video"), call);
}

function detach() {
  if (hud.channel) hud.channel.removeEventListener("message", onChannelMessage);
  Object.assign(hud, {
    call: null,
    channel: null,
    server: null,
    rttMs: null,
    iceRttMs: null,
    fps: null,
    jitterMs: null,
    frameNetMs: null,
    netMs: null,
    netSource: null,
    displayMs: null,
    roundTripMs: null,
    frames: 0,
    prev: null,
    prevOut: null,
    encodeMs: null,
  });
  render();
}

function tick() {
  const state = window.speakdraw && window.speakdraw.state;
  const call = state && state.call && !state.call.closed ? state.call : null;
  if (call !== hud.call) {
    if (call) attach(call);
    else detach();
  }
  // The channel exists once start() has run, which may be after attach().
  if (call && call.channel && call.channel !== hud.channel) {
    if (hud.channel) hud.channel.removeEventListener("message", onChannelMessage);
    hud.channel = call.channel;
    hud.channel.addEventListener("message", onChannelMessage);
  }
  if (call) pollStats(call);
  updateTools();
}

// ---- output tools -------------------------------------------------------------------------------

function snapshot() {
  const video = $("remote-video");
  if (!video || !video.videoWidth) return;
  const canvas = document.createElement("canvas");
  canvas.width = video.videoWidth;
  canvas.height = video.videoHeight;
  canvas.getContext("2d").drawImage(video, 0, 0); // the frame as sent: CSS mirroring does not apply
  canvas.toBlob((blob) => {
    if (!blob) return;
    const a = document.createElement("a");
    a.href = URL.createObjectURL(blob);
    a.download = `speakdraw-${new Date().toISOString().replace(/[:.]/g, "-")}.png`;
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(a.href), 10000);
  }, "image/png");
}

async function copyObsUrl() {
  const id = hud.call && hud.call.sessionId;
  if (!id) return;
  const url = outputUrl(id, true);
  const field = $("obs-url");
  field.value = url;
  const button = $("copy-obs-url");
  try {
    await navigator.clipboard.writeText(url);
    button.textContent = "Copied";
    field.hidden = true;
  } catch {
    // No clipboard (plain http on a LAN address is not a secure context): show it, selected, to copy by hand.
    field.hidden = false;
    field.select();
    button.textContent = "Copy OBS URL";
  }
  setTimeout(() => (button.textContent = "Copy OBS URL"), 2000);
}

function onKey(event) {
  if (event.key !== "h" || event.ctrlKey || event.metaKey || event.altKey) return;
  const target = event.target;
  if (target && (target.isContentEditable || ["INPUT", "TEXTAREA", "SELECT"].includes(target.tagName))) return;
  setVisible(!hud.visible);
}

function init() {
  const tools = $("output-tools");
  const box = $("hud");
  if (!tools || !box) return; // page without the hooks
  buildTools(tools);
  buildHud(box);
  setVisible(hud.visible);
  render();
  updateTools();
  document.addEventListener("keydown", onKey);
  setInterval(tick, POLL_MS);
  // React quickly when a call starts or the remote video begins.
  $("remote-video").addEventListener("loadeddata", tick);
}

init();
