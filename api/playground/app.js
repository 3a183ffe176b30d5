// The genie-graph playground: chat with a flow through its public HTTP API and watch its state machine move.

import { ApiError, Client, POLL, sessionError, sleep } from "./api.js";
import { ApprovalCards } from "./approvals.js";
import { DiagramView } from "./diagram.js";
import { LedgerView } from "./ledger.js";
import { ModelView } from "./model-view.js";

const STORAGE_KEY = "genie-graph-playground";
const USER_INPUT = "user_input";
const LISTED_SESSIONS = 25;

const $ = (id) => document.getElementById(id);
const els = {
  flowSelect: $("flow-select"), status: $("server-status"), banner: $("banner"),
  startForm: $("start-form"), start: $("start-session"), email: $("user-email"), firstname: $("user-firstname"),
  lastname: $("user-lastname"), seed: $("seed-data"), apiKey: $("api-key"),
  sessionList: $("session-list"), sessionsHint: $("sessions-hint"), refreshSessions: $("refresh-sessions"),
  chat: $("chat"), sessionId: $("session-id"), stateBadge: $("state-badge"), messages: $("messages"),
  activeFlows: $("active-flows"), activeFlowsList: $("active-flows-list"), flowNotice: $("flow-notice"),
  emptyChat: $("empty-chat"), progressRow: $("progress-row"), progress: $("progress"),
  progressLabel: $("progress-label"), inputForm: $("input-form"), userInput: $("user-input"), send: $("send"),
  actions: $("actions"), eventButtons: $("event-buttons"), actionsNote: $("actions-note"), anyEvent: $("any-event"),
  anyEventForm: $("any-event-form"), anyEventName: $("any-event-name"), anyEventInput: $("any-event-input"),
  diagram: $("diagram"), stateDetails: $("state-details"), diagramSource: $("diagram-source"),
  diagramFormat: $("diagram-format"), diagramText: $("diagram-text"), downloadSvg: $("download-svg"),
  diagramZoom: $("diagram-zoom"),
  model: $("model"), modelClass: $("model-class"), copyModel: $("copy-model"),
  usage: $("usage"), history: $("history"), historyCount: $("history-count"),
};

const state = {
  key: null, flow: null, states: new Map(), idByValue: new Map(),
  nodeByValue: new Map(),  // "<flow>\u0000<state value as JSON>" -> node, for the flows a session runs
  composed: false,  // the flow runs other flows (sub-flows, interruptions)
  session: null, epoch: 0, inFlight: false, controller: null, nextActions: [], stateId: null, model: null,
  waiting: [],  // the nodes whose flows wait on the session's stack
  seen: 0,  // how many of the model's dialogue elements the conversation shows
};

const settings = loadSettings();
const client = new Client(meta("genie-graph-api-prefix"), () => els.apiKey.value.trim());
const diagram = new DiagramView(els.diagram, (stateId) => showStateDetails(stateId));
const modelView = new ModelView(els.model);
const ledger = new LedgerView(els, client);
const approvals = new ApprovalCards(els.messages, {
  decide: (request, approve, reason) => decideApproval(request, approve, reason),
  expire: (request) => followExpired(request),
  decider,
});

// ---- settings kept in this browser ---------------------------------------------------------
function meta(name) {
  const element = document.querySelector(`meta[name="${name}"]`);
  return element ? element.content : "";
}

function loadSettings() {
  try {
    return { user: {}, sessions: {}, ...JSON.parse(localStorage.getItem(STORAGE_KEY) || "{}") };
  } catch {
    return { user: {}, sessions: {} };
  }
}

function saveSettings() {
  try {
    localStorage.setItem(STORAGE_KEY, JSON.stringify(settings));
  } catch {
    // private browsing: nothing is kept, everything else works
  }
}

function localSessions(key) {
  return settings.sessions[key] || [];
}

function rememberSession(key, sessionId) {
  const kept = localSessions(key).filter((id) => id !== sessionId);
  settings.sessions[key] = [...kept, sessionId].slice(-LISTED_SESSIONS);
  saveSettings();
}

function forgetSession(key, sessionId) {
  settings.sessions[key] = localSessions(key).filter((id) => id !== sessionId);
  saveSettings();
}

/** The user the form names (only the fields filled in: the API says which are missing), or null. */
function userInfo() {
  const fields = { email: els.email, firstname: els.firstname, lastname: els.lastname };
  const user = Object.fromEntries(Object.entries(fields).map(([name, input]) => [name, input.value.trim()])
    .filter(([, value]) => value));
  return Object.keys(user).length ? user : null;
}

function userComplete(user) {
  return Boolean(user && user.email && user.firstname && user.lastname);
}

// ---- banner and status ---------------------------------------------------------------------
function showBanner(text) {
  els.banner.textContent = text;
  els.banner.hidden = false;
}

function hideBanner() {
  els.banner.hidden = true;
  els.banner.textContent = "";
}

