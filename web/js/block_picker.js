// Sleight block picker: a button under every layer-spec input (inputs whose options carry `sleight_layers`, see
// nodes/block_picker.py) that lists the connected model's block ids, as Sleight · Inspect attention layers prints
// them, and writes the chosen ones into the input. The model is found by following the node's `model` input up
// to the loader that names the file; the server reads the file's structure, never its weights. The input stays a
// plain string, so workflows and API prompts are unchanged.
const { app } = window.comfyAPI.app;
const { api } = window.comfyAPI.api;

const LOADER_WIDGETS = { ckpt_name: "checkpoints", unet_name: "diffusion_models" };
const CSS = `
.sleight-picker { position: fixed; left: 50%; top: 50%; transform: translate(-50%, -50%); z-index: 10000;
  background: #1e1e1e; color: #ddd; border: 1px solid #555; border-radius: 6px; padding: 12px 14px;
  font: 12px monospace; max-height: 80vh; min-width: 420px; display: flex; flex-direction: column; gap: 8px;
  box-shadow: 0 8px 30px rgba(0, 0, 0, 0.6); }
.sleight-picker .rows { overflow: auto; max-height: 60vh; }
.sleight-picker table { border-collapse: collapse; width: 100%; }
.sleight-picker td, .sleight-picker th { padding: 1px 8px 1px 0; text-align: left; white-space: nowrap; }
.sleight-picker tr.off { opacity: 0.45; }
.sleight-picker .message { white-space: pre-wrap; color: #f5a97f; }
.sleight-picker .buttons { display: flex; gap: 6px; justify-content: flex-end; }
.sleight-picker button { background: #333; color: #ddd; border: 1px solid #666; border-radius: 4px; padding: 3px 10px; }`;

function addStyle() {
  if (document.getElementById("sleight-picker-style")) return;
  const style = document.createElement("style");
  style.id = "sleight-picker-style";
  style.textContent = CSS;
  document.head.append(style);
}

// {folder, file} of the loader feeding `node`'s model input (through pass-through nodes), or null
export function modelFile(node, seen = new Set()) {
  if (!node || seen.has(node.id)) return null;
  seen.add(node.id);
  for (const [name, folder] of Object.entries(LOADER_WIDGETS)) {
    const w = node.widgets?.find((w) => w.name === name);
    if (w && typeof w.value === "string" && w.value) return { folder, file: w.value };
  }
  const inputs = node.inputs ?? [];
  let slot = inputs.findIndex((i) => i.name === "model");
  if (slot < 0 && inputs.length === 1) slot = 0;           // reroutes
  return slot < 0 ? null : modelFile(node.getInputNode(slot), seen);
}

function sizeOf(node) {
  const get = (name) => node.widgets?.find((w) => w.name === name)?.value ?? 0;
  return { width: get("width"), height: get("height") };
}

function el(tag, props = {}, ...children) {
  const e = Object.assign(document.createElement(tag), props);
  e.append(...children);
  return e;
}

export async function openPicker(node, widget, options) {
  addStyle();
  document.querySelector(".sleight-picker")?.remove();
  const dialog = el("div", { className: "sleight-picker" });
  const title = el("div", { textContent: `${node.title}: ${widget.name}` });
  const body = el("div", { className: "rows" });
  const buttons = el("div", { className: "buttons" });
  const close = () => dialog.remove();
  dialog.append(title, body, buttons);
  document.body.append(dialog);
  const cancel = el("button", { textContent: "Cancel", onclick: close });

  const source = modelFile(node);
  if (!source) {
    body.append(el("div", { className: "message", textContent:
      "Connect a Load Checkpoint or Load Diffusion Model node (directly or through other model nodes) to this node's model input." }));
    buttons.append(cancel);
    return dialog;
  }
  const { width, height } = sizeOf(node);
  const query = new URLSearchParams({ ...source, kinds: options.sleight_layers, width, height, spec: widget.value ?? "" });
  let info;
  try {
    const response = await api.fetchApi(`/sleight/layers?${query}`);
    info = await response.json();
    if (!response.ok) throw new Error(info.error ?? `HTTP ${response.status}`);
  } catch (error) {
    body.append(el("div", { className: "message", textContent: String(error.message ?? error) }));
    buttons.append(cancel);
    return dialog;
  }
  title.textContent = `${node.title}: ${widget.name} (${info.label}, ${source.file} at ${info.width}x${info.height})`;
  const eligible = new Set(info.eligible);
  const chosen = new Set(info.selected);
  const rows = new Map();                                  // block -> {kinds, heads, tokens}
  for (const layer of info.layers) {
    const row = rows.get(layer.block) ?? { kinds: [], heads: `${layer.heads}x${layer.head_dim}`,
                                           tokens: `${layer.image_tokens} (${layer.grid.join("x")})` };
    row.kinds.push(layer.kind);
    rows.set(layer.block, row);
  }
  const boxes = [];
  const table = el("table", {}, el("tr", {}, ...["", "block", "kind", "heads", "image tokens"].map((t) => el("th", { textContent: t }))));
  for (const [block, row] of rows) {
    const box = el("input", { type: "checkbox", checked: chosen.has(block), disabled: !eligible.has(block) });
    box.dataset.block = block;
    if (eligible.has(block)) boxes.push(box);
    table.append(el("tr", { className: eligible.has(block) ? "" : "off" }, el("td", {}, box),
      ...[block, row.kinds.join(" + "), row.heads, row.tokens].map((t) => el("td", { textContent: t }))));
  }
  if (info.spec_error) body.append(el("div", { className: "message", textContent: info.spec_error }));
  body.append(table);
  const all = (on) => boxes.forEach((b) => { b.checked = on; });
  const use = el("button", { textContent: "Use selection", onclick: () => {
    const picked = boxes.filter((b) => b.checked).map((b) => b.dataset.block);
    if (!picked.length) return;
    widget.value = picked.length === boxes.length ? "*" : picked.join(", ");
    widget.callback?.(widget.value, app.canvas, node);
    const [name, value] = options.sleight_layers_switch ?? [];
    const mode = name && node.widgets?.find((w) => w.name === name);
    if (mode) {
      mode.value = value;
      mode.callback?.(value, app.canvas, node);
    }
    node.setDirtyCanvas?.(true, true);
    close();
  } });
  buttons.append(el("button", { textContent: "All", onclick: () => all(true) }),
                 el("button", { textContent: "None", onclick: () => all(false) }), cancel, use);
  return dialog;
}

app.registerExtension({
  name: "sleight.BlockPicker",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    const inputs = { ...nodeData.input?.required, ...nodeData.input?.optional };
    const specs = Object.entries(inputs).filter(([, spec]) => spec?.[1]?.sleight_layers);
    if (!specs.length) return;
    const created = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function () {
      const result = created?.apply(this, arguments);
      for (const [name, spec] of specs) {
        const target = this.widgets?.find((w) => w.name === name);
        if (!target) continue;
        // last in the widget list and never serialised, so saved widget values and API prompts are unchanged
        const button = this.addWidget("button", `pick blocks: ${name}`, null, () => openPicker(this, target, spec[1]),
                                      { serialize: false });
        button.serialize = false;
      }
      return result;
    };
  },
});
