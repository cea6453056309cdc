"""Where things live, and how to import ComfyUI in-process (tests, model builder, benchmarks).

Import this module before anything from `comfy`: `bootstrap()` puts ComfyUI on sys.path and forces the
CPU / SDPA settings that `python main.py --cpu --use-pytorch-cross-attention` would set.
"""
import importlib.util
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "build"
COMFY = Path(os.environ.get("SLEIGHT_COMFY_DIR", BUILD / "ComfyUI"))
MODELS = Path(os.environ.get("SLEIGHT_MODELS_DIR", BUILD / "models"))
OUTPUT = ROOT / "output"
PACKAGE = "sleight"


def bootstrap(cpu: bool = True):
    """Make `import comfy` work here, CPU-only unless cpu=False, and make the pack importable as `sleight`."""
    if not (COMFY / "main.py").exists():
        raise RuntimeError(f"ComfyUI not found at {COMFY}: run `make setup` first")
    if str(COMFY) not in sys.path:
        sys.path.insert(0, str(COMFY))
    from comfy.cli_args import args  # noqa: E402  (must precede comfy.model_management)

    if cpu:
        args.cpu = True
    args.use_pytorch_cross_attention = True
    import_pack()


def import_pack():
    """Register the repository root as the package `sleight` (ComfyUI imports it under its folder path)."""
    if PACKAGE in sys.modules:
        return sys.modules[PACKAGE]
    spec = importlib.util.spec_from_file_location(
        PACKAGE, ROOT / "__init__.py", submodule_search_locations=[str(ROOT)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[PACKAGE] = module
    spec.loader.exec_module(module)
    return module
