// The call view's layout, as in the video-call apps people know: the painted picture is the stage, your camera
// a small overlay in a corner (tap to swap, drag or arrow keys to move it), "Side by side" on a desktop,
// full screen for the stage, the "More" menu on phones, and a relayout on rotation or resize.
//
// style.css sizes everything; this module only sets the stage's aspect (--aspect, from the main video) and
// the classes. Standalone like hud.js: it needs nothing from app.js. State for the console and the browser
// tests: window.speakdraw.layout.

const $ = (id) => document.getElementById(id);
const STORE = "speakdraw.layout";
const DRAG_PX = 8; // a press that moves further than this is a drag, not a tap
const CORNERS = ["br", "bl", "tr", "tl"];
const DESKTOP = matchMedia("(min-width: 900px) and (min-height: 601px)");
const PORTRAIT = matchMedia("(orientation: portrait)");

const ui = {
  stage: $("stage"),
  box: $("stage-box"),
  remoteTile: $("remote-tile"),
  selfTile: $("self-tile"),
  remoteVideo: $("remote-video"),
  localVideo: $("local-video"),
  swap: $("swap-views"),
  idle: $("stage-idle"),
  fullscreen: $("fullscreen"),
  fullscreenExit: $("fullscreen-exit"),
  more: $("more-toggle"),
  moreTools: $("more-tools"),
  layoutToggle: $("layout-toggle"),
};

const saved = (() => {
  try {
    return JSON.parse(localStorage.getItem(STORE)) || {};
  } catch {
    return {};
  }
})();

const layout = {
  swapped: false, // true: your camera is the stage, the painted picture the overlay
  corner: CORNERS.includes(saved.corner) ? saved.corner : "br",
  sideBySide: Boolean(saved.sideBySide), // desktop only
  fullscreen: false,
  orientation: null,
  relayouts: 0,
};
window.speakdraw = window.speakdraw || {};
window.speakdraw.layout = layout;

function save() {
  localStorage.setItem(STORE, JSON.stringify({ corner: layout.corner, sideBySide: layout.sideBySide }));
}

const aspectOf = (video) => (video.videoWidth && video.videoHeight ? video.videoWidth / video.videoHeight : null);

function pipTile() {
  return layout.swapped ? ui.remoteTile : ui.selfTile;
}

/** Sizes follow the videos and the screen: called on rotation, resize, new video sizes, swaps. */
export function relayout() {
  layout.relayouts += 1;
  const remote = aspectOf(ui.remoteVideo);
  const local = aspectOf(ui.localVideo);
  const main = (layout.swapped ? local : remote) || remote || local || 1;
  const pip = (layout.swapped ? remote : local) || main;
  const root = document.documentElement.style;
  root.setProperty("--aspect", main.toFixed(4));
  root.setProperty("--self-aspect", pip.toFixed(4));
  layout.orientation = PORTRAIT.matches ? "portrait" : "landscape";
  const sideBySide = layout.sideBySide && DESKTOP.matches;
  ui.stage.classList.toggle("side-by-side", sideBySide);
  ui.layoutToggle.setAttribute("aria-pressed", String(sideBySide));
  const inCall = Boolean(ui.remoteVideo.srcObject || ui.localVideo.srcObject);
  ui.idle.hidden = Boolean(ui.remoteVideo.srcObject && ui.remoteVideo.videoWidth);
  ui.idle.textContent = inCall ? "Waiting for the painted picture…" : "Start a call: your camera, painted, shows here.";
  ui.selfTile.hidden = !ui.localVideo.srcObject && !sideBySide;
}

function placeCorner(tile, corner) {
  for (const c of CORNERS) tile.classList.remove(`corner-${c}`);
  if (corner) tile.classList.add(`corner-${corner}`);
}

/** Which video is the stage; the other becomes the overlay in the saved corner. */
function setSwapped(swapped) {
  if (layout.sideBySide && DESKTOP.matches) swapped = false;
  layout.swapped = swapped;
  const [main, pip] = swapped ? [ui.selfTile, ui.remoteTile] : [ui.remoteTile, ui.selfTile];
  main.classList.replace("pip", "main");
  pip.classList.replace("main", "pip");
  placeCorner(main, null);
  placeCorner(pip, layout.corner);
  for (const tile of [main, pip]) {
    tile.style.removeProperty("left");
    tile.style.removeProperty("top");
  }
  const hadFocus = document.activeElement === ui.swap;
  pip.append(ui.swap);
  if (hadFocus) ui.swap.focus({ preventScroll: true });
  ui.swap.setAttribute(
    "aria-label",
    swapped
      ? "Swap: put the painted picture back on the stage (arrow keys move this view)"
      : "Swap the painted picture and your camera (arrow keys move this view)",
  );
  relayout();
}

function setCorner(corner) {
  layout.corner = corner;
  placeCorner(pipTile(), corner);
  save();
}

// ---- drag the overlay; a tap swaps ------------------------------------------------------------------

let drag = null;
let suppressClick = false;

function onPointerDown(event) {
  if (ui.stage.classList.contains("side-by-side") || event.button > 0) return;
  const tile = pipTile();
  const box = ui.box.getBoundingClientRect();
  const rect = tile.getBoundingClientRect();
  drag = { id: event.pointerId, x: event.clientX, y: event.clientY, left: rect.left - box.left, top: rect.top - box.top, moved: false };
  ui.swap.setPointerCapture(event.pointerId);
}

