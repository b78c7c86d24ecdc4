// One WebRTC call with the server: camera + mic up, transformed video down, a `control` data channel.
// Signalling is non-trickle (the server is aiortc): we wait for ICE gathering to finish, then POST
// the complete offer once, as aiortc's own example client does.

import { apiFetch } from "./api.js";
import { applySendHint } from "./send_hint.js";

const ICE_GATHER_TIMEOUT_MS = 5000; // post whatever was gathered by then rather than hang
const PING_INTERVAL_MS = 1000;

/** Camera constraints: ~512x512 to match the model, front or back camera on phones. */
function videoConstraints(facingMode) {
  return {
    width: { ideal: 512 },
    height: { ideal: 512 },
    frameRate: { ideal: 30, max: 30 },
    facingMode: { ideal: facingMode },
  };
}

function waitForIceGathering(pc) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      pc.removeEventListener("icegatheringstatechange", check);
      clearTimeout(timer);
      resolve();
    };
    const check = () => {
      if (pc.iceGatheringState === "complete") done();
    };
    const timer = setTimeout(done, ICE_GATHER_TIMEOUT_MS);
    pc.addEventListener("icegatheringstatechange", check);
  });
}

/**
 * Events (all optional callbacks in `handlers`): onLocalStream(stream, facingMode),
 * onRemoteStream(stream), onMessage(msg), onRtt(ms), onState(text), onEnded(reason), onWarning(text).
 */
export class Call {
  constructor(handlers = {}) {
    this.handlers = handlers;
    this.pc = null;
    this.channel = null;
    this.localStream = null;
    this.sessionId = null;
    this.facingMode = "user";
    this.pingTimer = null;
    this.videoSender = null;
    this.closed = false;
  }

  emit(name, ...args) {
    const handler = this.handlers[name];
    if (handler) handler(...args);
  }

  /** Ask for camera and microphone; without a microphone the call still runs, video only. */
  async openMedia() {
    try {
      return await navigator.mediaDevices.getUserMedia({ video: videoConstraints(this.facingMode), audio: true });
    } catch (err) {
      if (err.name === "NotAllowedError" || err.name === "SecurityError") throw err;
      const stream = await navigator.mediaDevices.getUserMedia({ video: videoConstraints(this.facingMode) });
      this.emit("onWarning", `no microphone (${err.name}): voice prompts are off for this call`);
      return stream;
    }
  }

  /** Start the call; `settings` is a partial Settings applied before the first frame. */
  async start(settings = {}) {
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      throw new Error("this page needs a secure context (https:// or http://localhost) to use the camera");
    }
    this.emit("onState", "opening camera");
    this.localStream = await this.openMedia();
    this.emit("onLocalStream", this.localStream, this.facingMode);

    let iceServers = [];
    try {
      iceServers = (await apiFetch("/api/ice")).iceServers || [];
    } catch (err) {
      if (err.status === 401 || err.status === 403) throw err;
      this.emit("onWarning", `no ICE server list (${err.message}); trying direct connection`);
    }
    const pc = new RTCPeerConnection({ iceServers });
    this.pc = pc;

    const channel = pc.createDataChannel("control", { ordered: true });
    this.channel = channel;
    channel.addEventListener("open", () => this.startPing());
    channel.addEventListener("close", () => this.stopPing());
    channel.addEventListener("message", (event) => this.onChannelMessage(event.data));

    pc.addEventListener("track", (event) => {
      if (event.track.kind !== "video") return;
      const stream = event.streams && event.streams[0] ? event.streams[0] : new MediaStream([event.track]);
      this.emit("onRemoteStream", stream);
    });
    pc.addEventListener("connectionstatechange", () => {
      this.emit("onState", `connection ${pc.connectionState}`);
      if (pc.connectionState === "failed") this.stop("connection failed (ICE): check the network or TURN settings");
    });

    for (const track of this.localStream.getTracks()) {
      const sender = pc.addTrack(track, this.localStream);
      if (track.kind === "video") this.videoSender = sender;
    }