async function checkHealth() {
  try {
    const response = await fetch(meta("genie-graph-health"), { headers: { Accept: "application/json" } });
    const body = await response.json();
    els.status.textContent = response.ok ? `store: ${body.store}` : `store unavailable`;
    els.status.dataset.ok = String(response.ok);
  } catch {
    els.status.textContent = "server unreachable";
    els.status.dataset.ok = "false";
  }
}

// ---- flows ---------------------------------------------------------------------------------
async function loadModelKeys() {
  let keys;
  try {
    keys = (await client.modelKeys()).model_keys;
  } catch (error) {
    els.flowSelect.disabled = true;
    els.start.disabled = true;
    if (error.status === 401) {
      showBanner("This server needs an API key: paste yours under “API key”.");
      els.apiKey.focus();
    } else {
      showBanner(`The flows could not be listed: ${error.message}`);
    }
    return;
  }
  hideBanner();
  els.flowSelect.replaceChildren(...keys.map((key) => new Option(key, key)));
  els.flowSelect.disabled = keys.length === 0;
  if (!keys.length) {
    showBanner("No flow is registered on this server.");
    return;
  }
  const wanted = new URLSearchParams(location.hash.slice(1));
  const key = [wanted.get("flow"), settings.flow, keys[0]].find((candidate) => candidate && keys.includes(candidate));
  await selectFlow(key, wanted.get("flow") === key ? wanted.get("session") : null);
}

async function selectFlow(key, resumeId = null) {
  leaveSession();
  if (!resumeId) history.replaceState(null, "", `#${new URLSearchParams({ flow: key })}`);
  state.key = key;
  els.flowSelect.value = key;
  settings.flow = key;
  saveSettings();
  els.start.disabled = true;
  try {
    const [flow, svg] = await Promise.all([client.flow(key), client.diagram(key, "svg")]);
    if (state.key !== key) return;
    state.flow = flow;
    const nodes = flow.nodes && flow.nodes.length ? flow.nodes : flow.states;
    state.states = new Map(nodes.map((item) => [item.id, item]));
    state.idByValue = new Map(flow.states.map((item) => [JSON.stringify(item.value), item.id]));
    state.nodeByValue = new Map(nodes.filter((item) => item.flow !== undefined)
      .map((item) => [`${item.flow}\u0000${JSON.stringify(item.value)}`, item.id]));
    state.composed = Boolean(flow.children && flow.children.length);
    for (const legendKey of document.querySelectorAll(".legend .subflow, .legend .waiting")) {
      legendKey.hidden = !state.composed;
    }
    ledger.rootFlow = flow.flow || key;
    diagram.load(svg, flow);
    els.modelClass.textContent = flow.model.split(".").pop();
    els.modelClass.title = flow.model;
    els.anyEventName.replaceChildren(...[...flow.events, POLL].map((name) => new Option(name, name)));
    showStateDetails(flow.initial);
    els.start.disabled = false;
  } catch (error) {
    showBanner(`The flow ${key} could not be loaded: ${error.message}`);
    return;
  }
  await refreshSessions();
  if (resumeId) await resume(resumeId);
}

function stateName(stateId) {
  const found = state.states.get(stateId);
  return found ? found.name : stateId;
}

function showStateDetails(stateId) {
  const info = state.states.get(stateId);
  diagram.select(stateId);
  els.stateDetails.replaceChildren();
  if (!info) return;
  els.stateDetails.dataset.state = stateId;
  const title = document.createElement("h3");
  title.append(`${info.name} `, code(info.id));
  const tags = document.createElement("p");
  tags.className = "tags";
  for (const [shown, text] of [[state.composed && info.flow, `flow ${info.flow}`], [true, info.kind],
    [info.initial, "initial"], [info.final, "final"], [info.aborts, "aborts"], [stateId === state.stateId, "current"],
    [state.waiting.includes(stateId) && stateId !== state.stateId, "waiting"]]) {
    if (!shown) continue;
    const tag = document.createElement("span");
    tag.className = `tag tag-${text.split(" ")[0]}`;
    tag.textContent = text;
    tags.append(tag);
  }
  const facts = document.createElement("dl");
  const fact = (term, ...content) => {
    const dt = document.createElement("dt");
    dt.textContent = term;
    const dd = document.createElement("dd");
    dd.append(...content);
    facts.append(dt, dd);
  };
  const call = (state.flow.subflows || []).find((item) => item.node === stateId);
  if (call) {
    const goesOn = call.on_complete ? ["; when it completes, sends ", code(call.on_complete)] : [];
    const onAbort = call.on_abort ? ["; when it aborts, ", code(call.on_abort)] : ["; when it aborts, this flow aborts too"];
    fact("calls", code(call.flow), ...goesOn, ...onAbort);
  } else {
    fact("template", code(typeof info.template === "string" ? info.template
      : JSON.stringify(info.template, null, 2)));
  }
  fact("events", info.events.length ? info.events.join(", ") : "none (a final state)");
  if (info.completion_event) fact("when done", code(info.completion_event));
  const interruptions = interruptionsOf(info.flow);
  if (interruptions.length && info.kind === "user" && !info.final) {
    fact("interruptions", ...interruptions.map((item) => {
      const line = document.createElement("div");
      line.append(code(item.flow), ` on ${item.trigger} (priority ${item.priority})`);
      return line;
    }));
  }
  const transitions = state.flow.node_transitions && state.flow.node_transitions.length
    ? state.flow.node_transitions : state.flow.transitions;
  const out = transitions.filter((transition) => transition.source === stateId);
  if (out.length) {
    fact("transitions", ...out.map((transition) => {
      const line = document.createElement("div");
      line.append(code(transition.label), ` → ${transition.target}`);
      return line;
    }));
  }
  els.stateDetails.append(title, tags, facts);
}

