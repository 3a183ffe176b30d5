// The session's ledger: what its invoker calls used and cost (the usage route) and what happened to it
// (the history route), shown in two panels refreshed after every settled turn.

const FIGURES = [
  ["input_tokens", "tokens in"], ["output_tokens", "tokens out"], ["calls", "calls"], ["cost", "cost"],
];
const GROUPS = [["by_state", "By state"], ["by_template", "By template"], ["by_model", "By model"]];
const KIND_LABELS = {
  event: "event", state_entered: "entered", invoker_run: "run", invoker_failure: "call failed",
  budget_refused: "over budget", migrated: "migrated", flow_started: "flow started", flow_interrupted: "interrupted",
  flow_resumed: "resumed", flow_completed: "completed", flow_aborted: "aborted",
  approval_requested: "approval?", approval_decided: "decided",
};
/** The kinds about a flow's life (sub-flows, interruptions); their `detail` is told in words. */
const FLOW_KINDS = new Set(["flow_started", "flow_interrupted", "flow_resumed", "flow_completed", "flow_aborted"]);
/** The kinds of a tool call's approval (the audit trail); their `detail` is told in words too. */
const APPROVAL_KINDS = new Set(["approval_requested", "approval_decided"]);
/** Kinds whose `detail` is told in words, not shown as JSON. */
const TOLD_KINDS = new Set(["migrated", ...FLOW_KINDS, ...APPROVAL_KINDS]);

export class LedgerView {
  /**
   * @param {{usage: HTMLElement, history: HTMLElement, historyCount: HTMLElement}} elements
   * @param {import("./api.js").Client} client
   */
  constructor(elements, client) {
    this.usage = elements.usage;
    this.history = elements.history;
    this.historyCount = elements.historyCount;
    this.client = client;
    this.generation = 0;  // a newer refresh (or a cleared view) drops the answers of older ones
    this.rootFlow = "";  // the name of the session's own flow: history entries name it null
  }

  clear() {
    this.generation += 1;
    this.usage.replaceChildren();
    this.history.replaceChildren();
    this.historyCount.textContent = "";
    delete this.usage.dataset.session;
    delete this.history.dataset.session;
  }

  /** Load both reports of the session and show them; a refused read is shown in its panel. Never throws. */
  async refresh(key, sessionId) {
    const generation = ++this.generation;
    const [usage, history] = await Promise.allSettled([
      this.client.usage(key, sessionId), this.client.history(key, sessionId),
    ]);
    if (generation !== this.generation) return;
    if (usage.status === "fulfilled") this.renderUsage(usage.value);
    else this.usage.replaceChildren(errorBox(usage.reason, "usage-error"));
    if (history.status === "fulfilled") this.renderHistory(history.value);
    else {
      this.history.replaceChildren(errorBox(history.reason, "history-error"));
      this.historyCount.textContent = "";
    }
  }

  renderUsage(report) {
    const { usage, budget } = report;
    const currency = usage.currency;
    const totals = el("div", "usage-totals");
    for (const [name, label] of FIGURES) {
      const value = usage.total[name];
      const figure = el("div", "usage-figure");
      figure.dataset.testid = "usage-total";
      figure.dataset.figure = name;
      figure.dataset.value = String(value);
      figure.append(el("span", "usage-value", name === "cost" ? money(value, currency) : count(value)),
        el("span", "usage-label", label));
      totals.append(figure);
    }
    const parts = [totals, budget ? budgetView(budget, usage.total, currency)
      : el("p", "hint", "No budget: the flow lets a session spend without limit.")];
    const tables = el("div", "usage-tables");
    for (const [group, title] of GROUPS) {
      if (Object.keys(usage[group]).length) tables.append(groupTable(group, title, usage[group], currency));
    }
    if (tables.childElementCount) parts.push(tables);
    else parts.push(el("p", "hint", "No invoker call yet."));
    this.usage.dataset.session = report.session_id;
    this.usage.replaceChildren(...parts);
  }

