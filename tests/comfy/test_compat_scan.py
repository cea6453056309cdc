"""Everything the pack uses of ComfyUI, found by scanning the code (scripts/compat_scan.py), exists in the running
ComfyUI: symbols resolve, ModelPatcher methods and WrappersMP / CallbacksMP members exist, transformer_options and
model_options keys appear in ComfyUI's own code, routes are declared by its server (or registered by the pack).
The table in docs/COMPATIBILITY.md is the same scan, so it cannot go stale."""
import re

import pytest

import compat_scan
import comfy_server

USES = compat_scan.scan()


def of(kind):
    return [u.name for u in USES if u.kind == kind]


def test_the_scan_finds_what_the_pack_is_known_to_use():
    names = {u.key for u in USES}
    assert {"comfy.samplers.calc_cond_batch", "comfy_api.latest.io.Schema", "wrapper OUTER_SAMPLE",
            "patcher add_wrapper_with_key", "transformer_options cond_or_uncond", "model_options transformer_options",
            "route POST /prompt", "route GET /sleight/layers"} <= names


@pytest.mark.parametrize("name", of("symbol"))
def test_symbol_exists(name):
    compat_scan.resolve(name)


def test_model_patcher_methods_exist():
    import comfy.model_patcher

    missing = [m for m in of("patcher") if not callable(getattr(comfy.model_patcher.ModelPatcher, m, None))]
    assert not missing, f"ModelPatcher lacks {missing}"


def test_wrapper_and_callback_types_exist():
    import comfy.patcher_extension as pe

    assert of("wrapper") and not [w for w in of("wrapper") if not hasattr(pe.WrappersMP, w)]
    assert not [c for c in of("callback") if not hasattr(pe.CallbacksMP, c)]


def test_option_keys_are_comfyui_keys():
    literals = compat_scan.string_literals()
    for kind in ("transformer_options", "model_options"):
        missing = [k for k in of(kind) if k not in literals and (kind, k) not in compat_scan.NEWER_ONLY]
        assert not missing, f"{kind} keys that ComfyUI's code never reads or writes: {missing}"


def test_routes_are_declared():
    from sleight.nodes import block_picker

    declared = compat_scan.declared_routes() | {f"GET {block_picker.ROUTE}"}
    missing = [r for r in of("route") if r not in declared and r not in compat_scan.NEWER_ROUTE_KEYS]
    assert not missing, f"routes this ComfyUI does not declare: {missing}"
    assert len(comfy_server.NEWER_ROUTES) == len(compat_scan.NEWER_ROUTE_KEYS) > 0


def test_compatibility_doc_table_is_current():
    doc = compat_scan.DOC.read_text()
    block = re.search(r"<!-- compat-table:start -->\n(.*?)\n<!-- compat-table:end -->", doc, re.S)
    assert block, f"{compat_scan.DOC} has no generated table: run scripts/compat_scan.py"
    assert block.group(1) == compat_scan.table(USES), "docs/COMPATIBILITY.md is stale: run scripts/compat_scan.py"
