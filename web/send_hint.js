// The server's back-pressure hint, {"type":"send","max_fps","max_side","reason"}: send at most this many
// frames per second, longest side at most this many pixels. Applied to the camera's RTCRtpSender, so frames
// the server could not process are never encoded or sent (README.md, data channel `send`).

/** Apply `hint` to `sender` (whose source is `track`); resolves to what was set, or null without a sender. */
export async function applySendHint(sender, track, hint) {
  if (!sender || !track || typeof hint.max_fps !== "number") return null;
  const { width = 0, height = 0 } = track.getSettings ? track.getSettings() : {};
  const longest = Math.max(width, height);
  const scale = longest && hint.max_side ? Math.max(1, longest / hint.max_side) : 1;
  const params = sender.getParameters();
  if (!params.encodings || params.encodings.length === 0) params.encodings = [{}];
  for (const encoding of params.encodings) {
    encoding.maxFramerate = Math.max(1, hint.max_fps);
    encoding.scaleResolutionDownBy = scale;
  }
  await sender.setParameters(params);
  return { maxFramerate: Math.max(1, hint.max_fps), scaleResolutionDownBy: scale };
}
