// The live GenieModel as a collapsible JSON tree: the flow's own (captured) fields first, then GenieModel's,
// with the fields the last turn changed marked.

export class ModelView {
  constructor(container) {
    this.container = container;
    this.previous = null;
    this.open = new Set();
  }

  clear() {
    this.container.replaceChildren();
    this.previous = null;
    this.open.clear();
  }

  /**
   * @param {object} model the model's JSON
   * @param {Array<{name: string, captured: boolean, type: string, description: string|null}>} fields
   * @param {(name: string, value: any) => string|null} note a remark shown beside a top-level value
   */
  render(model, fields, note = () => null) {
    this.rememberOpen();
    const known = new Map(fields.map((field) => [field.name, field]));
    const names = [...fields.map((field) => field.name).filter((name) => name in model),
      ...Object.keys(model).filter((name) => !known.has(name))];
    const list = document.createElement("dl");
    list.className = "fields";
    let section = null;
    for (const name of names) {
      const field = known.get(name) || { name, captured: true, type: "", description: null };
      const group = field.captured ? "captured" : "base";
      if (group !== section) {
        section = group;
        const heading = document.createElement("div");
        heading.className = "field-group";
        heading.textContent = group === "captured" ? "Captured by the flow" : "GenieModel";
        list.append(heading);
      }
      const row = document.createElement("div");
      row.className = `field ${group}`;
      row.dataset.testid = "model-field";
      row.dataset.field = name;
      row.dataset.captured = String(field.captured);
      const changed = this.previous !== null && JSON.stringify(this.previous[name]) !== JSON.stringify(model[name]);
      row.dataset.changed = String(changed);
      const term = document.createElement("dt");
      term.textContent = name;
      if (field.type) term.title = field.description ? `${field.type}: ${field.description}` : field.type;
      const value = document.createElement("dd");
      value.append(renderValue(model[name], name, field.captured || this.open.has(name), this.open));
      const remark = note(name, model[name]);
      if (remark) {
        const aside = document.createElement("span");
        aside.className = "json-note";
        aside.textContent = ` ${remark}`;
        value.append(aside);
      }
      row.append(term, value);
      list.append(row);
    }
    this.container.replaceChildren(list);
    this.previous = model;
  }

  rememberOpen() {
    for (const details of this.container.querySelectorAll("details[data-path]")) {
      if (details.open) this.open.add(details.dataset.path);
      else this.open.delete(details.dataset.path);
    }
  }
}

function renderValue(value, path, open, opened) {
  if (value === null || typeof value !== "object") {
    const span = document.createElement("span");
    span.className = `json-${value === null ? "null" : typeof value}`;
    // strings keep their line breaks, for reading; "Copy JSON" gives the exact JSON
    span.textContent = typeof value === "string" ? `"${value}"` : String(value);
    return span;
  }
  const entries = Array.isArray(value) ? value.map((item, index) => [index, item]) : Object.entries(value);
  if (!entries.length) {
    const span = document.createElement("span");
    span.className = "json-empty";
    span.textContent = Array.isArray(value) ? "[]" : "{}";
    return span;
  }
  const details = document.createElement("details");
  details.dataset.path = path;
  details.open = open || opened.has(path);
  const summary = document.createElement("summary");
  summary.textContent = Array.isArray(value)
    ? `[ ${entries.length} item${entries.length === 1 ? "" : "s"} ]`
    : `{ ${entries.map(([key]) => key).slice(0, 4).join(", ")}${entries.length > 4 ? ", …" : ""} }`;
  details.append(summary);
  const list = document.createElement("dl");
  list.className = "json-children";
  for (const [key, item] of entries) {
    const term = document.createElement("dt");
    term.textContent = String(key);
    const description = document.createElement("dd");
    description.append(renderValue(item, `${path}.${key}`, false, opened));
    list.append(term, description);
  }
  details.append(list);
  return details;
}
