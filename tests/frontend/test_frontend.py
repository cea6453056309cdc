"""Every example workflow in the real ComfyUI frontend, headless Chromium, on both frontends: the one ComfyUI
0.3.75 bundles and the newest (thumbnails.NEWEST_FRONTEND, installed into build/ by `make setup`). On each:
no missing node types, no error toasts, no node with errors, widget values equal to the API twin
tests/workflows/<stem>.api.json (the inputs each node declares), no overlapping nodes; and the block picker
lists the connected model's block ids and writes the chosen ones into the layer-spec input.

Screenshots (kept as test artifacts): output/frontend/<frontend>/<stem>.png. SLEIGHT_THUMBNAILS=1 also rewrites
the template thumbnails example_workflows/<stem>.jpg from the bundled frontend's (or run scripts/thumbnails.py).
Without Chromium or the newest frontend these tests fail: they never skip.
"""
import json
import os

import pytest

import comfy_env
import thumbnails
from comfy_server import ComfyServer

EXAMPLES = sorted(thumbnails.EXAMPLES.glob("*.json"))
API_TWINS = comfy_env.ROOT / "tests" / "workflows"
SHOTS = comfy_env.OUTPUT / "frontend"
SD15 = "sleight-tiny-sd15.safetensors"
FLUX = "sleight-tiny-flux-dev.safetensors"


@pytest.fixture(scope="module", params=thumbnails.FRONTENDS)
def frontend(request, tmp_path_factory):
    why = thumbnails.unavailable()
    if why:
        pytest.fail(f"the frontend tests cannot run: {why}")
    import tiny_models

    tiny_models.ensure_models(names=["sd15", "flux_dev"])
    name = request.param
    wanted = [m for p in EXAMPLES for m in thumbnails.workflow_models(json.loads(p.read_text()))]
    models = thumbnails.models_with(tmp_path_factory.mktemp("models"), wanted)
    with ComfyServer(log_path=SHOTS / name / "server.log", models_dir=models,
                     extra_args=thumbnails.frontend_args(name)) as server, thumbnails.Frontend(server.url) as fe:
        fe.name, fe.server = name, server
        fe.declared = thumbnails.declared_inputs(server.client.object_info())
        version = fe.page.evaluate("() => window.__COMFYUI_FRONTEND_VERSION__")
        assert name == "bundled" or version == name, f"serving frontend {version}, expected {name}"
        yield fe


def test_examples_have_twins_and_thumbnails():
    assert EXAMPLES, "no example_workflows/*.json"
    for path in EXAMPLES:
        assert (API_TWINS / f"{path.stem}.api.json").exists(), f"{path.name} has no API twin in {API_TWINS}"
        assert path.with_suffix(".jpg").exists(), f"{path.name} has no .jpg thumbnail (run scripts/thumbnails.py)"
        wf = json.loads(path.read_text())
        assert wf.get("version") == 0.4 and isinstance(wf["links"][0], list), f"{path.name}: not UI format 0.4"


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_loads_cleanly(frontend, path):
    wf = json.loads(path.read_text())
    r = frontend.load(wf, path.stem)
    shot = frontend.screenshot(SHOTS / frontend.name / f"{path.stem}.png")
    if os.environ.get("SLEIGHT_THUMBNAILS") == "1" and frontend.name == "bundled":
        thumbnails.make_thumbnail(shot, path.with_suffix(".jpg"))

    assert not r["missing"], f"node types not registered in the frontend: {r['missing']}"
    bad = [t["text"] for t in r["toasts"] if t["error"] or "zod" in t["text"].lower()
           or "invalid workflow" in t["text"].lower()]
    assert not bad, f"error toasts: {bad}"
    assert r["loaded"] == len(wf.get("nodes", [])) > 0, f"{r['loaded']} of {len(wf.get('nodes', []))} nodes loaded"
    assert not r["errored"], f"nodes with errors after load: {r['errored']}"
    assert not thumbnails.overlaps(r["boxes"]), f"overlapping nodes: {thumbnails.overlaps(r['boxes'])}"

    twin = json.loads((API_TWINS / f"{path.stem}.api.json").read_text())
    prompt = thumbnails.api_inputs(r["prompt"], frontend.declared)
    assert sorted(prompt, key=int) == sorted(twin, key=int), "node ids differ between graphToPrompt and the twin"
    for nid, node in twin.items():
        assert prompt[nid]["class_type"] == node["class_type"], nid
        assert set(node["inputs"]) <= frontend.declared[node["class_type"]], f"node {nid}: the twin has undeclared inputs"
        assert prompt[nid]["inputs"] == node["inputs"], f"node {nid} ({node['class_type']}) inputs differ"