function onPointerMove(event) {
  if (!drag || event.pointerId !== drag.id) return;
  const dx = event.clientX - drag.x;
  const dy = event.clientY - drag.y;
  if (!drag.moved && Math.hypot(dx, dy) < DRAG_PX) return;
  drag.moved = true;
  const tile = pipTile();
  const box = ui.box.getBoundingClientRect();
  tile.classList.add("dragging");
  placeCorner(tile, null);
  const left = Math.min(Math.max(0, drag.left + dx), box.width - tile.offsetWidth);
  const top = Math.min(Math.max(0, drag.top + dy), box.height - tile.offsetHeight);
  tile.style.left = `${left}px`;
  tile.style.top = `${top}px`;
}

function onPointerUp(event) {
  if (!drag || event.pointerId !== drag.id) return;
  const moved = drag.moved;
  drag = null;
  if (!moved) return; // a tap: the click that follows swaps
  const tile = pipTile();
  const box = ui.box.getBoundingClientRect();
  const rect = tile.getBoundingClientRect();
  const right = rect.left + rect.width / 2 > box.left + box.width / 2;
  const bottom = rect.top + rect.height / 2 > box.top + box.height / 2;
  tile.classList.remove("dragging");
  tile.style.removeProperty("left");
  tile.style.removeProperty("top");
  setCorner(`${bottom ? "b" : "t"}${right ? "r" : "l"}`); // it snaps to the nearest corner
  suppressClick = true;
  setTimeout(() => (suppressClick = false), 0);
}

function onSwapKey(event) {
  const [v, h] = layout.corner.split("");
  const next = { ArrowLeft: `${v}l`, ArrowRight: `${v}r`, ArrowUp: `t${h}`, ArrowDown: `b${h}` }[event.key];
  if (!next) return;
  event.preventDefault();
  setCorner(next);
}

// ---- full screen ------------------------------------------------------------------------------------

function fullscreenElement() {
  return document.fullscreenElement || document.webkitFullscreenElement || null;
}

async function toggleFullscreen() {
  if (fullscreenElement()) {
    await (document.exitFullscreen || document.webkitExitFullscreen).call(document);
    return;
  }
  try {
    if (ui.stage.requestFullscreen) await ui.stage.requestFullscreen({ navigationUI: "hide" });
    else if (ui.stage.webkitRequestFullscreen) ui.stage.webkitRequestFullscreen();
    else if (ui.remoteVideo.webkitEnterFullscreen) ui.remoteVideo.webkitEnterFullscreen(); // iPhone: the video alone
  } catch (err) {
    ui.fullscreen.title = `Full screen was refused (${err.name})`;
  }
}

function onFullscreenChange() {
  layout.fullscreen = fullscreenElement() === ui.stage;
  ui.fullscreenExit.hidden = !layout.fullscreen;
  ui.fullscreen.setAttribute("aria-pressed", String(layout.fullscreen));
  relayout();
}

// ---- "More" (phones) ----------------------------------------------------------------------------------

function setMoreOpen(open) {
  ui.moreTools.classList.toggle("open", open);
  ui.more.setAttribute("aria-expanded", String(open));
}

function init() {
  if (!ui.stage || !ui.box) return;
  ui.swap.addEventListener("click", () => {
    if (!suppressClick) setSwapped(!layout.swapped);
  });
  ui.swap.addEventListener("pointerdown", onPointerDown);
  ui.swap.addEventListener("pointermove", onPointerMove);
  ui.swap.addEventListener("pointerup", onPointerUp);
  ui.swap.addEventListener("pointercancel", onPointerUp);
  ui.swap.addEventListener("keydown", onSwapKey);

  ui.layoutToggle.addEventListener("click", () => {
    layout.sideBySide = !layout.sideBySide;
    save();
    if (layout.sideBySide) setSwapped(false);
    else relayout();
  });

  const canFullscreen =
    document.fullscreenEnabled || document.webkitFullscreenEnabled || "webkitEnterFullscreen" in HTMLVideoElement.prototype;
  ui.fullscreen.hidden = !canFullscreen;
  ui.fullscreen.setAttribute("aria-pressed", "false");
  ui.fullscreen.addEventListener("click", toggleFullscreen);
  ui.fullscreenExit.addEventListener("click", toggleFullscreen);
  document.addEventListener("fullscreenchange", onFullscreenChange);
  document.addEventListener("webkitfullscreenchange", onFullscreenChange);

  ui.more.addEventListener("click", () => setMoreOpen(!ui.moreTools.classList.contains("open")));
  document.addEventListener("click", (event) => {
    if (!ui.moreTools.contains(event.target) && !ui.more.contains(event.target)) setMoreOpen(false);
  });
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && ui.moreTools.classList.contains("open")) {
      setMoreOpen(false);
      ui.more.focus();
    }
  });
  ui.moreTools.querySelector('a[href="#settings"]').addEventListener("click", () => setMoreOpen(false));

  for (const video of [ui.remoteVideo, ui.localVideo]) {
    for (const name of ["loadedmetadata", "resize", "emptied", "loadeddata"]) video.addEventListener(name, relayout);
  }
  // Rotation and resizing: the CSS relayouts itself; the aspect, the side-by-side choice and the menu follow.
  const onRotate = () => {
    setMoreOpen(false);
    relayout();
  };
  PORTRAIT.addEventListener("change", onRotate);
  DESKTOP.addEventListener("change", () => setSwapped(layout.swapped));
  if (screen.orientation) screen.orientation.addEventListener("change", onRotate);
  window.addEventListener("resize", relayout);
  // app.js sets and clears the videos' srcObject: look again when that happens (no event for it).
  let wasIdle = true;
  setInterval(() => {
    const idle = !(ui.remoteVideo.srcObject || ui.localVideo.srcObject);
    if (idle === wasIdle) return;
    wasIdle = idle;
    if (idle && layout.swapped) setSwapped(false); // a new call starts with the picture on the stage
    else relayout();
  }, 300);
  setSwapped(false);
}

init();