  renderHistory(report) {
    const entries = report.entries;
    this.history.dataset.session = report.session_id;
    this.history.replaceChildren(...entries.map((entry) => historyItem(entry, this.rootFlow)));
    const dropped = entries.length >= report.limit ? ", older ones dropped" : "";
    this.historyCount.textContent = `${entries.length} of ${report.limit} kept${dropped}`;
    this.historyCount.title = `The session keeps its last ${report.limit} history entries.`;
    this.history.scrollTop = this.history.scrollHeight;  // newest last, in view
  }
}

// ---- usage ---------------------------------------------------------------------------------
function budgetView(budget, total, currency) {
  const box = el("div", "budget");
  box.dataset.testid = "budget";
  box.dataset.exceeded = String(budget.exceeded);
  const head = el("div", "budget-head");
  head.append(el("span", "budget-title", "Budget"));
  const status = el("span", `budget-status ${budget.exceeded ? "exceeded" : "within"}`,
    budget.exceeded ? "spent" : "within");
  status.dataset.testid = "budget-status";
  head.append(status);
  box.append(head);
  if (budget.max_tokens !== null) {
    box.append(meter("tokens", total.total_tokens, budget.max_tokens, budget.remaining_tokens, budget.exceeded,
      count, " tokens"));
  }
  if (budget.max_cost !== null) {
    box.append(meter("cost", total.cost, budget.max_cost, budget.remaining_cost, budget.exceeded,
      (value) => money(value, currency), ""));
  }
  if (budget.exceeded) {
    const reason = el("p", "budget-reason", budget.reason || "the budget is spent");
    reason.dataset.testid = "budget-reason";
    reason.setAttribute("role", "status");
    const then = budget.on_exceeded ? ["; invoker states now send ", code(budget.on_exceeded), " instead of running."]
      : ["; invoker states are no longer run."];
    reason.append(...then);
    box.append(reason);
  } else if (budget.on_exceeded) {
    const note = el("p", "hint", "Once spent, invoker states send ");
    note.append(code(budget.on_exceeded), " instead of running.");
    box.append(note);
  }
  return box;
}

function meter(limit, used, max, remaining, exceeded, format, unit) {
  const row = el("div", "budget-meter");
  row.dataset.testid = "budget-meter";
  row.dataset.limit = limit;
  row.dataset.used = String(used);
  row.dataset.max = String(max);
  row.dataset.remaining = String(remaining);
  const share = max > 0 ? Math.min(1, used / max) : 1;
  const bar = el("div", "meter-bar");
  bar.setAttribute("role", "meter");
  bar.setAttribute("aria-label", `${limit} budget used`);
  bar.setAttribute("aria-valuemin", "0");
  bar.setAttribute("aria-valuemax", String(max));
  bar.setAttribute("aria-valuenow", String(Math.min(used, max)));
  bar.dataset.level = exceeded || share >= 1 ? "spent" : share >= 0.8 ? "high" : "ok";
  const fill = el("div", "meter-fill");
  fill.style.width = `${(share * 100).toFixed(1)}%`;
  bar.append(fill);
  const text = el("div", "meter-text");
  text.append(el("span", "", `${format(used)} of ${format(max)}${unit} used`),
    el("span", "meter-left", `${format(remaining)}${unit} left`));
  row.append(bar, text);
  return row;
}

function groupTable(group, title, rows, currency) {
  const table = el("table", "usage-table");
  table.dataset.testid = "usage-table";
  table.dataset.group = group;
  table.append(el("caption", "", title));
  const head = el("tr");
  for (const [label, numeric] of [["", false], ["calls", true], ["in", true], ["out", true], ["cost", true]]) {
    head.append(el("th", numeric ? "num" : "", label));
  }
  const thead = el("thead");
  thead.append(head);
  table.append(thead);
  const body = el("tbody");
  for (const [name, totals] of Object.entries(rows)) {
    const row = el("tr");
    row.dataset.testid = "usage-row";
    row.dataset.group = group;
    row.dataset.name = name;
    const label = el("th", "name");
    label.scope = "row";
    label.title = name;
    label.append(code(name));
    row.append(label);
    for (const figure of ["calls", "input_tokens", "output_tokens", "cost"]) {
      const cell = el("td", "num", figure === "cost" ? money(totals[figure], currency) : count(totals[figure]));
      cell.dataset.figure = figure;
      cell.dataset.value = String(totals[figure]);
      row.append(cell);
    }
    body.append(row);
  }
  table.append(body);
  return table;
}

