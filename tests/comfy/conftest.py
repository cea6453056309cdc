"""In-process ComfyUI on CPU with the tiny real-architecture models."""
from pathlib import Path

import pytest

import comfy_env

comfy_env.bootstrap()

import tiny_models  # noqa: E402  (needs ComfyUI on the path)
import tinyrun  # noqa: E402

HERE = Path(__file__).resolve().parent
LARGE_FILES = 2 ** 29     # bytes on disk: SDXL's and Flux's tiny models (full-size text encoders, wide blocks)


def _large(name):
    """A tiny model that takes most of tinyrun's budget: tests parametrized over models by a `name` argument run
    grouped by such a model within their module, so it is loaded once per module instead of once per test."""
    spec = tiny_models.MODELS.get(name)
    files = [comfy_env.MODELS / rel for rel in spec.files.values()] if spec else []
    return sum(f.stat().st_size for f in files if f.is_file()) > LARGE_FILES


def _here(item):
    return item is not None and HERE in Path(str(item.fspath)).resolve().parents


def pytest_collection_modifyitems(items):
    for module in {item.module for item in items if _here(item)}:
        slots = [i for i, item in enumerate(items) if item.module is module]
        names = [getattr(getattr(items[i], "callspec", None), "params", {}).get("name") for i in slots]
        large = sorted({n for n in names if isinstance(n, str) and _large(n)})
        rank = {n: 1 + large.index(n) for n in large}
        ordered = [items[i] for _, i in sorted(zip(names, slots), key=lambda p: rank.get(p[0], 0))]   # stable
        for i, item in zip(slots, ordered):
            items[i] = item


def pytest_runtest_teardown(item, nextitem):
    # at the end of each module the shared models go: a module's own peak (HD-Painter's gradients on the tiny SDXL,
    # the tiny-model checks) then never adds to the models the modules before it kept; and the tests after these
    # (a server, the frontend) get the memory back
    if _here(item) and (nextitem is None or nextitem.module is not item.module):
        tinyrun.unload_all()


@pytest.fixture(scope="session", name="tiny_models")
def tiny_models_dir():
    tiny_models.ensure_models()
    return comfy_env.MODELS
