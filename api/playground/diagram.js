// The flow's state diagram: Graphviz's SVG from the server, its nodes and edges tagged with their states,
// the current state highlighted and the transitions of the last turn marked, all in the DOM.

const SVG_NS = "http://www.w3.org/2000/svg";

export class DiagramView {
  /**
   * @param {HTMLElement} container where the SVG goes; carries data-current-state
   * @param {(stateId: string) => void} onSelect called when a state's node is clicked
   */
  constructor(container, onSelect) {
    this.container = container;
    this.onSelect = onSelect;
    this.nodes = new Map();
    this.edges = [];
    this.current = null;
  }

  /** Show `svgText` for the flow described by `flow` (the API's flow description). */
  load(svgText, flow) {
    const parsed = new DOMParser().parseFromString(svgText, "image/svg+xml");
    const root = parsed.documentElement;
    this.container.replaceChildren();
    this.nodes.clear();
    this.edges = [];
    this.current = null;
    if (root.namespaceURI !== SVG_NS || root.localName !== "svg") {
      this.container.textContent = "The diagram could not be read.";
      return;
    }
    const svg = document.importNode(root, true);
    svg.removeAttribute("width");
    svg.removeAttribute("height");
    svg.setAttribute("role", "img");
    svg.setAttribute("aria-label", `State diagram of ${flow.model_key}`);
    const kinds = new Map(flow.states.map((state) => [state.id, state.kind]));
    for (const node of svg.querySelectorAll("g.node")) {
      const id = titleOf(node);
      if (!kinds.has(id)) continue;  // the start point
      node.dataset.state = id;
      node.classList.add(`kind-${kinds.get(id)}`);
      node.setAttribute("tabindex", "0");
      node.setAttribute("role", "button");
      node.setAttribute("aria-label", `state ${id}`);
      node.addEventListener("click", () => this.onSelect(id));
      node.addEventListener("keydown", (event) => {
        if (event.key === "Enter" || event.key === " ") {
          event.preventDefault();
          this.onSelect(id);
        }
      });
      this.nodes.set(id, node);
    }
    for (const edge of svg.querySelectorAll("g.edge")) {
      const [source, target] = titleOf(edge).split("->");
      edge.dataset.source = source;
      edge.dataset.target = target;
      this.edges.push(edge);
    }
    this.container.append(svg);
    this.container.dataset.currentState = "";
  }

  /** Highlight `stateId` (null: none); `running` marks an invoker state whose run is in flight. */
  highlight(stateId, { running = false } = {}) {
    for (const node of this.nodes.values()) {
      node.classList.remove("current", "running");
      node.removeAttribute("aria-current");
    }
    this.current = stateId;
    this.container.dataset.currentState = stateId || "";
    this.container.dataset.running = running ? "true" : "false";
    const node = stateId ? this.nodes.get(stateId) : null;
    if (node) {
      node.classList.add("current");
      if (running) node.classList.add("running");
      node.setAttribute("aria-current", "step");
    }
  }

  /** Mark the edge from `source` to `target` as taken in this turn. */
  markTaken(source, target) {
    for (const edge of this.edges) {
      if (edge.dataset.source === source && edge.dataset.target === target) edge.classList.add("taken");
    }
  }

  clearTaken() {
    for (const edge of this.edges) edge.classList.remove("taken");
  }

  select(stateId) {
    for (const [id, node] of this.nodes) node.classList.toggle("selected", id === stateId);
  }
}

function titleOf(group) {
  const title = group.querySelector(":scope > title");
  return title ? title.textContent.trim() : "";
}
