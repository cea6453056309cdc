"""What Sleight uses of ComfyUI, read from the code, for the compatibility test and docs/COMPATIBILITY.md.

    .venv/bin/python scripts/compat_scan.py       # rewrite the generated table in docs/COMPATIBILITY.md

An AST scan of the pack (nodes/, samplers/, attention_patches/, __init__.py), the HTTP client
(scripts/comfy_server.py ROUTES) and the frontend extension (web/js) finds:
- symbol: a name reached from a ComfyUI module (`comfy.samplers.calc_cond_batch`, `io.Schema`, `folder_paths.x`)
- patcher: a ModelPatcher method the pack calls (set_model_*, *_with_key, get_wrappers, get_model_object, ...)
- wrapper / callback: a WrappersMP / CallbacksMP member
- transformer_options / model_options: a string key read or written there
- route: an HTTP route the client or web/js calls, or that the pack registers
tests/comfy/test_compat_scan.py checks every entry on the running ComfyUI and that the table here is current.
"""
import ast
import re
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import comfy_env  # noqa: E402
import comfy_server  # noqa: E402
import doc_blocks  # noqa: E402

PACK_DIRS = ("nodes", "samplers", "attention_patches")
PATCHER_CALL = re.compile(r"^(set_model_\w+|\w+_with_key|get_wrappers|get_callbacks|get_model_object|"
                          r"add_object_patch|model_patches_to|get_additional_models\w*)$")
WRAPPER_HOLDERS = {"WrappersMP": "wrapper", "WRAPPERS": "wrapper", "CallbacksMP": "callback", "CALLBACKS": "callback"}
TRANSFORMER_OPTIONS = {"to", "transformer_options", "extra_options"}
JS_ROUTE = re.compile(r"fetchApi\(\s*[`'\"](/[A-Za-z0-9_/]+)")
ROUTE_DECORATOR = re.compile(r"""routes\.(get|post|put|delete|patch)\(\s*['"]([^'"]+)['"]""")
DOC = comfy_env.ROOT / "docs" / "COMPATIBILITY.md"

# What was checked by reading newer ComfyUI: "0.38.1" = read in Comfy-Org/ComfyUI 0.38.1 for this change;
# "notes" = read up to 783545f6 (0.33.0+) in ../shared/design/comfyui-internals.md. Unlisted entries: "not read".
_READ = "present, same use (0.38.1)"
_NOTES = "present, same use (notes, 0.33+)"
READ_NEWER = {
    **{f"patcher {m}": _READ for m in ("add_wrapper_with_key", "get_model_object", "get_wrappers",
                                       "remove_wrappers_with_key", "set_model_attn1_output_patch",
                                       "set_model_attn2_patch", "set_model_patch",
                                       "set_model_sampler_pre_cfg_function")},
    **{f"wrapper {w}": _NOTES for w in ("APPLY_MODEL", "CALC_COND_BATCH", "OUTER_SAMPLE", "PREDICT_NOISE",
                                        "SAMPLER_SAMPLE")},
    **{f"transformer_options {k}": _NOTES for k in ("activations_shape", "block", "block_index", "block_type",
                                                    "cond_or_uncond", "optimized_attention_override",
                                                    "sample_sigmas", "uuids")},
    **{f"comfy_api.latest.io.{t}": _READ for t in (
        "Boolean", "Combo", "Float", "Int", "String", "String.Output", "Custom", "Image", "Image.Output", "Mask",
        "Mask.Output", "Latent", "Latent.Output", "Conditioning", "Conditioning.Output", "Sampler", "Sampler.Output",
        "Sigmas", "Noise.Output", "Clip", "Vae", "Model", "Model.Output", "ClipVision")},
    **{f"route {r}": _READ for r in ("POST /prompt", "GET /history", "GET /history/{}", "GET /object_info", "GET /object_info/{}",
                                     "GET /ws", "GET /view", "GET /system_stats", "POST /interrupt")},
    "transformer_options img_slice": "newer only: newer ComfyUI's HunyuanVideo forward writes where the image tokens "
                                     "sit (read); without it the adapter takes 0.3.75's [ref | image | text]",
    "route GET /api/jobs": "newer only (server.py, comfy_execution/jobs.py, 0.38.1); the client prefers it",
    "route GET /api/jobs/{}": "newer only (0.38.1); the job carries outputs and execution_status",
    "route GET /sleight/layers": "registered on PromptServer.instance.routes, which 0.38.1 also serves under /api",
    "comfy.samplers.KSAMPLER": "same fields and sample() (0.38.1)",
    "comfy.samplers.KSamplerX0Inpaint": "same constructor and call (0.38.1)",
    "comfy.samplers.Sampler": "same max_denoise (0.38.1)",
    "comfy.samplers._calc_cond_batch": "same signature; hands over to a multi-GPU variant when set up (0.38.1)",
    "comfy.samplers.calc_cond_batch": _READ,
    "comfy.samplers.sample": _NOTES,
    "comfy.samplers.KSampler.SAMPLERS": "more samplers (0.38.1)",
    "comfy.patcher_extension.WrappersMP": _NOTES,
    "comfy.patcher_extension.WrappersMP.APPLY_MODEL": _NOTES,
    "comfy.patcher_extension.WrappersMP.OUTER_SAMPLE": _NOTES,
    "comfy_api.latest.io.Schema": "more optional fields; nodes/_compat.py passes the newer ones where known",
    "model_options transformer_options": _READ,
    "model_options sampler_pre_cfg_function": _READ,
}


