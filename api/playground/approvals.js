// Approval cards: a tool call the flow's LLM wants to make waits for a person (the approvals routes). Each
// pending request gets a card in the conversation with the call, who asked, who may decide and a countdown to
// its expiry; its Approve and Deny buttons post the decision, then the card shows how it was decided.

const STATUS_LABELS = { pending: "waiting", approved: "approved", denied: "denied", expired: "expired" };
const EXPIRY_RETRY_MS = 2000;  // a request past its time is polled again this often until the server closes it

export class ApprovalCards {
  /**
   * @param {HTMLElement} list the conversation's message list the cards go into
   * @param {{
   *   decide: (request: object, approve: boolean, reason: string) => void,
   *   expire: (request: object) => boolean,
   *   decider: () => {by: string|null, text: string},
   * }} hooks decide posts a decision; expire follows a request past its time (false: not now, try again);
   *   decider says who decides (the `by` sent, and a sentence for the card)
   */
  constructor(list, hooks) {
    this.list = list;
    this.hooks = hooks;
    this.cards = new Map();  // request id -> {request, item, parts, expiring}
    this.timer = null;
  }

  clear() {
    this.cards.clear();
    this.stopTimer();
  }

  /** The requests still waiting for a decision, as last seen. */
  pending() {
    return [...this.cards.values()].filter((card) => card.request.status === "pending").map((card) => card.request);
  }

  /**
   * Show the session's requests: the status of those shown, and (with `add`) a card for each pending one not
   * shown yet, at the end of the conversation. Answers how many cards were added.
   * @param {Array<object>} requests a response's `approvals` or the model's `approvals`
   */
  sync(requests, { add = true } = {}) {
    let added = 0;
    for (const request of requests || []) {
      const card = this.cards.get(request.id);
      if (card) {
        card.request = request;
        this.render(card);
      } else if (add && request.status === "pending") {
        this.add(request);
        added += 1;
      }
    }
    if (this.pending().length) this.startTimer();
    else this.stopTimer();
    return added;
  }

  add(request) {
    const item = el("li", "message approval");
    item.dataset.role = "approval";
    item.dataset.testid = "approval";
    item.dataset.approvalId = request.id;
    item.dataset.tool = request.tool;
    item.setAttribute("aria-label", `Approval of a call of ${request.tool}`);
    const head = el("div", "message-head approval-head");
    const title = el("div", "approval-title");
    const tool = el("code", "approval-tool", request.tool);
    tool.dataset.testid = "approval-tool";
    const verb = el("span", "approval-verb", "The flow wants to call");
    title.append(verb, tool);
    const status = el("span", "approval-status");
    status.dataset.testid = "approval-status";
    title.append(status);

    const args = el("pre", "approval-arguments", JSON.stringify(request.arguments || {}, null, 2));
    args.dataset.testid = "approval-arguments";

    const facts = el("dl", "approval-facts");
    const fact = (term, testid) => {
      const value = el("dd");
      value.dataset.testid = testid;
      facts.append(el("dt", "", term), value);
      return value;
    };
    const askedBy = fact("asked by", "approval-asked-by");
    askedBy.textContent = request.asked_by || "nobody known (no user email on the session)";
    const approvers = fact("may approve", "approval-approvers");
    approvers.append(...approversText(request));
    const expiry = fact("expires", "approval-expiry");

    const form = el("form", "approval-form");
    form.noValidate = true;
    const reasonLabel = el("label", "approval-reason");
    const reason = el("input");
    reason.dataset.testid = "approval-reason";
    reason.maxLength = 2000;
    reason.placeholder = "kept in the session's history";
    const reasonText = el("span", "", "Reason ");
    reasonText.append(el("span", "optional", "optional"));
    reasonLabel.append(reasonText);
    reasonLabel.append(reason);
    const approve = button("Approve", "primary approval-approve", "approval-approve");
    const deny = button("Deny", "approval-deny", "approval-deny");
    const buttons = el("div", "approval-buttons");
    buttons.append(approve, deny);
    const as = el("p", "hint approval-as");
    as.dataset.testid = "approval-as";
    form.append(reasonLabel, buttons, as);
    approve.addEventListener("click", () => this.decide(request.id, true));
    deny.addEventListener("click", () => this.decide(request.id, false));
    form.addEventListener("submit", (event) => event.preventDefault());  // Enter in the reason decides nothing

    const error = el("div", "approval-error");
    error.dataset.testid = "approval-error";
    error.setAttribute("role", "alert");
    error.hidden = true;
    const outcome = el("p", "approval-outcome");
    outcome.dataset.testid = "approval-outcome";
    outcome.setAttribute("role", "status");
    outcome.hidden = true;

    item.append(head, title, args, facts, form, error, outcome);
    this.list.append(item);
    const card = {
      request, item, expiring: 0,
      parts: { head, verb, status, expiry, form, reason, approve, deny, as, error, outcome },
    };
    this.cards.set(request.id, card);
    this.render(card);
    return card;
  }

