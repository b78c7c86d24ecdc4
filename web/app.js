// Call page wiring: loads /api/settings, builds the controls, runs one Call at a time and shows
// what the server says on the control channel (settings, stats, status, transcript, errors).
// During a call the screen is kept on (wake_lock.js) and the painted video can be recorded (recorder.js).

import { ApiError, apiFetch } from "./api.js";
import { Call } from "./call.js";
import { buildControls } from "./controls.js";
import { callNotice, isOnlyWarnings, renderNotices } from "./notices.js";
import { showStats, showTranscript, clearStats, clearTranscript } from "./panels.js";
import { ClipRecorder } from "./recorder.js";
import { ScreenWake } from "./wake_lock.js";

const $ = (id) => document.getElementById(id);
const ui = {
  status: $("status"),
  error: $("error"),
  warnings: $("warnings"),
  start: $("start"),
  stop: $("stop"),
  switchCamera: $("switch-camera"),
  localVideo: $("local-video"),
  remoteVideo: $("remote-video"),
  promptForm: $("prompt-form"),
  prompt: $("prompt"),
  activePrompt: $("active-prompt"),
  settingsError: $("settings-error"),
  serverInfo: $("server-info"),
  rtt: $("stats-rtt"),
  decodedFps: $("stats-decoded-fps"),
};

const state = {
  call: null,
  controls: null,
  defaults: {}, // the server's default settings
  current: {}, // the last settings the server confirmed (or its defaults before a call)
  serverWarnings: [], // the server's technical warnings (its status messages repeat them)
  serverNotices: [], // the same as {summary, detail}
  callNotices: [], // this call's, from the page and the channel
  decodeTimer: null,
  callStatus: "", // the last line the server gave this call (a status message): "In the call", "working at ..."
};
// A handle for the browser console and the browser tests: window.speakdraw.state.call.pc etc.
window.speakdraw = Object.assign(window.speakdraw || {}, { state });

const wake = new ScreenWake({
  onRefused: (detail) => addCallNotice("The screen may turn off during the call: this browser didn't keep it on", detail),
});
window.speakdraw.wakeLock = wake.state;

const recorder = new ClipRecorder(
  { button: $("record"), label: $("record-label"), chip: $("rec-timer"), time: $("rec-time"), link: $("record-download") },
  { onWarning: (summary, detail) => addCallNotice(summary, detail) },
);
window.speakdraw.recorder = recorder.state;

function setStatus(text) {
  ui.status.textContent = text;
}

/** The server's word on the call: kept, so that a later "connection connected" does not hide it. */
function setCallStatus(text) {
  state.callStatus = text;
  setStatus(text);
}

/**
 * The peer connection's state. "connected" may fire after the server's first status message (the control channel
 * can open first on a busy machine); the call's status then stays what the server said.
 */
function showConnectionState(text) {
  setStatus(text === "connection connected" && state.callStatus ? state.callStatus : text);
}

function showError(text) {
  ui.error.textContent = text;
  ui.error.hidden = !text;
}

function renderWarnings() {
  renderNotices(ui.warnings, [...state.serverNotices, ...state.callNotices]);
}

/** A notice for this call: one plain sentence, the technical detail on a tap; each one once. */
function addCallNotice(summary, detail = "") {
  if (!state.callNotices.some((n) => n.summary === summary && n.detail === detail)) {
    state.callNotices.push({ summary, detail });
  }
  renderWarnings();
}

/** Call and page warnings (text in call.js's terms) as notices. */
function addCallWarning(text) {
  const notice = callNotice(text);
  addCallNotice(notice.summary, notice.detail);
}

function setActivePrompt(text) {
  ui.activePrompt.textContent = text || "";
}

function applyConfirmed(settings) {
  state.current = { ...state.current, ...settings };
  if (state.controls) state.controls.set(state.current);
  setActivePrompt(state.current.prompt);
}