function code(text) {
  const element = document.createElement("code");
  element.textContent = text;
  return element;
}

/** The interruptions the flow named `flowName` declares (the session's own flow or one it runs). */
function interruptionsOf(flowName) {
  const flow = state.flow;
  if (!flow || !flowName) return [];
  if (flowName === flow.flow) return flow.interruptions || [];
  const child = (flow.children || []).find((item) => item.name === flowName);
  return child ? child.interruptions : [];
}

// ---- the flows a session runs: the breadcrumb of active flows and the notice of the last turn --
/** The node the session is in: its own flow's state, or the state of the flow on top of its stack. */
function nodeOf(model) {
  const frames = (model.flows && model.flows.frames) || [];
  if (frames.length) {
    const top = frames[frames.length - 1];
    const node = state.nodeByValue.get(`${top.flow}\u0000${JSON.stringify(top.model.state)}`);
    if (node) return node;
  }
  return state.idByValue.get(JSON.stringify(model.state)) || null;
}

/** The nodes whose flows wait on the session's stack: the states that called a sub-flow or were interrupted. */
function waitingOf(model) {
  return ((model.flows && model.flows.frames) || []).map((frame) => frame.caller);
}

/**
 * Show the flows running now, outermost first (a response's `active_flows`, else the model's stack), with the
 * status each has on the model's stack (active, interrupted).
 */
function showActiveFlows(model, names = null) {
  const frames = (model && model.flows && model.flows.frames) || [];
  const own = state.flow ? state.flow.flow || state.key : state.key;
  const listed = names && names.length ? names : [own, ...frames.map((frame) => frame.flow)];
  const statuses = [(model && model.flows && model.flows.status) || "active", ...frames.map((frame) => frame.status)];
  const kinds = [null, ...frames.map((frame) => frame.kind)];
  els.activeFlows.hidden = !state.session || (!state.composed && listed.length < 2);
  els.activeFlows.dataset.flows = listed.join(" ");
  els.activeFlowsList.replaceChildren(...listed.map((name, index) => {
    const item = document.createElement("li");
    item.dataset.flow = name;
    item.dataset.testid = "active-flow";
    const status = listed.length === statuses.length ? statuses[index] : "";
    if (status) item.dataset.status = status;
    if (kinds[index] && listed.length === kinds.length) item.dataset.kind = kinds[index];
    item.textContent = name;
    item.title = [kinds[index] === "interruption" ? "interrupting flow" : kinds[index] === "subflow" ? "sub-flow"
      : index === 0 ? "the session's flow" : "", status].filter(Boolean).join(", ");
    if (index === listed.length - 1) item.setAttribute("aria-current", "step");
    return item;
  }));
}

/** Say what the last event did to the session's flows (a response's or model's notice), or nothing. */
function showNotice(notice) {
  const parts = [];
  const interrupted = notice && notice.interrupted_by;
  const resumed = notice && notice.resumed;
  const aborted = (notice && notice.aborted) || [];
  if (interrupted) parts.push(`interrupted by ${interrupted}`);
  if (resumed) parts.push(`${resumed} resumed`);
  if (aborted.length) parts.push(`aborted: ${aborted.join(", ")}`);
  els.flowNotice.hidden = parts.length === 0;
  els.flowNotice.textContent = parts.join(" · ");
  els.flowNotice.dataset.interruptedBy = interrupted || "";
  els.flowNotice.dataset.resumed = resumed || "";
  els.flowNotice.dataset.aborted = aborted.join(" ");
  els.flowNotice.dataset.kind = aborted.length ? "aborted" : interrupted ? "interrupted" : resumed ? "resumed" : "";
}

// ---- sessions ------------------------------------------------------------------------------
function leaveSession() {
  state.epoch += 1;
  if (state.controller) state.controller.abort();
  state.controller = null;
  state.session = null;
  state.inFlight = false;
  state.stateId = null;
  state.model = null;
  state.waiting = [];
  state.seen = 0;
  els.chat.dataset.busy = "false";
  els.messages.replaceChildren();
  approvals.clear();
  els.emptyChat.hidden = false;
  els.sessionId.textContent = "";
  els.stateBadge.hidden = true;
  els.activeFlows.hidden = true;
  els.activeFlowsList.replaceChildren();
  showNotice(null);
  els.progressRow.hidden = true;
  els.anyEvent.hidden = true;
  els.copyModel.disabled = true;
  modelView.clear();
  ledger.clear();
  diagram.clearTaken();
  diagram.highlight(null);
  setActions([]);
  markListedSession();
}