@dataclass(frozen=True, order=True)
class Use:
    kind: str
    name: str
    where: str          # first file (relative) that uses it

    @property
    def key(self):
        return self.name if self.kind == "symbol" else f"{self.kind} {self.name}"


def comfy_modules(comfy_dir=None):
    """Top-level module names of the ComfyUI checkout (comfy, comfy_api, folder_paths, server, ...)."""
    comfy_dir = Path(comfy_dir or comfy_env.COMFY)
    names = {p.stem for p in comfy_dir.glob("*.py")} | {p.name for p in comfy_dir.iterdir()
                                                        if p.is_dir() and any(p.glob("*.py"))}
    return names - {"main", "custom_nodes", "tests", "tests-unit", "script_examples"}


def pack_files():
    root = comfy_env.ROOT
    return [root / "__init__.py"] + sorted(p for d in PACK_DIRS for p in (root / d).rglob("*.py"))


def _chain(node):
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        return [node.id] + parts[::-1]
    return None


def _const_str(node):
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def _receiver(node):
    """The last name of the expression a key is read from (`model.model_options` -> model_options)."""
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Name):
        return node.id
    return None


class _Scan(ast.NodeVisitor):
    """Collects the uses in one file. `reexports(level, module, path)` gives the ComfyUI aliases another pack
    module binds (so `from ._compat import io` in a node module resolves to comfy_api.latest.io)."""

    def __init__(self, roots, path, reexports=None):
        self.roots, self.path, self.reexports = roots, path, reexports
        self.aliases, self.found = {}, set()

    def add(self, kind, name):
        self.found.add((kind, name))

    def visit_Import(self, node):
        for a in node.names:
            if a.name.split(".")[0] in self.roots:
                if a.asname:
                    self.aliases[a.asname] = a.name
                else:
                    self.aliases[a.name.split(".")[0]] = a.name.split(".")[0]

    def visit_ImportFrom(self, node):
        if node.level == 0 and node.module and node.module.split(".")[0] in self.roots:
            for a in node.names:
                self.aliases[a.asname or a.name] = f"{node.module}.{a.name}"
                self.add("symbol", f"{node.module}.{a.name}")
        elif node.level > 0 and self.reexports is not None:
            theirs = self.reexports(node.level, node.module, self.path)
            for a in node.names:
                if a.name in theirs:
                    self.aliases[a.asname or a.name] = theirs[a.name]

    def visit_Attribute(self, node):
        chain = _chain(node)
        if chain and chain[0] in self.aliases:
            self.add("symbol", ".".join([self.aliases[chain[0]]] + chain[1:]))
            return                                  # the longest chain only
        holder = _receiver(node.value)
        if holder in WRAPPER_HOLDERS and node.attr.isupper():
            self.add(WRAPPER_HOLDERS[holder], node.attr)
        self.generic_visit(node)

    def visit_Call(self, node):
        func = node.func
        if isinstance(func, ast.Attribute):
            chain = _chain(func)
            if PATCHER_CALL.match(func.attr) and not (chain and chain[0] in self.aliases):
                self.add("patcher", func.attr)
            if func.attr in ("get", "setdefault", "pop") and node.args:
                self._key(func.value, node.args[0])
        self.generic_visit(node)

    def visit_Subscript(self, node):
        self._key(node.value, node.slice)
        self.generic_visit(node)

    def visit_Compare(self, node):
        if len(node.ops) == 1 and isinstance(node.ops[0], (ast.In, ast.NotIn)):
            self._key(node.comparators[0], node.left)
        self.generic_visit(node)

    def _key(self, receiver, key):
        key, name = _const_str(key), _receiver(receiver)
        if key is None or name is None:
            return
        if name in TRANSFORMER_OPTIONS:
            self.add("transformer_options", key)
        elif name.endswith("model_options"):
            self.add("model_options", key)


