// One WebRTC call with the server: camera + mic up, transformed video down, a `control` data channel.
// Signalling is non-trickle (the server is aiortc): we wait for ICE gathering to finish, then POST
// the complete offer once, as aiortc's own example client does.

import { apiFetch } from "./api.js";
import {
  ATTEMPT_TIMEOUT_MS,
  DISCONNECTED_GRACE_MS,
  RECONNECT_DELAYS_MS,
  countCandidates,
  fetchIce,
  postOffer,
  preferCodecs,
  waitConnected,
} from "./net.js";
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
 * onRemoteStream(stream), onMessage(msg), onRtt(ms), onState(text), onEnded(reason), onWarning(text);
 * currentSettings() → the partial Settings a rejoin offers when the server no longer has the call.
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
    await this.connect({ settings });
  }

  /**
   * One peer connection with the server: ICE servers and policy from /api/ice (fresh TURN credentials), codec
   * preference as the server's, the offer (retried while the server is full). `resume` rejoins a lost call.
   */
  async connect({ settings = {}, resume = null } = {}) {
    const ice = await fetchIce((text) => this.emit("onWarning", text));
    this.ice = ice;
    const pc = new RTCPeerConnection({ iceServers: ice.iceServers, iceTransportPolicy: ice.iceTransportPolicy });
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
    pc.addEventListener("connectionstatechange", () => this.onConnectionState(pc));

    for (const track of this.localStream.getTracks()) {
      const sender = pc.addTrack(track, this.localStream);
      if (track.kind === "video") {
        this.videoSender = sender;
        const transceiver = pc.getTransceivers().find((t) => t.sender === sender);
        this.codecs = preferCodecs(transceiver, ice.videoCodec);
      }
    }

    this.emit("onState", resume ? "reconnecting… (gathering network candidates)" : "gathering network candidates");
    await pc.setLocalDescription(await pc.createOffer());
    await waitForIceGathering(pc);
    if (this.closed || pc !== this.pc) return;
    if (ice.iceTransportPolicy === "relay" && countCandidates(pc.localDescription.sdp) === 0) {
      throw new Error(
        "no relay candidates: the TURN server refused this page's credentials (expired or wrong) or cannot be reached",
      );
    }

    this.emit("onState", resume ? "reconnecting…" : "connecting");
    const offer = pc.localDescription;
    const body = { sdp: offer.sdp, type: offer.type };
    if (Object.keys(settings).length) body.settings = settings;
    if (resume) body.resume = resume;
    const answer = await postOffer(body, {
      onState: (text) => this.emit("onState", text),
      isClosed: () => this.closed || pc !== this.pc,
    });
    if (this.closed) {
      this.hangUpOnServer(answer.session_id);
      return;
    }
    this.sessionId = answer.session_id;
    this.lastAnswer = { session_id: answer.session_id, resumed: Boolean(answer.resumed) };
    await pc.setRemoteDescription({ sdp: answer.sdp, type: answer.type });
  }

  /** "disconnected" (after a grace) or "failed": rejoin with a new offer carrying `resume` (no ICE restart). */
  onConnectionState(pc) {
    if (pc !== this.pc || this.closed) return;
    const s = pc.connectionState;
    this.emit("onState", `connection ${s}`);
    clearTimeout(this.graceTimer);
    if (s === "failed") this.reconnect("the connection failed");
    else if (s === "disconnected") {
      this.graceTimer = setTimeout(() => {
        if (pc === this.pc && pc.connectionState === "disconnected") this.reconnect("the connection dropped");
      }, DISCONNECTED_GRACE_MS);
    }
  }

  async reconnect(why) {
    if (this.reconnecting || this.closed) return;
    this.reconnecting = true;
    this.reconnects = (this.reconnects || 0) + 1;
    const resume = this.sessionId;
    let lastError = why;
    try {
      for (let attempt = 0; attempt < RECONNECT_DELAYS_MS.length; attempt += 1) {
        this.dropPeer();
        const wait = RECONNECT_DELAYS_MS[attempt];
        this.emit("onState", `reconnecting… (${why}; try ${attempt + 1} of ${RECONNECT_DELAYS_MS.length} in ${wait / 1000} s)`);
        await new Promise((resolve) => setTimeout(resolve, wait));
        if (this.closed) return;
        try {
          // The page's settings go along: used only when the server no longer has the call (past its window).
          const settings = this.handlers.currentSettings ? this.handlers.currentSettings() : {};
          await this.connect({ resume, settings });
          if (this.closed) return;
          if (await waitConnected(this.pc, ATTEMPT_TIMEOUT_MS)) {
            const resumed = Boolean(this.lastAnswer && this.lastAnswer.resumed);
            this.lastReconnect = { at: performance.now(), resumed, attempts: attempt + 1 };
            this.emit("onState", resumed ? "reconnected: the call resumed (same prompt and seed)" : "reconnected (a new call)");
            return;
          }
          lastError = "no connection";
        } catch (err) {
          if (err.status === 401 || err.status === 403) {
            lastError = err.message;
            break;
          }
          lastError = err.message || String(err);
        }
      }
      this.stop(`gave up reconnecting after ${RECONNECT_DELAYS_MS.length} tries (${lastError}); press Start call to try again`);
    } finally {
      this.reconnecting = false;
    }
  }

  /** Close the current peer connection but keep camera, mic and session id (the server keeps the call). */
  dropPeer() {
    this.stopPing();
    const pc = this.pc;
    this.pc = null;
    if (this.channel) this.channel.close();
    this.channel = null;
    if (pc) pc.close();
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
    clearTimeout(this.graceTimer);
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