function count(value) {
  return Number(value).toLocaleString();
}

/** A cost, tiny ones included ($0.0000105): three significant digits below one unit, else cents. */
function money(value, currency) {
  const options = value > 0 && value < 1 ? { maximumSignificantDigits: 3 }
    : { minimumFractionDigits: 2, maximumFractionDigits: 2 };
  try {
    return new Intl.NumberFormat(undefined, { style: "currency", currency, ...options }).format(value);
  } catch {
    // not an ISO currency code (a price table may count "credits")
    return `${new Intl.NumberFormat(undefined, options).format(value)} ${currency}`;
  }
}

// ---- history -------------------------------------------------------------------------------
function historyItem(entry, rootFlow = "") {
  const item = el("li", "history-entry");
  item.dataset.testid = "history-entry";
  item.dataset.kind = entry.kind;
  if (entry.state) item.dataset.state = entry.state;
  if (entry.flow) item.dataset.flow = entry.flow;
  if (entry.outcome) item.dataset.outcome = entry.outcome;
  const detail = entry.detail || {};
  if (APPROVAL_KINDS.has(entry.kind)) {
    item.dataset.tool = String(detail.tool ?? "");
    item.dataset.approvalId = String(detail.id ?? "");
    if (entry.kind === "approval_decided") item.dataset.status = String(detail.status ?? "");
  }
  const at = new Date(entry.at);
  const time = el("time", "history-time", Number.isNaN(at.getTime()) ? "" : at.toLocaleTimeString([], { hour12: false }));
  time.dateTime = entry.at;
  time.title = entry.at;
  const label = entry.kind === "invoker_run" && entry.outcome ? `run ${entry.outcome}`
    : entry.kind === "approval_decided" && detail.status ? String(detail.status) : KIND_LABELS[entry.kind];
  const badge = el("span", `kind kind-${entry.kind}`, label || entry.kind);
  badge.dataset.testid = "history-kind";
  if (entry.outcome) badge.dataset.outcome = entry.outcome;
  if (entry.kind === "approval_decided" && detail.status) badge.dataset.status = String(detail.status);
  const text = el("div", "history-text");
  text.append(...describe(entry, rootFlow));
  if (entry.error) {
    const error = el("div", "history-error", entry.error);
    error.dataset.testid = "history-error";
    text.append(error);
  }
  item.append(time, badge, text);
  return item;
}