function enterSession(sessionId) {
  state.session = sessionId;
  els.sessionId.textContent = sessionId;
  els.emptyChat.hidden = true;
  els.anyEvent.hidden = false;
  els.copyModel.disabled = false;
  history.replaceState(null, "", `#${new URLSearchParams({ flow: state.key, session: sessionId })}`);
  markListedSession();
}

async function startSession(event) {
  event.preventDefault();
  if (!state.key) return;
  const user = userInfo();
  settings.user = user || {};
  saveSettings();
  const body = {};
  if (user) body.user_info = user;
  if (els.seed.value.trim()) body.seed_data = els.seed.value.trim();
  leaveSession();
  const { key, epoch } = { key: state.key, epoch: state.epoch };
  els.start.disabled = true;
  try {
    const answer = await client.startSession(key, Object.keys(body).length ? body : undefined);
    if (epoch !== state.epoch) return;
    enterSession(answer.session_id);
    rememberSession(key, answer.session_id);
    if (answer.response) addMessage("assistant", answer.response);
    if (answer.error) addError(sessionError(answer));
    const current = await refreshModel();
    if (current) {
      state.seen = (current.model.dialogue || []).length;
      showApprovals(current.model.approvals);
    }
    setActions(answer.next_actions);
    els.userInput.focus();
  } catch (error) {
    addError(error);
  } finally {
    els.start.disabled = false;
  }
  await refreshSessions();
}

async function resume(sessionId) {
  leaveSession();
  const { key, epoch } = { key: state.key, epoch: state.epoch };
  enterSession(sessionId);
  let answer;
  try {
    answer = await client.model(key, sessionId);
  } catch (error) {
    if (epoch !== state.epoch) return;
    addError(error);
    if (error.code === "unknown_session") forgetSession(key, sessionId);
    return;
  }
  if (epoch !== state.epoch) return;
  applyModel(answer.model);
  showNotice(answer.model.flows && answer.model.flows.notice);
  showUnseen(answer.model);
  showApprovals(answer.model.approvals);
  setActions(answer.nextActions);
  if (isPolling(answer.nextActions)) await follow();
}

async function refreshSessions() {
  const key = state.key;
  if (!key) return;
  const user = userInfo();
  let ids = [];
  if (userComplete(user)) {
    try {
      const found = await client.userSessions(key, user);
      ids = found ? [...found.sessions].reverse() : [];
      els.sessionsHint.textContent = ids.length ? `${user.email}’s sessions of ${key}, newest first.`
        : `${user.email} has no live session of ${key}.`;
    } catch (error) {
      els.sessionsHint.textContent = `The sessions could not be listed: ${error.message}`;
    }
  } else {
    ids = [...localSessions(key)].reverse();
    els.sessionsHint.textContent = (ids.length ? "Sessions started in this browser, newest first. " : "")
      + "Fill in a user (email, first and last name) to list theirs.";
  }
  if (state.key !== key) return;
  ids = ids.slice(0, LISTED_SESSIONS);
  els.sessionList.replaceChildren(...ids.map((id) => sessionItem(id)));
  markListedSession();
  await Promise.all(ids.map(async (id) => {
    const label = els.sessionList.querySelector(`[data-session-id="${CSS.escape(id)}"] .session-state`);
    try {
      const path = state.composed ? "{state: state, flows: {frames: flows.frames[-1:]}}" : "state";
      const { model: value } = await client.model(key, id, path);
      const stateId = state.composed ? nodeOf(value) : state.idByValue.get(JSON.stringify(value));
      if (label) label.textContent = stateId ? stateName(stateId) : String(state.composed ? value.state : value);
    } catch (error) {
      if (label) label.textContent = error.code === "unknown_session" ? "expired" : "?";
      if (error.code === "unknown_session") forgetSession(key, id);
    }
  }));
}

function sessionItem(id) {
  const item = document.createElement("li");
  const button = document.createElement("button");
  button.type = "button";
  button.className = "session";
  button.dataset.sessionId = id;
  button.dataset.testid = "session-item";
  button.title = `Resume session ${id}`;
  const name = document.createElement("code");
  name.textContent = id.length > 14 ? `${id.slice(0, 8)}…${id.slice(-4)}` : id;
  const label = document.createElement("span");
  label.className = "session-state";
  label.textContent = "…";
  button.append(name, label);
  button.addEventListener("click", () => resume(id));
  item.append(button);
  return item;
}

function markListedSession() {
  for (const button of els.sessionList.querySelectorAll("button.session")) {
    if (button.dataset.sessionId === state.session) button.setAttribute("aria-current", "true");
    else button.removeAttribute("aria-current");
  }
}