# Sleight · R2F plan's example, queued from the page: the tiny Qwen3 (the tiny models' test-only loader,
# scripts/tiny_nodes) in place of its CLIPLoader (no real loader builds a tiny Qwen3), the tiny SD1.5 in place of the checkpoint, 64 px, 3 steps.
QUEUE_R2F_PLAN_JS = """async ([wf, ckpt]) => {
  await app.loadGraphData(wf, true, true, "sleight-r2f-plan (tiny)");
  const g = app.graph, byType = t => g._nodes.filter(n => n.type === t);
  const set = (n, k, v) => {
    const w = (n.widgets || []).find(w => w.name === k);
    if (!w) throw new Error(`${n.type} has no widget ${k}: ${(n.widgets || []).map(w => w.name)}`);
    w.value = v;
  };
  const plan = byType("SleightR2FPlan")[0], tiny = LiteGraph.createNode("SleightTinyTextEncoder");
  g.add(tiny);
  set(tiny, "text_encoder", "qwen3");
  g.remove(byType("CLIPLoader")[0]);
  tiny.connect(0, plan, "clip");
  set(byType("CheckpointLoaderSimple")[0], "ckpt_name", ckpt);
  for (const k of byType("KSampler")) set(k, "steps", 3);
  for (const k of ["width", "height"]) set(byType("EmptyLatentImage")[0], k, 64);
  set(plan, "max_new_tokens", 16);
  await app.queuePrompt(0);
  return {plan: plan.id, preview: byType("PreviewAny")[0].id};
}"""


def test_r2f_plan_runs_from_the_page_and_preview_any_shows_the_plan(frontend):
    import time

    import tiny_models

    tiny_models.ensure_models(names=["sd15"])
    wf = json.loads((thumbnails.EXAMPLES / "sleight-r2f-plan.json").read_text())
    ids = frontend.page.evaluate(QUEUE_R2F_PLAN_JS, [wf, tiny_models.MODELS["sd15"].files["checkpoint"].split("/")[-1]])
    deadline, entry = time.monotonic() + 300, {}
    while time.monotonic() < deadline and not entry.get("status", {}).get("completed"):
        history = frontend.server.client.get("histories").json()
        entry = next((e for e in history.values() if str(ids["plan"]) in e.get("outputs", {})), {})
        if entry.get("status", {}).get("status_str") == "error":
            raise AssertionError(f"the run failed: {entry['status']}")
        time.sleep(0.5)
    assert entry.get("status", {}).get("completed"), "the queued workflow did not finish"
    plan_text = entry["outputs"][str(ids["preview"])]["text"][0]
    assert "answer did not parse" in plan_text and plan_text.endswith("### Visual Detail Level: 0")
    frontend.page.wait_for_function("([id, text]) => (app.graph.getNodeById(id).widgets || [])"
                                    ".some(w => String(w.value) === text)", arg=[ids["preview"], plan_text],
                                    timeout=30_000)
    frontend.screenshot(SHOTS / "sleight-r2f-plan-tiny-run.png")


