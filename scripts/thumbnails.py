"""Drive the real ComfyUI frontend in headless Chromium; regenerate the template thumbnails from it.

    .venv/bin/python scripts/thumbnails.py     # example_workflows/<stem>.jpg from a screenshot of each workflow

`Frontend` is also what tests/frontend and scripts/make_workflows.py use: it loads a UI workflow with
`app.loadGraphData` and reports what the page saw (unknown node types, nodes with errors, new toasts, every
node's box on the canvas) and `app.graphToPrompt()`'s API JSON. Two frontends: the one ComfyUI bundles and the
newest (NEWEST_FRONTEND, installed by `make setup` into build/ and served with --front-end-root).
"""
import json
import os
import sys
import time
from pathlib import Path

import requests

import comfy_env
import comfy_server

NEWEST_FRONTEND = "1.58.1"       # scripts/setup.sh NEWEST_FRONTEND
FRONTENDS = ("bundled", NEWEST_FRONTEND)
CHROMIUM = os.environ.get("SLEIGHT_CHROMIUM", "/usr/bin/chromium")
BROWSER_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run"]
EXAMPLES = comfy_env.ROOT / "example_workflows"
SETTINGS = {
    "Comfy.TutorialCompleted": True,                    # no template browser over the canvas
    "Comfy.Workflow.ShowMissingModelsWarning": False,   # the examples name real checkpoints the server lacks
    "Comfy.Minimap.Visible": False,
    "LiteGraph.Canvas.MinFontSizeForLOD": 0,            # keep text when "fit view" zooms out
    "Comfy.Graph.CanvasInfo": False,
}

LOAD_JS = """async ([wf, name]) => {
  const toasts = () => [...document.querySelectorAll('.p-toast-message')]
    .map(t => ({text: t.innerText, error: /toast-message-error/.test(t.className)}));
  const before = toasts().length;
  const known = new Set(Object.keys(LiteGraph.registered_node_types));
  const missing = [...new Set((wf.nodes || []).map(n => n.type).filter(t => !known.has(t)))];
  await app.loadGraphData(wf, true, true, name);
  await new Promise(r => setTimeout(r, 500));
  const errored = app.graph._nodes.filter(n => n.has_errors).map(n => `${n.id}:${n.type}`);
  const th = LiteGraph.NODE_TITLE_HEIGHT;
  const boxes = app.graph._nodes.map(n => [String(n.id), n.type, n.pos[0], n.pos[1] - th,
                                           n.pos[0] + n.size[0], n.pos[1] + n.size[1]]);
  const {output} = await app.graphToPrompt();
  return {missing, errored, loaded: app.graph._nodes.length, toasts: toasts().slice(before), boxes,
          prompt: JSON.parse(JSON.stringify(output))};
}"""


def frontend_args(name):
    """ComfyServer extra_args that serve frontend `name` ("bundled": the one ComfyUI ships, none)."""
    if name == "bundled":
        return []
    root = comfy_env.BUILD / f"frontend-{name}" / "comfyui_frontend_package" / "static"
    if not (root / "index.html").exists():
        raise RuntimeError(f"comfyui-frontend-package {name} is not installed in {root.parent.parent}: run make setup")
    return ["--front-end-root", str(root)]


def workflow_models(workflow):
    """The model files a UI workflow names for download ({"name", "directory"} of its loaders' properties)."""
    return [m for n in workflow.get("nodes", []) for m in (n.get("properties") or {}).get("models", [])]


