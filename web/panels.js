// Rendering of the stats panel and the transcript area from control-channel messages.

const $ = (id) => document.getElementById(id);

function fmt(value, digits = 0, unit = "") {
  return typeof value === "number" && Number.isFinite(value) ? `${value.toFixed(digits)}${unit}` : "–";
}

/** {"type":"stats","fps_in","fps_out","dropped","latency_ms":{matte,diffuse,total},"queue_age_ms"} */
export function showStats(msg) {
  const latency = msg.latency_ms || {};
  $("stats-fps-in").textContent = fmt(msg.fps_in, 1);
  $("stats-fps-out").textContent = fmt(msg.fps_out, 1);
  $("stats-latency").textContent = fmt(latency.total, 0, " ms");
  $("stats-latency").title = `server ms: matte ${fmt(latency.matte, 1)} · diffuse ${fmt(latency.diffuse, 1)} · total ${fmt(latency.total, 1)}`;
  $("stats-dropped").textContent = fmt(msg.dropped);
  $("stats-queue-age").textContent = fmt(msg.queue_age_ms, 0, " ms");
}

export function clearStats() {
  for (const id of ["stats-fps-in", "stats-fps-out", "stats-latency", "stats-dropped", "stats-queue-age", "stats-rtt", "stats-decoded-fps"]) {
    $(id).textContent = "–";
  }
}

const MAX_LINES = 50; // keep the transcript area bounded on long calls

/** {"type":"transcript","utterance":N,"text","final"}: one line per utterance, partials greyed. */
export function showTranscript(msg) {
  const box = $("transcript");
  const key = String(msg.utterance);
  let line = box.querySelector(`p[data-utterance="${CSS.escape(key)}"]`);
  if (!line) {
    line = document.createElement("p");
    line.dataset.utterance = key;
    box.append(line);
    while (box.children.length > MAX_LINES) box.firstElementChild.remove();
  }
  line.textContent = msg.text || "";
  line.className = msg.final ? "final" : "partial";
  box.scrollTop = box.scrollHeight;
}

export function clearTranscript() {
  $("transcript").replaceChildren();
}