function updateListedState(sessionId, stateId) {
  const label = els.sessionList.querySelector(`[data-session-id="${CSS.escape(sessionId)}"] .session-state`);
  if (label && stateId) label.textContent = stateName(stateId);
}

// ---- the model and the current state -------------------------------------------------------
/** Load the session's model and show it; answers {model, nextActions}, or null if the session changed. */
async function refreshModel() {
  const { key, session, epoch } = { key: state.key, session: state.session, epoch: state.epoch };
  if (!session) return null;
  const answer = await client.model(key, session);
  if (epoch !== state.epoch) return null;
  applyModel(answer.model);
  return answer;
}

/** Show the dialogue elements the conversation does not show yet (a resumed session, another client's turns). */
function showUnseen(model, note = "") {
  const dialogue = model.dialogue || [];
  for (const element of dialogue.slice(state.seen)) {
    const role = element.actor === "user" ? "user" : element.actor === "system" ? "system" : "assistant";
    const item = addMessage(role, element.actor_text, { label: `${ROLE_LABELS[role]}${note}` });
    if (note) item.dataset.elsewhere = "true";
  }
  state.seen = dialogue.length;
}

function applyModel(model) {
  state.model = model;
  modelView.render(model, state.flow.fields, (name, value) => {
    const stateId = name === "state" ? state.idByValue.get(JSON.stringify(value)) : null;
    return stateId ? `state ${stateId}` : null;
  });
  state.waiting = waitingOf(model);
  setCurrentState(nodeOf(model));
  approvals.sync(model.approvals, { add: false });  // new requests get their card after the dialogue is shown
  showApprovalWait();
  showActiveFlows(model);
  updateListedState(state.session, state.stateId);
  ledger.refresh(state.key, state.session);  // its usage and history, read after every settled turn
}

function setCurrentState(stateId, running = false) {
  state.stateId = stateId;
  diagram.highlight(stateId, { running, waiting: state.waiting });
  const info = state.states.get(stateId);
  els.stateBadge.hidden = !info;
  if (info) {
    els.stateBadge.textContent = `${info.name} · ${info.kind}${running ? " · running" : ""}`;
    els.stateBadge.dataset.state = stateId;
    els.stateBadge.dataset.kind = info.kind;
    showStateDetails(stateId);
  }
}

// ---- messages ------------------------------------------------------------------------------
const ROLE_LABELS = { user: "You", assistant: "Flow", system: "System", llm: "LLM", event: "Event", error: "Error" };

function addMessage(role, text, { label, testid = "message" } = {}) {
  const item = document.createElement("li");
  item.className = `message ${role}`;
  item.dataset.role = role;
  item.dataset.testid = testid;
  const head = document.createElement("div");
  head.className = "message-head";
  head.textContent = label || ROLE_LABELS[role] || role;
  const body = document.createElement("div");
  body.className = "message-text";
  body.textContent = text;
  item.append(head, body);
  els.messages.append(item);
  els.emptyChat.hidden = true;
  scrollToEnd();
  return item;
}

function addError(error) {
  const status = error.status >= 400 ? ` (HTTP ${error.status})` : "";
  const item = addMessage("error", error.message, { label: `${error.code}${status}`, testid: "error" });
  item.dataset.error = error.code;
  item.setAttribute("role", "alert");
  const body = error.body || {};
  const facts = [];
  if (Array.isArray(body.possible_events)) {
    facts.push(`allowed now: ${body.possible_events.join(", ") || "nothing"}`);
  }
  if (body.current_state && body.current_state.id) facts.push(`current state: ${body.current_state.id}`);
  if (error.code === "session_busy") facts.push("following the run in flight…");
  if (error.status === 200 && Array.isArray(body.next_actions)) {
    facts.push(body.next_actions.length ? "the session goes on: send another event" : "the session has ended");
  }
  if (error.status === 401) facts.push("paste an API key under “API key”");
  if (facts.length) {
    const more = document.createElement("div");
    more.className = "message-facts";
    more.textContent = facts.join(" · ");
    item.append(more);
  }
  return item;
}

function scrollToEnd() {
  els.messages.scrollTop = els.messages.scrollHeight;
}

// ---- actions -------------------------------------------------------------------------------
const isPolling = (actions) => actions.length === 1 && actions[0] === POLL;