def models_with(dest, models):
    """A models folder for a frontend server: the tiny models (linked) and an empty file for each of `models`,
    so that the frontend finds every model a workflow names (it marks a missing one as an error)."""
    dest = Path(dest)
    for sub in ("checkpoints", "diffusion_models", "text_encoders", "vae"):
        (dest / sub).mkdir(parents=True, exist_ok=True)
        for f in sorted((comfy_env.MODELS / sub).glob("*")):
            if not (dest / sub / f.name).exists():
                (dest / sub / f.name).symlink_to(f.resolve())
    for m in models:
        path = dest / m["directory"] / m["name"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
    return dest


def overlaps(boxes):
    """Pairs of node boxes [id, type, x0, y0, x1, y1] (title bar included) that intersect."""
    out = []
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            if a[2] < b[4] and b[2] < a[4] and a[3] < b[5] and b[3] < a[5]:
                out.append((f"{a[0]}:{a[1]}", f"{b[0]}:{b[1]}"))
    return out


def declared_inputs(object_info):
    """{class_type: set of input names the node declares} from /object_info."""
    return {name: set(info["input"].get("required", {})) | set(info["input"].get("optional", {}))
            for name, info in object_info.items()}


def api_inputs(prompt, declared):
    """graphToPrompt's API prompt with only the inputs each node declares (display widgets dropped: PreviewAny's
    `preview` is in 1.32.9's prompt, not in 1.58.1's, and no backend reads it)."""
    return {nid: {**node, "inputs": {k: v for k, v in node["inputs"].items() if k in declared[node["class_type"]]}}
            for nid, node in prompt.items()}


def unavailable():
    """Why the frontend cannot be driven here, or None."""
    if not Path(CHROMIUM).exists():
        return f"no Chromium at {CHROMIUM} (make setup installs Debian's chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright Python package is not installed (make setup installs it)"
    return None


class Frontend:
    """One page of the frontend at `url` in headless Chromium. `browser`: share another Frontend's browser (one
    Playwright per thread), else it starts its own."""

    def __init__(self, url, viewport=(1600, 900), browser=None):
        self.url, self.viewport, self.browser = url.rstrip("/"), viewport, browser
        self.console_errors = []
        self._pw = self.page = None

    def __enter__(self):
        for key, value in SETTINGS.items():
            requests.post(comfy_server.route(self.url, "settings", id=key), json=value, timeout=30).raise_for_status()
        try:
            if self.browser is None:
                from playwright.sync_api import sync_playwright

                self._pw = sync_playwright().start()
                self.browser = self._pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=BROWSER_ARGS)
            w, h = self.viewport
            self.page = self.browser.new_page(viewport={"width": w, "height": h})
            self.page.add_init_script("localStorage.setItem('vueNodesBannerDismissed', 'true')")
            self.page.on("console", lambda m: m.type == "error" and self.console_errors.append(m.text))
            self.page.goto(self.url, wait_until="networkidle", timeout=120_000)
            self.page.wait_for_function("window.app && window.app.graph && window.LiteGraph", timeout=120_000)
            self.page.evaluate("() => app.extensionManager.command.execute('Workspace.ToggleFocusMode')")
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc):
        if self._pw is None:                # a shared browser: only this page
            if self.page is not None:
                self.page.close()
            return
        if self.browser is not None:
            self.browser.close()
        self._pw.stop()

    def load(self, workflow, name):
        """Load a UI-format workflow; returns {missing, errored, loaded, toasts, boxes, prompt}."""
        return self.page.evaluate(LOAD_JS, [workflow, name])

    def screenshot(self, path, margin=24):
        """Fit the graph to the window and save a PNG of the region the nodes cover."""
        self.page.evaluate("() => app.extensionManager.command.execute('Comfy.Canvas.FitView')")
        self.page.wait_for_timeout(400)
        x0, y0, x1, y1 = self.page.evaluate("""() => {
          const {scale, offset} = app.canvas.ds, th = LiteGraph.NODE_TITLE_HEIGHT, b = [1e9, 1e9, -1e9, -1e9];
          for (const n of app.graph._nodes) {
            b[0] = Math.min(b[0], n.pos[0]); b[1] = Math.min(b[1], n.pos[1] - th);
            b[2] = Math.max(b[2], n.pos[0] + n.size[0]); b[3] = Math.max(b[3], n.pos[1] + n.size[1]);
          }
          return b.map((v, i) => (v + offset[i % 2]) * scale);
        }""")
        w, h = self.viewport
        x0, y0 = max(0, x0 - margin), max(0, y0 - margin)
        x1, y1 = min(w, x1 + margin), min(h, y1 + margin)
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        clip = {"x": x0, "y": y0, "width": x1 - x0, "height": y1 - y0} if x1 > x0 and y1 > y0 else None
        self.page.screenshot(path=str(path), animations="disabled", clip=clip)
        return Path(path)


def make_thumbnail(png, jpg, size=(640, 360)):
    from PIL import Image

    with Image.open(png) as im:
        im = im.convert("RGB")
        im.thumbnail(size, Image.LANCZOS)
        im.save(jpg, "JPEG", quality=85, optimize=True)
    return Path(jpg)


def main():
    why = unavailable()
    if why:
        sys.exit(f"thumbnails: {why}")
    import tempfile

    shots = comfy_env.OUTPUT / "frontend" / "bundled"
    paths = sorted(EXAMPLES.glob("*.json"))
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="sleight-models-") as tmp:
        models = models_with(tmp, [m for p in paths for m in workflow_models(json.loads(p.read_text()))])
        with comfy_server.ComfyServer(log_path=shots / "server.log", models_dir=models) as server, \
                Frontend(server.url) as fe:
            for path in paths:
                r = fe.load(json.loads(path.read_text()), path.stem)
                if r["missing"] or r["errored"] or not r["loaded"]:
                    sys.exit(f"thumbnails: {path.name} does not load cleanly: {r}")
                jpg = make_thumbnail(fe.screenshot(shots / f"{path.stem}.png"), path.with_suffix(".jpg"))
                print(f"wrote {jpg.relative_to(comfy_env.ROOT)}")
    print(f"done in {time.monotonic() - t0:.1f}s")


if __name__ == "__main__":
    main()
