// REST helpers: every /api call carries the page's token. The join URL brings it as ?token=; the page
// keeps it in sessionStorage (this tab only) and removes it from the address bar, so it is not left in
// the history, a screenshot of the address or a shared link.

const TOKEN_KEY = "speakdraw-token";

function takeToken() {
  const url = new URL(window.location.href);
  const fromUrl = url.searchParams.get("token");
  if (fromUrl) {
    sessionStorage.setItem(TOKEN_KEY, fromUrl);
    url.searchParams.delete("token");
    history.replaceState(history.state, "", url.pathname + url.search + url.hash);
  }
  return fromUrl || sessionStorage.getItem(TOKEN_KEY) || "";
}

export const token = takeToken();

/** An HTTP error carrying the server's {"error": {"code", "message"}} body. */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

function authHeaders(extra = {}) {
  const headers = { ...extra };
  if (token) headers.Authorization = `Bearer ${token}`;
  return headers;
}

/** Fetch a JSON /api route; throws ApiError with a human message on any non-2xx answer. */
export async function apiFetch(path, { method = "GET", body, keepalive = false } = {}) {
  const init = { method, keepalive, headers: authHeaders() };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (err) {
    throw new ApiError(0, "network", `cannot reach the server (${err.message})`);
  }
  let data = null;
  try {
    data = await response.json();
  } catch {
    data = null;
  }
  if (!response.ok) {
    const error = (data && data.error) || {};
    let message = error.message || response.statusText || "request failed";
    if (response.status === 401 || response.status === 403) {
      const hint = token ? "the token in this page's address is refused" : "this page's address has no ?token=";
      message = `access denied: ${hint}. Open the join URL the server printed; it carries the token.`;
    }
    const err = new ApiError(response.status, error.code || `http_${response.status}`, message);
    const retryAfter = Number(response.headers.get("Retry-After"));
    if (Number.isFinite(retryAfter) && retryAfter > 0) err.retryAfter = retryAfter; // 503 server full
    throw err;
  }
  return data;
}