function setActions(actions) {
  state.nextActions = actions || [];
  const others = state.nextActions.filter((name) => name !== USER_INPUT && name !== POLL);
  els.eventButtons.replaceChildren(...others.map((name) => {
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = name;
    button.dataset.event = name;
    button.dataset.testid = "event-button";
    button.addEventListener("click", () => send(name, ""));
    return button;
  }));
  const aborted = Boolean(state.model && state.model.flows && state.model.flows.status === "aborted");
  const waiting = waitingFor();
  els.inputForm.hidden = !state.nextActions.includes(USER_INPUT) && !waiting.length;
  els.actionsNote.textContent = !state.session ? ""
    : isPolling(state.nextActions) ? "A run is in flight."
      : waiting.length ? `Approve or deny the call of ${toolsOf(waiting)} above: until then the session takes no event.`
        : state.nextActions.length === 0 && aborted ? "The flow was aborted: it takes no more events."
          : state.nextActions.length === 0 ? "The flow is in a final state: it takes no more events." : "";
  els.actions.dataset.waiting = waiting.length ? "approval" : "";
  els.userInput.placeholder = waiting.length ? `The session waits for an approval of ${toolsOf(waiting)}…`
    : COMPOSER_PLACEHOLDER;
  syncDisabled();
}

const COMPOSER_PLACEHOLDER = "Type a message (Enter sends, Shift+Enter for a new line)";

/** The tool calls the session waits for a decision on (it takes no event meanwhile). */
function waitingFor() {
  return state.session && state.nextActions.length === 0 ? approvals.pending() : [];
}

function toolsOf(requests) {
  return [...new Set(requests.map((request) => request.tool))].join(", ");
}

/** A card for each request the session waits for and the conversation does not show yet, after its messages. */
function showApprovals(requests) {
  if (approvals.sync(requests)) scrollToEnd();
  showApprovalWait();
}

/** The state badge says so while a tool call waits for a person. */
function showApprovalWait() {
  const pending = approvals.pending().length > 0;
  els.stateBadge.dataset.approval = pending ? "pending" : "";
  if (pending && !els.stateBadge.hidden && !els.stateBadge.textContent.endsWith(APPROVAL_BADGE)) {
    els.stateBadge.textContent += APPROVAL_BADGE;
  }
}

const APPROVAL_BADGE = " · waiting for approval";

function syncDisabled() {
  const off = state.inFlight || !state.session;
  for (const control of [els.userInput, els.send, els.anyEventName, els.anyEventInput, $("any-event-send"),
    ...els.eventButtons.querySelectorAll("button")]) {
    control.disabled = off;
  }
  if (waitingFor().length) {
    els.userInput.disabled = true;
    els.send.disabled = true;
  }
}

// ---- a turn: send an event, follow its run -------------------------------------------------
function beginTurn(event, input) {
  const turn = {
    key: state.key, session: state.session, epoch: state.epoch, controller: new AbortController(),
    lastState: state.stateId, bubbles: new Map(), trace: null, sent: null, followed: "",
  };
  state.controller = turn.controller;
  state.inFlight = true;
  els.chat.dataset.busy = "true";
  syncDisabled();
  setProgress(null);
  els.progressRow.hidden = false;
  if (event !== null) showNotice(null);
  diagram.clearTaken();
  if (event === USER_INPUT) {
    turn.sent = addMessage("user", input);
  } else if (event !== null) {
    turn.sent = addMessage("event", input ? `${event}: ${input}` : event, { label: "Event" });
    turn.sent.dataset.event = event;
  }
  if (event !== null) {
    turn.trace = document.createElement("div");
    turn.trace.className = "trace";
    turn.trace.dataset.testid = "trace";
    turn.trace.textContent = turn.lastState || "";
    turn.sent.append(turn.trace);
  }
  return turn;
}

function endTurn(turn) {
  if (turn.epoch !== state.epoch) return;
  state.inFlight = false;
  state.controller = null;
  els.chat.dataset.busy = "false";
  els.progressRow.hidden = true;
  if (state.stateId) diagram.highlight(state.stateId, { waiting: state.waiting });
  syncDisabled();
  if (!els.inputForm.hidden) els.userInput.focus();
}

function setProgress(progress) {
  if (progress && progress.total_number_of_subtasks > 0) {
    els.progress.max = progress.total_number_of_subtasks;
    els.progress.value = progress.number_of_subtasks_executed;
    els.progressLabel.textContent =
      `${progress.number_of_subtasks_executed} of ${progress.total_number_of_subtasks} sub-tasks`;
  } else {
    els.progress.removeAttribute("value");
    els.progressLabel.textContent = "working…";
  }
}

function onFrame(turn, frame) {
  const data = frame.data;
  if (frame.event === "state") {
    if (turn.lastState) diagram.markTaken(turn.lastState, data.state);
    turn.lastState = data.state;
    setCurrentState(data.state, data.kind === "invoker");
    if (turn.trace) turn.trace.textContent += ` → ${data.state}`;
  } else if (frame.event === "token") {
    let bubble = turn.bubbles.get(data.state);
    if (!bubble) {
      bubble = addMessage("llm", "", { label: `LLM · ${stateName(data.state)}` });
      bubble.dataset.streaming = "true";
      bubble.dataset.state = data.state;
      bubble.dataset.tokens = "0";
      turn.bubbles.set(data.state, bubble);
    }
    bubble.querySelector(".message-text").textContent += data.text;
    bubble.dataset.tokens = String(Number(bubble.dataset.tokens) + 1);
    scrollToEnd();
  } else if (frame.event === "progress") {
    setProgress(data);
  }
}