  decide(id, approve) {
    const card = this.cards.get(id);
    if (!card || card.request.status !== "pending" || card.item.dataset.busy === "true") return;
    this.hooks.decide(card.request, approve, card.parts.reason.value.trim());
  }

  /** While a decision is posted (or its run followed), the card's controls are off. */
  busy(id, on, approve = null) {
    const card = this.cards.get(id);
    if (!card) return;
    card.item.dataset.busy = String(on);
    if (on && approve !== null) {
      card.parts.error.hidden = true;
      card.parts.error.replaceChildren();
    }
    if (on && approve !== null) card.item.dataset.deciding = approve ? "approve" : "deny";
    else delete card.item.dataset.deciding;
    this.render(card);
  }

  /** The API refused the decision (403, 404, 409...): its error, in the card. */
  showError(id, error) {
    const card = this.cards.get(id);
    if (!card) return;
    const status = error.status >= 400 ? ` (HTTP ${error.status})` : "";
    const code = el("div", "approval-error-code", `${error.code}${status}`);
    card.parts.error.replaceChildren(code, el("div", "approval-error-text", error.message));
    card.parts.error.dataset.error = error.code;
    card.parts.error.dataset.status = String(error.status);
    card.parts.error.hidden = false;
  }

  render(card) {
    const { request, item, parts } = card;
    const status = request.status;
    const busy = item.dataset.busy === "true";
    const overdue = status === "pending" && remaining(request) !== null && remaining(request) <= 0;
    item.dataset.status = status;
    item.dataset.overdue = String(overdue);
    parts.head.textContent = status === "pending" ? "Approval needed" : "Approval";
    parts.verb.textContent = status === "pending" ? "The flow wants to call" : "The flow asked to call";
    parts.status.textContent = STATUS_LABELS[status] || status;
    parts.status.dataset.status = status;
    parts.form.hidden = status !== "pending";
    for (const control of [parts.approve, parts.deny, parts.reason]) control.disabled = busy || overdue;
    parts.approve.textContent = item.dataset.deciding === "approve" ? "Approving…" : "Approve";
    parts.deny.textContent = item.dataset.deciding === "deny" ? "Denying…" : "Deny";
    if (status === "pending") {
      parts.as.textContent = this.hooks.decider().text;
      this.renderExpiry(card);
    } else {
      const at = request.decided_at ? clock(request.decided_at) : "";
      parts.expiry.previousElementSibling.textContent = "decided";
      parts.expiry.textContent = at || "–";
      if (request.decided_at) parts.expiry.title = request.decided_at;
      parts.outcome.hidden = false;
      parts.outcome.replaceChildren(...outcomeText(request));
      parts.outcome.dataset.status = status;
    }
  }