/** What the person changed: sent with the offer so a new call starts as the page shows. */
function changedFromDefaults() {
  const changed = {};
  for (const [key, value] of Object.entries(state.current)) {
    if (JSON.stringify(value) !== JSON.stringify(state.defaults[key])) changed[key] = value;
  }
  return changed;
}

/** Send a partial Settings: over the channel during a call, else keep it for the offer. */
function sendSettings(partial) {
  ui.settingsError.hidden = true;
  if (state.call && state.call.send({ type: "settings", settings: partial })) return;
  state.current = { ...state.current, ...partial }; // goes with the next offer
  if ("prompt" in partial) setActivePrompt(partial.prompt);
}

function onMessage(msg) {
  switch (msg.type) {
    case "settings":
      applyConfirmed(msg.settings || {});
      break;
    case "stats":
      showStats(msg);
      break;
    case "status":
      showCallStatus(msg);
      break;
    case "transcript":
      // The active prompt follows the server's `settings` reply, not the final itself:
      // a final may be a spoken command ("stronger") or be ignored (voice prompts off).
      showTranscript(msg);
      break;
    case "command":
      setStatus(`voice command: ${msg.description || msg.command}`);
      break;
    case "error":
      if (msg.code === "invalid_settings") {
        ui.settingsError.textContent = `Refused: ${msg.message}`;
        ui.settingsError.hidden = false;
        if (state.controls) state.controls.set(state.current, { force: true });
      } else {
        addCallNotice(msg.message || "The server reported a problem", `server error ${msg.code}: ${msg.message}`);
      }
      break;
    default:
      break;
  }
}

/**
 * The server's status in the status line. It repeats the server's warnings, already shown once as notices:
 * then the line says only where the call is. Warnings that appeared after the page loaded (the model finished
 * loading meanwhile) are fetched once before deciding.
 */
async function showCallStatus(msg, refreshed = false) {
  const message = msg.message || "";
  const routine = !message || message === "ready" || message.startsWith("loading ");
  if (routine || isOnlyWarnings(message, state.serverWarnings)) {
    setCallStatus(msg.ready ? "In the call" : "In the call: the painter is loading, you see your camera until it is ready");
    return;
  }
  if (!refreshed) {
    const info = await apiFetch("/api/settings").catch(() => null);
    if (info) {
      showServer(info.server || {});
      if (state.call) showCallStatus(msg, true);
      return;
    }
  }
  setCallStatus(message); // something else: a pipeline fault and what was done about it
}

async function pollDecoded() {
  // Browser-side truth: frames this browser actually decodes from the server's track.
  const call = state.call;
  if (!call) return;
  const stat = await call.inboundVideoStats().catch(() => null);
  if (stat && typeof stat.framesPerSecond === "number") ui.decodedFps.textContent = stat.framesPerSecond.toFixed(0);
  else if (stat) ui.decodedFps.textContent = "0";
}

/** In a call the bar shows "Hang up" where "Start call" was (keyboard focus moves along). */
function setInCall(inCall) {
  const focused = document.activeElement;
  ui.start.disabled = inCall;
  ui.start.hidden = inCall;
  ui.stop.disabled = !inCall;
  ui.stop.hidden = !inCall;
  ui.switchCamera.disabled = !inCall;
  if (focused === ui.start && inCall) ui.stop.focus();
  if (focused === ui.stop && !inCall) ui.start.focus();
}

