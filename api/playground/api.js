// The playground's HTTP client: genie-graph's public API only, plus a reader of its server-sent events.

export const POLL = "poll";

/** An answer the API refused, or a server that cannot be reached (status 0). */
export class ApiError extends Error {
  constructor(status, body) {
    const code = (body && typeof body.error === "string" && body.error) ||
      (status === 422 ? "invalid_request" : status === 0 ? "network_error" : `http_${status}`);
    super(describe(body, status));
    this.name = "ApiError";
    this.status = status;
    this.code = code;
    this.body = body || {};
  }
}

/** The error an answer carries (an invoker failure, a budget refusal...) as an ApiError a person can read. */
export function sessionError(answer) {
  let body = null;
  try {
    body = JSON.parse(answer.error);
  } catch {
    body = null;
  }
  const actions = answer.next_actions || [];
  if (!body || typeof body !== "object") {
    return new ApiError(200, { error: "invoker_error", detail: String(answer.error), next_actions: actions });
  }
  const parts = ["exception", "transition_error", "reason"].filter((key) => body[key]).map((key) => String(body[key]));
  const where = body.state ? ` (in state ${body.state})` : "";
  const detail = parts.length ? parts.join("; ") + where : String(answer.error);
  return new ApiError(200, { error: body.error || "invoker_error", detail, next_actions: actions, raw: answer.error });
}

function describe(body, status) {
  if (body && typeof body.detail === "string") return body.detail;
  if (body && Array.isArray(body.detail)) {  // FastAPI's own 422: a list of validation errors
    return body.detail.map((item) => `${(item.loc || []).filter((part) => part !== "body").join(".") || "body"}: ${item.msg}`)
      .join("; ");
  }
  return `the server answered HTTP ${status}`;
}

async function errorOf(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  return new ApiError(response.status, body);
}

export class Client {
  /**
   * @param {string} prefix the API's prefix, e.g. "/v1/ai"
   * @param {() => string} apiKey the key to send, or ""
   */
  constructor(prefix, apiKey) {
    this.prefix = prefix.replace(/\/+$/, "");
    this.apiKey = apiKey;
  }

  headers(extra = {}) {
    const headers = { Accept: "application/json", ...extra };
    const key = this.apiKey();
    if (key) headers.Authorization = `Bearer ${key}`;
    return headers;
  }

  async request(method, path, { body, accept, signal, query } = {}) {
    const url = new URL(this.prefix + path, window.location.origin);
    for (const [name, value] of Object.entries(query || {})) {
      if (value !== undefined && value !== null) url.searchParams.set(name, value);
    }
    const headers = this.headers(body === undefined ? {} : { "Content-Type": "application/json" });
    if (accept) headers.Accept = accept;
    let response;
    try {
      response = await fetch(url, {
        method, headers, signal, body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (error) {
      if (error.name === "AbortError") throw error;
      throw new ApiError(0, { error: "network_error", detail: `the server cannot be reached (${error.message})` });
    }
    if (!response.ok) throw await errorOf(response);
    return response;
  }

  async json(method, path, options) {
    return (await this.request(method, path, options)).json();
  }

  modelKeys() { return this.json("GET", "/"); }

  flow(key) { return this.json("GET", `/${encodeURIComponent(key)}/flow`); }

  async diagram(key, format = "svg", sessionId = null) {
    const query = { format, session_id: sessionId };
    return (await this.request("GET", `/${encodeURIComponent(key)}/diagram`, { query, accept: "*/*" })).text();
  }

  startSession(key, body) {
    return this.json("POST", `/${encodeURIComponent(key)}/start_session`, { body });
  }

  event(key, sessionId, event, eventInput = "", signal = undefined) {
    const body = { session_id: sessionId, event, event_input: eventInput };
    return this.json("POST", `/${encodeURIComponent(key)}/event`, { body, signal });
  }

  /** The session's model (parsed) and the events it takes now (["poll"] while a run is in flight). */
  async model(key, sessionId, path = undefined) {
    const answer = await this.json("GET", `/${encodeURIComponent(key)}/model/${encodeURIComponent(sessionId)}`, {
      query: { path },
    });
    return { model: JSON.parse(answer.response), nextActions: answer.next_actions };
  }

  /** The session's token usage and cost, and its budget (the usage route). */
  usage(key, sessionId) {
    return this.json("GET", `/${encodeURIComponent(key)}/usage/${encodeURIComponent(sessionId)}`);
  }

  /** What happened to the session, oldest first (the history route). */
  history(key, sessionId) {
    return this.json("GET", `/${encodeURIComponent(key)}/history/${encodeURIComponent(sessionId)}`);
  }

  /** The session's approval requests: tool calls waiting for a person, and the latest decided ones. */
  approvals(key, sessionId) {
    return this.json("GET", `/${encodeURIComponent(key)}/approvals/${encodeURIComponent(sessionId)}`);
  }

  /**
   * Approve or deny a tool call the session waits for; answers ["poll"]: the run goes on in the background.
   * `by` names who decides when the server has no API keys (with keys, the caller decides).
   */
  decide(key, sessionId, approvalId, { approve, reason = null, by = null }) {
    const path = `/${encodeURIComponent(key)}/approvals/${encodeURIComponent(sessionId)}/${encodeURIComponent(approvalId)}`;
    return this.json("POST", path, { body: { approve, reason, by } });
  }

  userSessions(key, user) {
    return this.json("POST", `/${encodeURIComponent(key)}/user_sessions`, { body: user });
  }

  /**
   * Send an event and follow its run: yields {event, data} frames (state, token, progress, response).
   * A refused event throws its ApiError before anything is yielded.
   */
  async *stream(key, sessionId, event, eventInput, signal) {
    const body = { session_id: sessionId, event, event_input: eventInput };
    const response = await this.request("POST", `/${encodeURIComponent(key)}/event/stream`, {
      body, accept: "text/event-stream", signal,
    });
    yield* sseFrames(response.body);
  }
}

/** Server-sent events of a fetch body (EventSource cannot POST): {event, data} with data parsed as JSON. */
export async function* sseFrames(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      let end;
      while ((end = frameEnd(buffer)) !== null) {
        const frame = parseFrame(buffer.slice(0, end.at));
        buffer = buffer.slice(end.at + end.length);
        if (frame) yield frame;
      }
    }
  } finally {
    reader.cancel().catch(() => {});
  }
}

function frameEnd(buffer) {
  const match = /\r?\n\r?\n/.exec(buffer);
  return match ? { at: match.index, length: match[0].length } : null;
}

function parseFrame(block) {
  let event = "message";
  const data = [];
  for (const raw of block.split(/\r?\n/)) {
    if (!raw || raw.startsWith(":")) continue;
    const colon = raw.indexOf(":");
    const field = colon < 0 ? raw : raw.slice(0, colon);
    let value = colon < 0 ? "" : raw.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "event") event = value;
    else if (field === "data") data.push(value);
  }
  if (!data.length) return null;
  return { event, data: JSON.parse(data.join("\n")) };
}

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
