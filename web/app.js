// Call page wiring: loads /api/settings, builds the controls, runs one Call at a time and shows
// what the server says on the control channel (settings, stats, status, transcript, errors).

import { ApiError, apiFetch } from "./api.js";
import { Call } from "./call.js";
import { buildControls } from "./controls.js";
import { showStats, showTranscript, clearStats, clearTranscript } from "./panels.js";

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
  serverWarnings: [],
  callWarnings: [],
  decodeTimer: null,
};
// A handle for the browser console and the browser tests: window.speakdraw.state.call.pc etc.
window.speakdraw = { state };

function setStatus(text) {
  ui.status.textContent = text;
}

function showError(text) {
  ui.error.textContent = text;
  ui.error.hidden = !text;
}

function renderWarnings() {
  const all = [...state.serverWarnings, ...state.callWarnings];
  ui.warnings.replaceChildren(
    ...all.map((text) => {
      const li = document.createElement("li");
      li.textContent = text;
      return li;
    }),
  );
  ui.warnings.hidden = all.length === 0;
}

function addCallWarning(text) {
  if (!state.callWarnings.includes(text)) state.callWarnings.push(text);
  renderWarnings();
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
    case "status": {
      const engine = msg.engine || "engine";
      const readiness = msg.ready ? "" : " (not ready)";
      setStatus(msg.message ? `${engine}${readiness}: ${msg.message}` : `${engine} ${msg.ready ? "ready" : "not ready"}`);
      break;
    }
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
        addCallWarning(`server: ${msg.code}: ${msg.message}`);
      }
      break;
    default:
      break;
  }
}

async function pollDecoded() {
  // Browser-side truth: frames this browser actually decodes from the server's track.
  const call = state.call;
  if (!call) return;
  const stat = await call.inboundVideoStats().catch(() => null);
  if (stat && typeof stat.framesPerSecond === "number") ui.decodedFps.textContent = stat.framesPerSecond.toFixed(0);
  else if (stat) ui.decodedFps.textContent = "0";
}

function setInCall(inCall) {
  ui.start.disabled = inCall;
  ui.stop.disabled = !inCall;
  ui.switchCamera.disabled = !inCall;
}

async function startCall() {
  showError("");
  state.callWarnings = [];
  renderWarnings();
  clearStats();
  clearTranscript();
  setInCall(true);
  const call = new Call({
    onLocalStream(stream, facing) {
      ui.localVideo.srcObject = stream;
      ui.localVideo.classList.toggle("mirrored", facing === "user");
      ui.remoteVideo.classList.toggle("mirrored", facing === "user");
    },
    onRemoteStream(stream) {
      ui.remoteVideo.srcObject = stream;
      ui.remoteVideo.play().catch(() => {});
    },
    onMessage,
    onRtt(ms) {
      ui.rtt.textContent = `${ms.toFixed(0)} ms`;
    },
    onState: setStatus,
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
  if (!state.call) setStatus(loading ? "model loading… (calls use passthrough until it is ready)" : "ready to call");
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