async function pollUntilSettled(turn) {
  let delay = 150;
  for (;;) {
    if (turn.epoch !== state.epoch) return null;
    const answer = await client.event(turn.key, turn.session, POLL, "", turn.controller.signal);
    if (answer.progress) setProgress(answer.progress);
    if (answer.error || !isPolling(answer.next_actions)) return answer;
    await sleep(delay);
    delay = Math.min(delay * 1.5, 1000);
  }
}

/**
 * The run is over: show its response (or its invoker's error), the model and the events it takes now.
 * A followed run (someone else's, or one in flight when the session was resumed) shows the dialogue
 * the store recorded instead of the response alone.
 */
async function finishTurn(turn, final) {
  if (turn.epoch !== state.epoch) return;
  const bubbles = [...turn.bubbles.values()];
  const last = bubbles[bubbles.length - 1];
  let shown = false;
  for (const bubble of bubbles) {
    bubble.dataset.streaming = "false";
    const text = bubble.querySelector(".message-text").textContent;
    if (bubble === last && final.response && !final.error && text.trim() === final.response.trim()) {
      bubble.dataset.role = "assistant";
      bubble.className = "message assistant";
      bubble.querySelector(".message-head").textContent = `${ROLE_LABELS.assistant} · streamed`;
      shown = true;
    }
  }
  // while a tool call waits for approval, `response` is the dialogue's last element: the user's own words
  const waiting = Boolean(final.approvals && final.approvals.length);
  if (final.error) {
    addError(sessionError(final));
  } else if (final.response && !shown && !turn.followed && !waiting) {
    addMessage("assistant", final.response);
  }
  const current = await refreshModel();
  if (!current) return;
  showActiveFlows(current.model, final.active_flows);
  showNotice(final);
  if (turn.followed) showUnseen(current.model, turn.followed);
  state.seen = (current.model.dialogue || []).length;
  showApprovals(current.model.approvals);
  setActions(final.next_actions);
}

async function send(event, input) {
  if (!state.session || state.inFlight) return;
  const turn = beginTurn(event, input);
  try {
    let final = null;
    try {
      for await (const frame of client.stream(turn.key, turn.session, event, input, turn.controller.signal)) {
        if (turn.epoch !== state.epoch) return;
        onFrame(turn, frame);
        if (frame.event === "response") final = frame.data;
      }
    } catch (error) {
      if (error instanceof ApiError && error.status !== 0) throw error;  // refused: the session is unchanged
      if (error.name === "AbortError") return;
      // the stream dropped mid-run; polling still answers
    }
    if (!final) {
      if (turn.trace) turn.trace.textContent += " (stream dropped: polling)";
      final = await pollUntilSettled(turn);
    }
    if (final) await finishTurn(turn, final);
  } catch (error) {
    if (turn.epoch !== state.epoch || error.name === "AbortError") return;
    if (turn.sent && error instanceof ApiError && error.status >= 400) {
      turn.sent.dataset.refused = "true";
      if (event === USER_INPUT && !els.userInput.value) els.userInput.value = input;
    }
    addError(error);
    try {
      if (error.code === "session_busy") {
        turn.followed = " · elsewhere";
        const settled = await pollUntilSettled(turn);
        if (settled) await finishTurn(turn, settled);
      } else if (error.status > 0 && error.status !== 401) {
        const current = await refreshModel();  // another client may have moved the session on
        if (current) {
          showUnseen(current.model, " · elsewhere");
          showApprovals(current.model.approvals);
          setActions(current.nextActions);
        }
      }
    } catch (again) {
      if (turn.epoch === state.epoch && again.name !== "AbortError") addError(again);
    }
  } finally {
    endTurn(turn);
  }
}

async function follow() {
  if (!state.session || state.inFlight) return;
  const turn = beginTurn(null, "");
  turn.followed = " · while away";
  try {
    const final = await pollUntilSettled(turn);
    if (final) await finishTurn(turn, final);
  } catch (error) {
    if (turn.epoch === state.epoch && error.name !== "AbortError") addError(error);
  } finally {
    endTurn(turn);
  }
}

// ---- approvals: a person decides a tool call, then the run goes on -------------------------
/** Who decides: the API key's caller when a key is used, else the email of the “New session” form. */
function decider() {
  if (els.apiKey.value.trim()) return { by: null, text: "You decide as the caller of the API key in use." };
  const email = els.email.value.trim();
  return email ? { by: email, text: `You decide as ${email} (the email under “New session”).` }
    : { by: null, text: "Fill in an email under “New session”: you decide as that user." };
}

