// The flow's state diagram: Graphviz's SVG from the server, its nodes and edges tagged with their states,
// the current state highlighted and the transitions of the last turn marked, all in the DOM.
//
// A flow that runs other flows (sub-flows, interruptions) is drawn as its session graph: each other flow's
// states in a cluster named after it, nodes named `<flow>/<state>`. The states whose flows wait on the
// session's stack (a sub-flow's caller, an interrupted state) are marked "waiting", the clusters of the
// flows running now "active-flow".

const SVG_NS = "http://www.w3.org/2000/svg";
const CLUSTER_PREFIX = "cluster_";

export class DiagramView {
  /**
   * @param {HTMLElement} container where the SVG goes; carries data-current-state (and data-waiting)
   * @param {(stateId: string) => void} onSelect called when a state's node is clicked
   */
  constructor(container, onSelect) {
    this.container = container;
    this.onSelect = onSelect;
    this.nodes = new Map();
    this.flowOf = new Map();
    this.clusters = new Map();
    this.edges = [];
    this.current = null;
    this.svg = null;
    this.zoomed = false;
    this.natural = null;
  }

  /** Show `svgText` for the flow described by `flow` (the API's flow description). */
  load(svgText, flow) {
    const parsed = new DOMParser().parseFromString(svgText, "image/svg+xml");
    const root = parsed.documentElement;
    this.container.replaceChildren();
    this.nodes.clear();
    this.flowOf.clear();
    this.clusters.clear();
    this.edges = [];
    this.current = null;
    if (root.namespaceURI !== SVG_NS || root.localName !== "svg") {
      this.container.textContent = "The diagram could not be read.";
      return;
    }
    const svg = document.importNode(root, true);
    const [width, height] = ["width", "height"].map((name) => /^([0-9.]+)pt$/.exec(svg.getAttribute(name) || ""));
    // Graphviz sizes its SVG in points
    this.natural = width && height ? { width: Number(width[1]) * 4 / 3, height: Number(height[1]) * 4 / 3 } : null;
    svg.removeAttribute("width");
    svg.removeAttribute("height");
    svg.setAttribute("role", "img");
    svg.setAttribute("aria-label", `State diagram of ${flow.model_key}`);
    const described = flow.nodes && flow.nodes.length ? flow.nodes : flow.states;
    const kinds = new Map(described.map((node) => [node.id, node.kind]));
    for (const node of described) this.flowOf.set(node.id, node.flow || flow.flow || "");
    for (const node of svg.querySelectorAll("g.node")) {
      const id = titleOf(node);
      if (!kinds.has(id)) continue;  // the start point
      node.dataset.state = id;
      if (this.flowOf.get(id)) node.dataset.flow = this.flowOf.get(id);
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
    for (const cluster of svg.querySelectorAll("g.cluster")) {
      const title = titleOf(cluster);
      if (!title.startsWith(CLUSTER_PREFIX)) continue;
      const name = title.slice(CLUSTER_PREFIX.length);
      cluster.dataset.flow = name;
      this.clusters.set(name, cluster);
    }
    for (const edge of svg.querySelectorAll("g.edge")) {
      const [source, target] = titleOf(edge).split("->");
      edge.dataset.source = source;
      edge.dataset.target = target;
      this.edges.push(edge);
    }
    this.container.append(svg);
    this.svg = svg;
    this.container.dataset.currentState = "";
    this.container.dataset.waiting = "";
    this.zoom(this.zoomed);
  }

  /** Show the diagram at its full size, to scroll around in (true), or fitted to the panel (false). */
  zoom(on) {
    this.zoomed = Boolean(on);
    this.container.classList.toggle("zoomed", this.zoomed);
    if (this.svg) {
      const full = this.zoomed && this.natural;
      this.svg.style.width = full ? `${Math.round(this.natural.width)}px` : "";
      this.svg.style.height = full ? `${Math.round(this.natural.height)}px` : "";
    }
    this.reveal();
  }

  /** Scroll the current state into the middle of the panel, when the diagram is larger than it. */
  reveal() {
    const node = this.current ? this.nodes.get(this.current) : null;
    if (!node || !this.zoomed) return;
    const box = node.getBoundingClientRect();
    const frame = this.container.getBoundingClientRect();
    this.container.scrollLeft += box.left - frame.left - (frame.width - box.width) / 2;
    this.container.scrollTop += box.top - frame.top - (frame.height - box.height) / 2;
  }

  /**
   * Highlight `stateId` (null: none); `running` marks an invoker state whose run is in flight, `waiting` the
   * nodes whose flows wait on the session's stack below the active one.
   */
  highlight(stateId, { running = false, waiting = [] } = {}) {
    for (const node of this.nodes.values()) {
      node.classList.remove("current", "running", "waiting");
      node.removeAttribute("aria-current");
    }
    for (const cluster of this.clusters.values()) cluster.classList.remove("active-flow", "waiting-flow");
    this.current = stateId;
    this.container.dataset.currentState = stateId || "";
    this.container.dataset.running = running ? "true" : "false";
    const marked = waiting.filter((id) => id !== stateId && this.nodes.has(id));
    this.container.dataset.waiting = marked.join(" ");
    for (const id of marked) {
      this.nodes.get(id).classList.add("waiting");
      const cluster = this.clusters.get(this.flowOf.get(id));
      if (cluster) cluster.classList.add("waiting-flow");
    }
    const node = stateId ? this.nodes.get(stateId) : null;
    if (node) {
      node.classList.add("current");
      if (running) node.classList.add("running");
      node.setAttribute("aria-current", "step");
      const cluster = this.clusters.get(this.flowOf.get(stateId));
      if (cluster) {
        cluster.classList.remove("waiting-flow");
        cluster.classList.add("active-flow");
      }
      this.reveal();
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