def scan(roots=None):
    """Every use, sorted; `where` is the first file using it."""
    roots = roots or comfy_modules()
    files = pack_files()
    trees = {p: ast.parse(p.read_text(), str(p)) for p in files}
    bound = {}
    for path, tree in trees.items():              # the ComfyUI names each pack module binds at its top level
        s = _Scan(roots, path)
        for stmt in tree.body:
            if isinstance(stmt, (ast.Import, ast.ImportFrom)):
                s.visit(stmt)
        bound[path] = s.aliases

    def reexports(level, module, path):
        base = path.parent
        for _ in range(level - 1):
            base = base.parent
        target = base.joinpath(*(module or "").split(".")) if module else base
        return bound.get(target.with_suffix(".py"), bound.get(target / "__init__.py", {}))

    first = {}
    for path in files:
        rel = str(path.relative_to(comfy_env.ROOT))
        s = _Scan(roots, path, reexports)
        s.visit(trees[path])
        for kind, name in s.found:
            first.setdefault((kind, name), rel)
    for name, (method, path) in comfy_server.ROUTES.items():
        first.setdefault(("route", f"{method} {_template(path)}"), "scripts/comfy_server.py")
    for js in sorted((comfy_env.ROOT / "web").rglob("*.js")):
        for path in JS_ROUTE.findall(js.read_text()):
            first.setdefault(("route", f"GET {path}"), str(js.relative_to(comfy_env.ROOT)))
    return sorted(Use(kind, name, where) for (kind, name), where in first.items())


def resolve(name):
    """The object a dotted name reaches, importing the longest module prefix (AttributeError if gone)."""
    import importlib

    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
            break
        except ImportError:
            continue
    else:
        raise ImportError(f"no module in {name}")
    for part in parts[i:]:
        obj = getattr(obj, part)
    return obj


def string_literals(comfy_dir=None):
    """Every quoted identifier-like string in ComfyUI's Python code (where option keys are read and written)."""
    comfy_dir = Path(comfy_dir or comfy_env.COMFY)
    found = set()
    for d in ("comfy", "comfy_extras", "comfy_api", "comfy_execution"):
        for path in (comfy_dir / d).rglob("*.py"):
            found.update(re.findall(r"""["']([A-Za-z_][A-Za-z0-9_]*)["']""", path.read_text(errors="replace")))
    return found


def _template(path):
    return re.sub(r"\{[^}]*\}", "{}", path)


def declared_routes(comfy_dir=None):
    """{"GET /path/{}"} the ComfyUI checkout declares with @routes.<method>("...") (server and app modules)."""
    comfy_dir = Path(comfy_dir or comfy_env.COMFY)
    out = set()
    for path in [comfy_dir / "server.py", *comfy_dir.glob("app/**/*.py"), *comfy_dir.glob("api_server/**/*.py")]:
        for method, route in ROUTE_DECORATOR.findall(path.read_text(errors="replace")):
            out.add(f"{method.upper()} {_template(route)}")
    return out


def table(uses):
    lines = ["| kind | used | first used in | 0.3.75 | newer ComfyUI |", "|---|---|---|---|---|"]
    for u in uses:
        newer = READ_NEWER.get(u.key, "not read")
        ran = "newer only" if (u.kind, u.name) in NEWER_ONLY or (u.kind == "route" and u.name in NEWER_ROUTE_KEYS) \
            else "run"
        lines.append(f"| {u.kind} | `{u.name}` | {u.where} | {ran} | {newer} |")
    return "\n".join(lines)


NEWER_ONLY = {("transformer_options", "img_slice")}    # keys only newer ComfyUI writes (the pack reads them if present)
NEWER_ROUTE_KEYS = {f"{comfy_server.ROUTES[n][0]} {_template(comfy_server.ROUTES[n][1])}"
                    for n in comfy_server.NEWER_ROUTES}


def main():
    uses = scan()
    doc_blocks.write_block(DOC, "compat-table", "What Sleight uses of ComfyUI", table(uses))
    print(f"{len(uses)} uses written to {DOC.relative_to(comfy_env.ROOT)}")


if __name__ == "__main__":
    main()