function describe(entry, rootFlow = "") {
  const parts = [];
  const add = (...items) => parts.push(...items);
  const sep = () => parts.length && add(" · ");
  const detail = entry.detail || {};
  const flowName = entry.flow || rootFlow || "the flow";
  if (entry.flow && !FLOW_KINDS.has(entry.kind)) add(flowTag(entry.flow), " ");  // a state of another flow
  switch (entry.kind) {
    case "event":
      add(el("code", "event-name", entry.event || "?"), " ", entry.state || "?", " → ", entry.target || "?");
      break;
    case "state_entered":
      add(entry.state || "?");
      break;
    case "invoker_run":
      add(entry.state || "?");
      break;
    case "migrated":
      add("from ", String(detail.from ?? "?"), " to ", String(detail.to ?? "?"));
      break;
    case "flow_started":
      add(flowTag(flowName), detail.kind === "interruption" ? " started in " : " called by ", entry.state || "?");
      if (detail.trigger) add(" on ", String(detail.trigger));
      break;
    case "flow_interrupted":
      add(flowTag(flowName), " interrupted in ", entry.state || "?", " by ", flowTag(String(detail.by ?? "?")));
      if (detail.trigger) add(" on ", String(detail.trigger));
      break;
    case "flow_resumed":
      add(flowTag(flowName), " resumed in ", entry.state || "?");
      if (detail.after) add(" after ", flowTag(String(detail.after)));
      break;
    case "flow_completed":
      add(flowTag(flowName), " completed in ", entry.state || "?");
      break;
    case "flow_aborted":
      add(flowTag(flowName), " aborted in ", entry.state || "?");
      break;
    case "approval_requested": {
      add(toolCall(detail), " in ", entry.state || "?");
      add(" · asked by ", who(detail.asked_by, "history-asked-by"), " · approvers: ", String(detail.approvers ?? "?"));
      if (detail.expires_at) {
        const at = new Date(detail.expires_at);
        const until = el("time", "", Number.isNaN(at.getTime()) ? String(detail.expires_at)
          : at.toLocaleTimeString([], { hour12: false }));
        until.dateTime = String(detail.expires_at);
        add(" · expires ", until);
      }
      break;
    }
    case "approval_decided": {
      const status = el("span", `approval-decision ${detail.status || ""}`, String(detail.status ?? "?"));
      status.dataset.testid = "history-approval-status";
      add(toolCall(detail), " ", status);
      if (detail.by === "auto") add(" by an auto-approve rule");
      else if (detail.by === "expiry") add(" (not decided in time)");
      else add(" by ", who(detail.by, "history-decided-by"));
      if (detail.reason) {
        const reason = el("q", "history-reason", String(detail.reason));
        reason.dataset.testid = "history-reason";
        add(": ", reason);
      }
      break;
    }
    default:
      if (entry.state) add(entry.state);
  }
  if (entry.template) {
    sep();
    add(code(entry.template));
  }
  if (entry.attempt !== null && entry.attempt !== undefined) {
    sep();
    add(`attempt ${entry.attempt}`);
  }
  if (entry.duration_ms !== null && entry.duration_ms !== undefined) {
    sep();
    const duration = el("span", "duration", durationText(entry.duration_ms));
    duration.dataset.testid = "history-duration";
    add(duration);
  }
  if (entry.detail && !TOLD_KINDS.has(entry.kind)) {
    sep();
    add(el("span", "muted", JSON.stringify(entry.detail)));
  }
  return parts;
}

function durationText(ms) {
  return ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(ms < 10_000 ? 2 : 1)} s`;
}

// ---- helpers -------------------------------------------------------------------------------
function errorBox(error, testid) {
  const box = el("div", "message error ledger-error");
  box.dataset.testid = testid;
  box.dataset.error = error.code || "error";
  box.setAttribute("role", "alert");
  const status = error.status >= 400 ? ` (HTTP ${error.status})` : "";
  box.append(el("div", "message-head", `${error.code || error.name}${status}`), el("div", "message-text", error.message));
  const hint = error.status === 401 ? "paste an API key under “API key”"
    : error.status === 503 ? "read again after the next turn" : "";
  if (hint) box.append(el("div", "message-facts", hint));
  return box;
}

function el(tag, className = "", text = undefined) {
  const element = document.createElement(tag);
  if (className) element.className = className;
  if (text !== undefined) element.textContent = text;
  return element;
}

function code(text) {
  return el("code", "", text);
}

/** A tool call as `tool(item="tea", total=30)`, its arguments shown in full on hover. */
function toolCall(detail) {
  const args = detail.arguments && typeof detail.arguments === "object" ? detail.arguments : {};
  const shown = Object.entries(args).map(([name, value]) => `${name}=${JSON.stringify(value)}`).join(", ");
  const call = el("code", "tool-call", `${detail.tool ?? "?"}(${shown.length > 80 ? `${shown.slice(0, 79)}…` : shown})`);
  call.dataset.testid = "history-tool";
  call.title = JSON.stringify(args, null, 2);
  return call;
}

function who(name, testid) {
  const element = el("span", "history-who", name ? String(name) : "nobody known");
  element.dataset.testid = testid;
  return element;
}

function flowTag(name) {
  const tag = el("span", "flow-tag", name);
  tag.dataset.testid = "history-flow";
  return tag;
}
