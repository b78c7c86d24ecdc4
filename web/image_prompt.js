// Image prompt (IP-Adapter): upload a picture, or grab the current camera frame, and the stream takes its look.
//
// Standalone, like hud.js: it reads the call that app.js exposes as window.speakdraw.state.call (its
// sessionId) and talks to POST/DELETE /api/sessions/{id}/image-prompt itself. Whether the loaded model
// can take image prompts comes from /api/settings (server.features.image_prompt, and
// server.image_prompt_reason when it cannot): then every control is disabled and the reason is shown.
// A picture chosen before a call is kept and sent when the call starts.

import { token } from "./api.js";

const $ = (id) => document.getElementById(id);
const ui = {
  panel: $("image-prompt-panel"),
  file: $("image-prompt-file"),
  grab: $("image-prompt-grab"),
  clear: $("image-prompt-clear"),
  reason: $("image-prompt-reason"),
  status: $("image-prompt-status"),
  preview: $("image-prompt-preview"),
  localVideo: $("local-video"),
};

const state = {
  available: false,
  reason: "loading…",
  sessionId: null,
  pending: null, // a Blob chosen before the call, sent when one starts
  active: false, // the server confirmed an image prompt for this call
};
window.speakdraw = window.speakdraw || {};
window.speakdraw.imagePrompt = state;

function authHeaders(extra = {}) {
  return token ? { ...extra, Authorization: `Bearer ${token}` } : extra;
}

function setStatus(text, isError = false) {
  ui.status.textContent = text;
  ui.status.classList.toggle("error", isError);
}

function showPreview(blob) {
  if (ui.preview.dataset.url) URL.revokeObjectURL(ui.preview.dataset.url);
  if (!blob) {
    ui.preview.hidden = true;
    ui.preview.removeAttribute("src");
    delete ui.preview.dataset.url;
    return;
  }
  const url = URL.createObjectURL(blob);
  ui.preview.dataset.url = url;
  ui.preview.src = url;
  ui.preview.hidden = false;
}

function render() {
  const inCall = Boolean(state.sessionId);
  ui.panel.dataset.available = String(state.available);
  ui.file.disabled = !state.available;
  ui.grab.disabled = !state.available || !inCall;
  ui.clear.disabled = !state.available || !(state.active || state.pending);
  ui.reason.hidden = state.available;
  ui.reason.textContent = state.available ? "" : `Image prompts unavailable: ${state.reason}`;
  ui.grab.title = inCall ? "Use what your camera shows now" : "Start a call to grab a camera frame";
}

async function send(blob) {
  const id = state.sessionId;
  if (!id) {
    state.pending = blob;
    showPreview(blob);
    setStatus("Image chosen: it is sent when the call starts.");
    render();
    return;
  }
  setStatus("Sending image…");
  let response;
  let data = null;
  try {
    response = await fetch(`/api/sessions/${encodeURIComponent(id)}/image-prompt`, {
      method: "POST",
      headers: authHeaders({ "Content-Type": blob.type || "application/octet-stream" }),
      body: blob,
    });
    data = await response.json().catch(() => null);
  } catch (err) {
    setStatus(`Cannot reach the server (${err.message})`, true);
    return;
  }
  if (!response.ok) {
    const error = (data && data.error) || {};
    setStatus(`Refused: ${error.message || response.statusText} [${error.code || response.status}]`, true);
    if (response.status === 409) refresh();
    return;
  }
  state.pending = null;
  state.active = true;
  showPreview(blob);
  setStatus(`Image prompt in use (${data.width}×${data.height} ${data.format}); its weight is ip_adapter_scale.`);
  render();
}

async function clear() {
  state.pending = null;
  showPreview(null);
  if (state.sessionId && state.active) {
    try {
      await fetch(`/api/sessions/${encodeURIComponent(state.sessionId)}/image-prompt`, {
        method: "DELETE",
        headers: authHeaders(),
      });
    } catch (err) {
      setStatus(`Cannot reach the server (${err.message})`, true);
      return;
    }
  }
  state.active = false;
  setStatus("No image prompt.");
  render();
}

function grabFrame() {
  const video = ui.localVideo;
  if (!video.videoWidth) {
    setStatus("The camera shows nothing yet.", true);
    return;
  }
  const canvas = document.createElement("canvas");
  canvas.width = video.videoWidth;
  canvas.height = video.videoHeight;
  canvas.getContext("2d").drawImage(video, 0, 0);
  canvas.toBlob((blob) => blob && send(blob), "image/jpeg", 0.92);
}

/** The call's session appears and goes: a new call starts without an image prompt (the server's is per call). */
function watchCall() {
  const call = window.speakdraw.state && window.speakdraw.state.call;
  const id = (call && call.sessionId) || null;
  if (id === state.sessionId) return;
  state.sessionId = id;
  state.active = false;
  if (!id && !state.pending) showPreview(null);
  render();
  if (id && state.pending && state.available) send(state.pending);
}

async function refresh() {
  let info;
  try {
    const response = await fetch("/api/settings", { headers: authHeaders() });
    info = await response.json();
    if (!response.ok) throw new Error((info.error && info.error.message) || response.statusText);
  } catch (err) {
    state.available = false;
    state.reason = `cannot load server settings (${err.message})`;
    render();
    return;
  }
  const server = info.server || {};
  state.available = Boolean(server.features && server.features.image_prompt);
  state.reason = server.image_prompt_reason || (state.available ? "" : "the server's model takes no image prompts");
  render();
  if (server.ready === false) setTimeout(refresh, 2000); // model loading: look again
}

function init() {
  if (!ui.panel) return;
  ui.file.addEventListener("change", () => {
    const file = ui.file.files && ui.file.files[0];
    if (file) send(file);
    ui.file.value = "";
  });
  ui.grab.addEventListener("click", grabFrame);
  ui.clear.addEventListener("click", clear);
  render();
  refresh();
  setInterval(watchCall, 300);
}

init();