async function startCall() {
  showError("");
  state.callStatus = "";
  state.callNotices = [];
  renderWarnings();
  clearStats();
  clearTranscript();
  setInCall(true);
  wake.acquire(); // not awaited: a refusal only adds a notice
  const call = new Call({
    onLocalStream(stream, facing) {
      ui.localVideo.srcObject = stream;
      ui.localVideo.classList.toggle("mirrored", facing === "user");
      ui.remoteVideo.classList.toggle("mirrored", facing === "user");
    },
    onRemoteStream(stream) {
      ui.remoteVideo.srcObject = stream;
      ui.remoteVideo.play().catch(() => {});
      recorder.setStream(stream);
    },
    onMessage,
    onRtt(ms) {
      ui.rtt.textContent = `${ms.toFixed(0)} ms`;
    },
    onState: showConnectionState,
    onWarning: addCallWarning,
    currentSettings: changedFromDefaults,
    onEnded(reason) {
      if (state.call === call) endCallUi(reason);
    },
  });
  state.call = call;
  try {
    await call.start(changedFromDefaults());
    state.decodeTimer = setInterval(pollDecoded, 1000);
  } catch (err) {
    const message = err instanceof ApiError ? `${err.message} [${err.code}]` : err.message || String(err);
    if (err instanceof ApiError && err.code === "invalid_settings") {
      // A value chosen before the call was refused: drop the pending changes, show why.
      applyConfirmed(state.defaults);
      state.controls.set(state.current, { force: true });
      ui.settingsError.textContent = `Refused: ${err.message}`;
      ui.settingsError.hidden = false;
    }
    showError(`Could not start the call: ${message}`);
    call.stop("failed to start");
  }
}

function endCallUi(reason) {
  clearInterval(state.decodeTimer);
  state.decodeTimer = null;
  state.call = null;
  recorder.setStream(null); // a recording stops here; its clip stays to save
  wake.release();
  ui.localVideo.srcObject = null;
  ui.remoteVideo.srcObject = null;
  setInCall(false);
  setStatus(reason);
}

async function init() {
  ui.start.addEventListener("click", startCall);
  ui.stop.addEventListener("click", () => state.call && state.call.stop("call ended"));
  ui.switchCamera.addEventListener("click", async () => {
    if (!state.call) return;
    ui.switchCamera.disabled = true;
    try {
      await state.call.switchCamera();
    } catch (err) {
      addCallWarning(`camera switch failed: ${err.message}`);
    } finally {
      ui.switchCamera.disabled = !state.call;
    }
  });
  ui.promptForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const text = ui.prompt.value.trim();
    if (!text) return;
    ui.settingsError.hidden = true;
    if (!(state.call && state.call.send({ type: "prompt", text }))) sendSettings({ prompt: text });
    ui.prompt.value = "";
  });
  window.addEventListener("pagehide", () => state.call && state.call.stop("page closed"));

  let info;
  try {
    info = await apiFetch("/api/settings");
  } catch (err) {
    showError(`Cannot load server settings: ${err.message}`);
    setStatus("not connected");
    return;
  }
  state.controls = buildControls(info.schema, $("controls"), $("controls-more"), sendSettings);
  state.defaults = info.defaults || {};
  applyConfirmed(state.defaults);
  showServer(info.server || {});
  ui.start.disabled = false;
}

/** Server capabilities and warnings; while its model loads, look again every 2 s. */
function showServer(server) {
  state.serverWarnings = (server.warnings || []).map(String);
  // `notices` (one plain sentence each) where the server has them; its bare warnings otherwise.
  state.serverNotices = Array.isArray(server.notices)
    ? server.notices.map((n) => ({ summary: String(n.summary), detail: String(n.detail || "") }))
    : state.serverWarnings.map((text) => ({ summary: text, detail: "" }));
  renderWarnings();
  const parts = [
    `engine ${server.engine}`,
    server.model ? `model ${server.model}` : null,
    `device ${server.device}`,
    `speech ${server.stt}`,
    `matting ${server.matting}`,
  ].filter(Boolean);
  ui.serverInfo.textContent = parts.join(" · ");
  const transcript = $("transcript");
  transcript.dataset.empty =
    !server.stt || server.stt === "off" ? "Speech recognition is off on this server." : "What you say shows here.";
  const loading = server.ready === false;
  if (!state.call) setStatus(loading ? "The painter is loading: a call shows your camera until it is ready" : "Ready to call");
  if (loading) {
    setTimeout(async () => {
      try {
        showServer((await apiFetch("/api/settings")).server || {});
      } catch (err) {
        addCallWarning(`server settings: ${err.message}`);
      }
    }, 2000);
  }
}

init();