/** Post a decision on `request`, then follow the run it lets go on (as after an event) to its answer. */
async function decideApproval(request, approve, reason) {
  if (!state.session || state.inFlight) return;
  const turn = beginTurn(null, "");
  approvals.busy(request.id, true, approve);
  try {
    let answer;
    try {
      answer = await client.decide(turn.key, turn.session, request.id, {
        approve, reason: reason || null, by: decider().by,
      });
    } catch (error) {
      if (turn.epoch !== state.epoch || error.name === "AbortError") return;
      approvals.showError(request.id, error);
      if (error.status === 404 || error.status === 409) await settleAfterRefusal(turn);  // decided elsewhere
      return;
    }
    if (turn.epoch !== state.epoch) return;
    const final = isPolling(answer.next_actions) ? await pollUntilSettled(turn) : answer;
    if (final) await finishTurn(turn, final);
  } catch (error) {
    if (turn.epoch === state.epoch && error.name !== "AbortError") addError(error);
  } finally {
    approvals.busy(request.id, false);
    endTurn(turn);
  }
}

/** The decision was refused as closed or unknown: show the session as it is, and follow a run it has going. */
async function settleAfterRefusal(turn) {
  const current = await refreshModel();
  if (!current) return;
  if (isPolling(current.nextActions)) {
    turn.followed = " · decided elsewhere";
    const final = await pollUntilSettled(turn);
    if (final) await finishTurn(turn, final);
  } else {
    showUnseen(current.model, " · elsewhere");
    showApprovals(current.model.approvals);
    setActions(current.nextActions);
  }
}

/** A request's countdown ran out: poll, so the server closes it as expired and the run goes on. */
function followExpired(request) {
  if (!state.session || state.inFlight) return false;
  const turn = beginTurn(null, "");
  approvals.busy(request.id, true);
  (async () => {
    try {
      const final = await pollUntilSettled(turn);
      if (final) await finishTurn(turn, final);
    } catch (error) {
      if (turn.epoch === state.epoch && error.name !== "AbortError") addError(error);
    } finally {
      approvals.busy(request.id, false);
      endTurn(turn);
    }
  })();
  return true;
}

// ---- diagram as text, downloads, copying ---------------------------------------------------
async function showDiagramText() {
  if (!els.diagramSource.open || !state.key) return;
  try {
    els.diagramText.textContent = await client.diagram(state.key, els.diagramFormat.value, state.session);
  } catch (error) {
    els.diagramText.textContent = error.message;
  }
}

async function downloadSvg() {
  if (!state.key) return;
  try {
    const svg = await client.diagram(state.key, "svg", state.session);
    const url = URL.createObjectURL(new Blob([svg], { type: "image/svg+xml" }));
    const link = document.createElement("a");
    link.href = url;
    link.download = `${state.key}${state.session ? `-${state.stateId}` : ""}.svg`;
    link.click();
    setTimeout(() => URL.revokeObjectURL(url), 1000);
  } catch (error) {
    showBanner(`The diagram could not be downloaded: ${error.message}`);
  }
}

// ---- wiring --------------------------------------------------------------------------------
function wire() {
  els.apiKey.value = settings.apiKey || "";
  els.email.value = settings.user.email || "";
  els.firstname.value = settings.user.firstname || "";
  els.lastname.value = settings.user.lastname || "";

  els.flowSelect.addEventListener("change", () => selectFlow(els.flowSelect.value));
  els.startForm.addEventListener("submit", startSession);
  els.refreshSessions.addEventListener("click", () => refreshSessions());
  for (const input of [els.email, els.firstname, els.lastname]) {
    input.addEventListener("change", () => {
      settings.user = userInfo() || {};
      saveSettings();
      refreshSessions();
    });
  }
  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    settings.apiKey = els.apiKey.value.trim();
    saveSettings();
    loadModelKeys();
  });
  els.inputForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const text = els.userInput.value;
    if (!text.trim() || state.inFlight) return;
    els.userInput.value = "";
    send(USER_INPUT, text);
  });
  els.userInput.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      els.inputForm.requestSubmit();
    }
  });
  els.anyEventForm.addEventListener("submit", (event) => {
    event.preventDefault();
    send(els.anyEventName.value, els.anyEventInput.value);
  });
  els.diagramSource.addEventListener("toggle", showDiagramText);
  els.diagramFormat.addEventListener("change", showDiagramText);
  els.downloadSvg.addEventListener("click", downloadSvg);
  els.diagramZoom.addEventListener("click", () => {
    const on = els.diagramZoom.getAttribute("aria-pressed") !== "true";
    els.diagramZoom.setAttribute("aria-pressed", String(on));
    diagram.zoom(on);
  });
  els.copyModel.addEventListener("click", async () => {
    if (!state.model) return;
    try {
      await navigator.clipboard.writeText(JSON.stringify(state.model, null, 2));
      els.copyModel.textContent = "Copied";
    } catch {
      els.copyModel.textContent = "Copy failed";
    }
    setTimeout(() => { els.copyModel.textContent = "Copy JSON"; }, 1500);
  });
}

wire();
$("docs-link").hidden = !$("docs-link").getAttribute("href");
setActions([]);
checkHealth();
loadModelKeys();