GRAPH_JS = """async ([loader, file, node]) => {
  const g = app.graph; g.clear();
  const load = LiteGraph.createNode(loader); g.add(load); load.pos = [0, 0];
  load.widgets.find(w => w.name === (loader === "UNETLoader" ? "unet_name" : "ckpt_name")).value = file;
  const n = LiteGraph.createNode(node); g.add(n); n.pos = [420, 0];
  load.connect(0, n, "model");
  const lone = LiteGraph.createNode(node); g.add(lone); lone.pos = [n.pos[0] + n.size[0] + 60, 0];
  app.canvas.ds.scale = 1; app.canvas.ds.offset = [40, 40]; g.setDirtyCanvas(true, true);
  await new Promise(r => setTimeout(r, 300));
  return [n.id, lone.id];
}"""
BUTTON_JS = """([id, input]) => {
  const n = app.graph.getNodeById(id), b = n.widgets.find(w => w.name === `pick blocks: ${input}`);
  const rect = app.canvas.canvas.getBoundingClientRect(), [ox, oy] = app.canvas.ds.offset, s = app.canvas.ds.scale;
  const y = b.y ?? b.last_y;
  return [rect.left + (n.pos[0] + n.size[0] / 2 + ox) * s, rect.top + (n.pos[1] + y + 10 + oy) * s];
}"""
STATE_JS = """async ([id, input]) => {
  const n = app.graph.getNodeById(id);
  const {output} = await app.graphToPrompt();
  return {value: n.widgets.find(w => w.name === input).value, layers: n.widgets.find(w => w.name === "layers")?.value,
          saved: n.serialize().widgets_values, widgets: n.widgets.filter(w => w.type !== "button").map(w => w.value),
          inputs: JSON.parse(JSON.stringify(output[String(id)].inputs))};
}"""


def click_button(fe, node_id, input_name):
    fe.page.mouse.click(*fe.page.evaluate(BUTTON_JS, [node_id, input_name]))
    fe.page.wait_for_selector(".sleight-picker table tr td, .sleight-picker .message", timeout=60_000)


def rows(fe):
    return fe.page.evaluate("""() => [...document.querySelectorAll('.sleight-picker input[type=checkbox]')]
                               .map(b => [b.dataset.block, !b.disabled, b.checked])""")


@pytest.mark.parametrize("loader,file,node,input_name,eligible,pick", [
    ("CheckpointLoaderSimple", SD15, "SleightPromptRoute", "custom_layers",
     ["input.1.0", "middle.0.0", "output.0.0", "output.1.0"], ["input.1.0", "output.1.0"]),
    ("UNETLoader", FLUX, "SleightPAIntA", "custom_layers", ["double.0", "single.0"], ["single.0"]),
    ("CheckpointLoaderSimple", SD15, "SleightFindTextLayers", "search_layers",
     ["input.1.0", "middle.0.0", "output.0.0", "output.1.0"], ["middle.0.0", "output.0.0", "output.1.0"]),
])
def test_block_picker(frontend, loader, file, node, input_name, eligible, pick):
    fe = frontend
    node_id, lone_id = fe.page.evaluate(GRAPH_JS, [loader, file, node])
    before = fe.page.evaluate(STATE_JS, [node_id, input_name])
    assert before["saved"] == before["widgets"], "the button must not be saved with the widget values"

    click_button(fe, node_id, input_name)
    listed = rows(fe)
    assert [b for b, enabled, _ in listed if enabled] == eligible
    assert [b for b, _, checked in listed if checked] == [b for b in eligible if before["value"] == "*"]
    fe.page.click(".sleight-picker button:has-text('None')")
    for block in pick:
        fe.page.click(f".sleight-picker input[data-block='{block}']")
    fe.page.screenshot(path=str(SHOTS / fe.name / f"block-picker-{node}.png"))
    fe.page.click(".sleight-picker button:has-text('Use selection')")
    after = fe.page.evaluate(STATE_JS, [node_id, input_name])
    assert after["value"] == ", ".join(pick) and after["inputs"][input_name] == after["value"]
    if after["layers"] is not None:                           # a layers combo switches to the custom spec
        assert after["layers"] == "custom" and after["inputs"]["layers"] == "custom"
    assert after["saved"] == after["widgets"] and set(after["inputs"]) <= fe.declared[node]

    click_button(fe, node_id, input_name)                      # opens with the current spec ticked
    assert [b for b, _, checked in rows(fe) if checked] == pick
    fe.page.click(".sleight-picker button:has-text('Cancel')")

    click_button(fe, lone_id, input_name)                      # no model connected: says what to do
    assert "Connect a Load Checkpoint" in fe.page.inner_text(".sleight-picker .message")
    fe.page.click(".sleight-picker button:has-text('Cancel')")
    assert fe.page.query_selector(".sleight-picker") is None
