// Phones on real networks: ICE servers and relay policy from /api/ice, codec preferences that agree with the
// server's --video-codec, waiting for a connection, the reconnect back-off, and "server full" retries.

import { apiFetch } from "./api.js";

export const RECONNECT_DELAYS_MS = [1000, 2000, 4000, 4000, 4000, 4000]; // then the page gives up, visibly
export const ATTEMPT_TIMEOUT_MS = 8000; // one rejoin gets this long to reach "connected"
export const DISCONNECTED_GRACE_MS = 2000; // "disconnected" often heals by itself: wait this long first
const FULL_CODES = new Set(["server_full", "too_many_sessions", "no_media_ports"]);

/** {iceServers, iceTransportPolicy, videoCodec} from the server; a failure to fetch means direct, all, auto. */
export async function fetchIce(onWarning) {
  try {
    const body = await apiFetch("/api/ice");
    return {
      iceServers: body.iceServers || [],
      iceTransportPolicy: body.iceTransportPolicy === "relay" ? "relay" : "all",
      videoCodec: body.videoCodec || "auto",
    };
  } catch (err) {
    if (err.status === 401 || err.status === 403) throw err;
    onWarning(`no ICE server list (${err.message}); trying direct connection`);
    return { iceServers: [], iceTransportPolicy: "all", videoCodec: "auto" };
  }
}

/** Order this browser's video codecs as the server does: h264, vp8, or auto (H.264 first, then VP8). */
export function preferCodecs(transceiver, choice) {
  if (!transceiver || typeof transceiver.setCodecPreferences !== "function" || !window.RTCRtpReceiver) return null;
  const caps = RTCRtpReceiver.getCapabilities("video");
  if (!caps) return null;
  const mime = (c) => c.mimeType.toLowerCase();
  const h264 = caps.codecs.filter((c) => mime(c) === "video/h264");
  const vp8 = caps.codecs.filter((c) => mime(c) === "video/vp8");
  const helpers = caps.codecs.filter((c) => ["video/rtx", "video/red", "video/ulpfec"].includes(mime(c)));
  const main = choice === "h264" ? h264 : choice === "vp8" ? vp8 : [...h264, ...vp8];
  if (!main.length) return null; // this browser lacks it: leave its own order, the server answers what it can
  transceiver.setCodecPreferences([...main, ...helpers]);
  return main.map((c) => c.mimeType);
}

/** Resolves true when `pc` reaches "connected", false on "failed"/"closed" or after `timeoutMs`. */
export function waitConnected(pc, timeoutMs) {
  return new Promise((resolve) => {
    const check = () => {
      const s = pc.connectionState;
      if (s === "connected") finish(true);
      else if (s === "failed" || s === "closed") finish(false);
    };
    const finish = (ok) => {
      clearTimeout(timer);
      pc.removeEventListener("connectionstatechange", check);
      resolve(ok);
    };
    const timer = setTimeout(() => finish(false), timeoutMs);
    pc.addEventListener("connectionstatechange", check);
    check();
  });
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * POST the offer; while the server answers 503 full (Retry-After), say "the server is full, retrying in N s"
 * and try again by itself. `isClosed()` stops it (hang-up).
 */
export async function postOffer(body, { onState, isClosed }) {
  for (;;) {
    try {
      return await apiFetch("/api/offer", { method: "POST", body });
    } catch (err) {
      if (!(err.status === 503 && FULL_CODES.has(err.code)) || isClosed()) throw err;
      let left = Math.max(1, Math.round(err.retryAfter || 5));
      while (left > 0 && !isClosed()) {
        onState(`the server is full, retrying in ${left} s`);
        await sleep(1000);
        left -= 1;
      }
      if (isClosed()) throw err;
    }
  }
}

/** Candidates of the gathered offer: with a relay-only policy and none of them, TURN refused or is unreachable. */
export function countCandidates(sdp) {
  return sdp.split(/\r?\n/).filter((line) => line.startsWith("a=candidate:")).length;
}