  renderExpiry(card) {
    const { request, parts } = card;
    const left = remaining(request);
    parts.expiry.dataset.expiresAt = request.expires_at || "";
    if (left === null) {
      parts.expiry.textContent = "never (no time limit)";
      parts.expiry.dataset.left = "";
      return;
    }
    parts.expiry.title = request.expires_at;
    parts.expiry.dataset.left = String(Math.max(0, Math.ceil(left / 1000)));
    const time = el("time", "", left > 0 ? `in ${countdown(left)}` : "now: not decided in time");
    time.dateTime = request.expires_at;
    parts.expiry.replaceChildren(time, el("span", "muted", ` (${clock(request.expires_at)})`));
    parts.expiry.dataset.urgent = String(left > 0 && left < 60_000);
  }

  startTimer() {
    if (this.timer === null) this.timer = setInterval(() => this.tick(), 1000);
  }

  stopTimer() {
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
  }

  /** Every second: the countdowns, who decides, and a request past its time followed until the server closes it. */
  tick() {
    const now = Date.now();
    for (const card of this.cards.values()) {
      if (card.request.status !== "pending") continue;
      this.render(card);
      const left = remaining(card.request);
      if (left !== null && left <= 0 && now - card.expiring >= EXPIRY_RETRY_MS) {
        card.expiring = now;
        if (!this.hooks.expire(card.request)) card.expiring = 0;  // busy: again next second
      }
    }
  }
}

/** Milliseconds until the request expires, or null when it has no time limit. */
function remaining(request) {
  if (!request.expires_at) return null;
  const at = Date.parse(request.expires_at);
  return Number.isNaN(at) ? null : at - Date.now();
}

function countdown(ms) {
  const seconds = Math.ceil(ms / 1000);
  if (seconds >= 3600) {
    const hours = Math.floor(seconds / 3600);
    return `${hours} h ${String(Math.floor((seconds % 3600) / 60)).padStart(2, "0")} min`;
  }
  return `${Math.floor(seconds / 60)}:${String(seconds % 60).padStart(2, "0")}`;
}

function clock(iso) {
  const at = new Date(iso);
  return Number.isNaN(at.getTime()) ? "" : at.toLocaleTimeString([], { hour12: false });
}

/** Who may decide, in words: sender, member, anyone or role:<name>. */
export function approversText(request) {
  const kind = request.approvers || "sender";
  if (kind === "sender") {
    return request.asked_by ? ["only the sender, ", el("strong", "", request.asked_by)]
      : ["only the session's owner"];
  }
  if (kind === "member") return ["a member of the session (its owner or user)"];
  if (kind === "anyone") return ["anyone"];
  if (kind.startsWith("role:")) return ["a caller with the role ", el("code", "", kind.slice("role:".length))];
  return [kind];
}

function outcomeText(request) {
  const by = request.decided_by;
  const parts = [];
  if (request.status === "expired") {
    parts.push("Expired: not decided in time, which counts as denied; the tool was not run.");
  } else if (by === "auto") {
    parts.push(`${request.status === "approved" ? "Approved" : "Denied"} by an auto-approve rule.`);
  } else {
    const verb = request.status === "approved" ? "Approved" : "Denied";
    const who = el("strong", "", by || "an anonymous caller");
    who.dataset.testid = "approval-decided-by";
    parts.push(`${verb} by `, who, request.status === "approved" ? "." : ": the tool was not run.");
  }
  if (request.reason) {
    const reason = el("q", "approval-reason-text", request.reason);
    reason.dataset.testid = "approval-decided-reason";
    parts.push(" Reason: ", reason);
  }
  return parts;
}

function button(text, className, testid) {
  const element = el("button", className, text);
  element.type = "button";
  element.dataset.testid = testid;
  return element;
}

function el(tag, className = "", text = undefined) {
  const element = document.createElement(tag);
  if (className) element.className = className;
  if (text !== undefined) element.textContent = text;
  return element;
}
