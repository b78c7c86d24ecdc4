// Keep the clip: record the painted video in this browser (MediaRecorder), with a timer and a download.
// The server does no extra work: the recorder takes the stream the page already receives.
//
// MP4 (H.264) first where the browser can write it (recent Chromium, Safari: it plays on every phone and
// carries its duration), else WebM. State for the console and the browser tests: window.speakdraw.recorder.

const TYPES = ["video/mp4;codecs=avc1", "video/mp4", "video/webm;codecs=vp9", "video/webm;codecs=vp8", "video/webm"];
const TIMESLICE_MS = 1000; // a chunk a second: a clip survives the stream ending under it

/** The first container/codec this browser records, "" for its default, null without MediaRecorder. */
export function recordingType() {
  if (typeof MediaRecorder === "undefined") return null;
  return TYPES.find((type) => MediaRecorder.isTypeSupported(type)) || "";
}

function clock(ms) {
  const s = Math.floor(ms / 1000);
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
}

function megabytes(bytes) {
  return `${(bytes / 1e6).toFixed(1)} MB`;
}

export class ClipRecorder {
  /** ui: {button, label, chip, time, link}; onWarning(summary, detail) for a recorder that fails. */
  constructor(ui, { onWarning } = {}) {
    this.ui = ui;
    this.onWarning = onWarning || (() => {});
    this.stream = null;
    this.recorder = null;
    this.timer = null;
    this.url = null;
    this.state = { recording: false, type: recordingType(), clip: null, elapsedMs: 0 };
    ui.button.addEventListener("click", () => (this.recorder ? this.stop() : this.start()));
    ui.button.hidden = this.state.type === null; // no MediaRecorder: no button
    this.render();
  }

  /** The painted stream to record (null when the call ends: a running recording stops, its clip is kept). */
  setStream(stream) {
    if (stream !== this.stream && this.recorder) this.stop();
    this.stream = stream;
    this.render();
  }

  start() {
    const video = this.stream && this.stream.getVideoTracks()[0];
    if (!video || video.readyState !== "live") return;
    const type = this.state.type;
    let recorder;
    try {
      recorder = new MediaRecorder(this.stream, type ? { mimeType: type } : {});
    } catch (err) {
      this.onWarning("This browser could not record the video", `${err.name}: ${err.message}`);
      return;
    }
    const chunks = [];
    recorder.addEventListener("dataavailable", (event) => {
      if (event.data && event.data.size) chunks.push(event.data);
    });
    recorder.addEventListener("stop", () => this.finish(recorder, chunks));
    recorder.addEventListener("error", (event) => {
      const err = event.error || {};
      this.onWarning("The recording stopped on an error", `${err.name || "error"}: ${err.message || ""}`);
    });
    this.recorder = recorder;
    this.startedAt = performance.now();
    this.state.recording = true;
    this.state.elapsedMs = 0;
    recorder.start(TIMESLICE_MS);
    this.timer = setInterval(() => this.tick(), 250);
    this.render();
  }

  stop() {
    const recorder = this.recorder;
    if (!recorder) return;
    this.recorder = null;
    clearInterval(this.timer);
    this.timer = null;
    this.tick();
    this.state.recording = false;
    if (recorder.state !== "inactive") recorder.stop(); // "stop" fires after the last dataavailable
    this.render();
  }

  tick() {
    if (this.startedAt === undefined) return;
    this.state.elapsedMs = performance.now() - this.startedAt;
    this.ui.time.textContent = clock(this.state.elapsedMs);
  }

  finish(recorder, chunks) {
    const type = (recorder.mimeType || this.state.type || "video/webm").split(";")[0];
    const blob = new Blob(chunks, { type });
    if (!blob.size) return;
    if (this.url) URL.revokeObjectURL(this.url);
    this.url = URL.createObjectURL(blob);
    const ext = type === "video/mp4" ? "mp4" : "webm";
    const link = this.ui.link;
    link.href = this.url;
    link.download = `speakdraw-${new Date().toISOString().replace(/[:.]/g, "-")}.${ext}`;
    link.textContent = `Save clip (${clock(this.state.elapsedMs)}, ${megabytes(blob.size)})`;
    link.hidden = false;
    this.state.clip = { type: recorder.mimeType || type, bytes: blob.size, ms: this.state.elapsedMs, name: link.download };
  }

  render() {
    const { button, label, chip } = this.ui;
    const recording = Boolean(this.recorder);
    const live = Boolean(this.stream && this.stream.getVideoTracks().some((t) => t.readyState === "live"));
    button.disabled = !recording && !live;
    button.classList.toggle("recording", recording);
    label.textContent = recording ? "Stop rec" : "Record";
    chip.hidden = !recording;
  }
}
