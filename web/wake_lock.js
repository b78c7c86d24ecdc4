// The phone's screen stays on during a call (Screen Wake Lock API).
//
// A browser releases the lock by itself whenever the page is hidden (another app, the screen locked), so it is
// taken again each time the page becomes visible while the call goes on. A browser without the API, or one that
// refuses (power saving, no secure context, a policy), changes nothing else: the call goes on and `onRefused`
// says once why the screen may dim. State for the console and the browser tests: window.speakdraw.wakeLock.

export class ScreenWake {
  constructor({ onRefused } = {}) {
    this.onRefused = onRefused || (() => {});
    this.wanted = false;
    this.sentinel = null;
    this.state = { held: false, requests: 0, grants: 0, releases: 0, refused: null, supported: Boolean(navigator.wakeLock) };
    document.addEventListener("visibilitychange", () => {
      if (this.wanted && document.visibilityState === "visible") this.request();
    });
  }

  /** During a call: keep the screen on (now, and again after the page comes back). */
  acquire() {
    this.wanted = true;
    this.state.refused = null;
    return this.request();
  }

  async request() {
    if (!this.state.supported) {
      this.refused("this browser cannot keep the screen on (no Screen Wake Lock API)");
      return false;
    }
    if ((this.sentinel && !this.sentinel.released) || document.visibilityState !== "visible") return Boolean(this.sentinel);
    this.state.requests += 1;
    let sentinel;
    try {
      sentinel = await navigator.wakeLock.request("screen");
    } catch (err) {
      this.refused(`${err.name}: ${err.message}`);
      return false;
    }
    if (!this.wanted) {
      // The call ended while the request was pending.
      sentinel.release().catch(() => {});
      return false;
    }
    this.sentinel = sentinel;
    this.state.grants += 1;
    this.state.held = true;
    sentinel.addEventListener("release", () => {
      if (this.sentinel !== sentinel) return;
      this.sentinel = null; // the browser let it go (page hidden): visibilitychange takes it again
      this.state.held = false;
    });
    return true;
  }

  refused(detail) {
    const first = this.state.refused === null;
    this.state.refused = detail;
    if (first) this.onRefused(detail);
  }

  /** Hang-up: the screen may sleep again. */
  async release() {
    this.wanted = false;
    const sentinel = this.sentinel;
    this.sentinel = null;
    this.state.held = false;
    if (!sentinel) return;
    this.state.releases += 1;
    await sentinel.release().catch(() => {});
  }
}