    this.emit("onState", "gathering network candidates");
    await pc.setLocalDescription(await pc.createOffer());
    await waitForIceGathering(pc);
    if (this.closed) return;

    this.emit("onState", "connecting");
    const offer = pc.localDescription;
    const body = { sdp: offer.sdp, type: offer.type };
    if (Object.keys(settings).length) body.settings = settings;
    const answer = await apiFetch("/api/offer", { method: "POST", body });
    if (this.closed) {
      this.hangUpOnServer(answer.session_id);
      return;
    }
    this.sessionId = answer.session_id;
    await pc.setRemoteDescription({ sdp: answer.sdp, type: answer.type });
  }

  onChannelMessage(data) {
    let msg;
    try {
      msg = JSON.parse(data);
    } catch {
      this.emit("onWarning", "server sent a message that is not JSON");
      return;
    }
    if (msg.type === "pong" && typeof msg.t === "number") {
      this.emit("onRtt", performance.now() - msg.t);
      return;
    }
    if (msg.type === "send") {
      const track = this.videoSender && this.videoSender.track;
      applySendHint(this.videoSender, track, msg)
        .then((applied) => {
          this.sendHint = { ...msg, applied };
        })
        .catch((err) => this.emit("onWarning", `could not apply the server's send hint: ${err.message || err}`));
    }
    this.emit("onMessage", msg);
  }

  /** Send one JSON message on the control channel; false when the channel is not open yet. */
  send(msg) {
    if (!this.channel || this.channel.readyState !== "open") return false;
    this.channel.send(JSON.stringify(msg));
    return true;
  }

  startPing() {
    this.stopPing();
    const ping = () => this.send({ type: "ping", t: performance.now() });
    ping();
    this.pingTimer = setInterval(ping, PING_INTERVAL_MS);
  }

  stopPing() {
    if (this.pingTimer) clearInterval(this.pingTimer);
    this.pingTimer = null;
  }

  /** Swap front/back camera in place: replaceTrack on the sender, no renegotiation. */
  async switchCamera() {
    if (!this.localStream) return;
    const wanted = this.facingMode === "user" ? "environment" : "user";
    const old = this.localStream.getVideoTracks()[0];
    // Phones often cannot open two cameras at once: release the old one first.
    if (old) old.stop();
    let fresh;
    let facing = wanted;
    try {
      fresh = (await navigator.mediaDevices.getUserMedia({ video: videoConstraints(wanted) })).getVideoTracks()[0];
    } catch (err) {
      this.emit("onWarning", `cannot switch camera (${err.name})`);
      facing = this.facingMode;
      fresh = (await navigator.mediaDevices.getUserMedia({ video: videoConstraints(facing) })).getVideoTracks()[0];
    }
    this.facingMode = fresh.getSettings().facingMode || facing;
    if (this.videoSender) await this.videoSender.replaceTrack(fresh);
    if (old) this.localStream.removeTrack(old);
    this.localStream.addTrack(fresh);
    this.emit("onLocalStream", this.localStream, this.facingMode);
  }

  /** Receiver-side video stats from getStats (frames decoded, fps, jitter buffer). */
  async inboundVideoStats() {
    if (!this.pc) return null;
    const report = await this.pc.getStats();
    for (const stat of report.values()) {
      if (stat.type === "inbound-rtp" && stat.kind === "video") return stat;
    }
    return null;
  }

  hangUpOnServer(sessionId) {
    if (!sessionId) return;
    apiFetch(`/api/sessions/${encodeURIComponent(sessionId)}`, { method: "DELETE", keepalive: true }).catch(() => {});
  }

  /** Hang up: tell the server, close the peer connection, release camera and mic. */
  stop(reason = "call ended") {
    if (this.closed) return;
    this.closed = true;
    this.stopPing();
    this.hangUpOnServer(this.sessionId);
    this.sessionId = null;
    if (this.channel) this.channel.close();
    if (this.pc) this.pc.close();
    if (this.localStream) for (const track of this.localStream.getTracks()) track.stop();
    this.pc = null;
    this.channel = null;
    this.localStream = null;
    this.emit("onEnded", reason);
  }
}
