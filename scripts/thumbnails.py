"""Drive the real ComfyUI frontend in headless Chromium; regenerate the template thumbnails from it.

    .venv/bin/python scripts/thumbnails.py     # example_workflows/<stem>.jpg from a screenshot of each workflow

`Frontend` is also what tests/frontend uses: it loads a UI workflow with `app.loadGraphData` and reports what
the page saw (unknown node types, nodes with errors, new error toasts) and `app.graphToPrompt()`'s API JSON.
"""
import json
import os
import sys
import time
from pathlib import Path

import requests

import comfy_env
import comfy_server

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
  const toasts = () => [...document.querySelectorAll('.p-toast-message')].map(t => t.innerText);
  const before = toasts().length;
  const known = new Set(Object.keys(LiteGraph.registered_node_types));
  const missing = [...new Set((wf.nodes || []).map(n => n.type).filter(t => !known.has(t)))];
  await app.loadGraphData(wf, true, true, name);
  await new Promise(r => setTimeout(r, 300));
  const errored = app.graph._nodes.filter(n => n.has_errors).map(n => `${n.id}:${n.type}`);
  const {output} = await app.graphToPrompt();
  return {missing, errored, loaded: app.graph._nodes.length, toasts: toasts().slice(before),
          prompt: JSON.parse(JSON.stringify(output))};
}"""


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
    def __init__(self, url, viewport=(1600, 900)):
        self.url, self.viewport = url.rstrip("/"), viewport
        self.console_errors = []

    def __enter__(self):
        from playwright.sync_api import sync_playwright

        for key, value in SETTINGS.items():
            requests.post(comfy_server.route(self.url, "settings", id=key), json=value, timeout=30).raise_for_status()
        self._pw = sync_playwright().start()
        try:
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
        if getattr(self, "browser", None):
            self.browser.close()
        self._pw.stop()

    def load(self, workflow, name):
        """Load a UI-format workflow; returns {missing, errored, loaded, toasts, prompt}."""
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
    from comfy_server import ComfyServer

    shots = comfy_env.OUTPUT / "frontend"
    t0 = time.monotonic()
    with ComfyServer(log_path=shots / "server.log") as server, Frontend(server.url) as fe:
        for path in sorted(EXAMPLES.glob("*.json")):
            r = fe.load(json.loads(path.read_text()), path.stem)
            if r["missing"] or r["errored"] or not r["loaded"]:
                sys.exit(f"thumbnails: {path.name} does not load cleanly: {r}")
            jpg = make_thumbnail(fe.screenshot(shots / f"{path.stem}.png"), path.with_suffix(".jpg"))
            print(f"wrote {jpg.relative_to(comfy_env.ROOT)}")
    print(f"done in {time.monotonic() - t0:.1f}s")


if __name__ == "__main__":
    main()
