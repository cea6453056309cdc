"""The pack as ComfyUI's V3 loader sees it."""
import asyncio
import re

import pytest

import sleight
from sleight.nodes import NODES, _compat


def test_entrypoint_lists_every_node_with_valid_schema():
    ext = asyncio.run(sleight.comfy_entrypoint())
    nodes = asyncio.run(ext.get_node_list())
    assert [n.__name__ for n in nodes] == [n.__name__ for n in NODES]
    for node in nodes:
        schema = node.GET_SCHEMA()
        assert schema.node_id.startswith("Sleight") and schema.node_id == node.__name__
        assert schema.display_name.startswith("Sleight · ") and schema.category.startswith("sleight/")
        assert schema.description
        for i in schema.inputs:
            assert i.tooltip, f"{schema.node_id}.{i.id} has no tooltip"


def test_web_docs_exist_for_every_node():
    from comfy_env import ROOT

    for node in NODES:
        doc = ROOT / "web" / "docs" / f"{node.__name__}.md"
        assert doc.exists() and doc.read_text().startswith("# "), doc


def test_compat_drops_fields_this_comfyui_lacks():
    s = _compat.schema(node_id="SleightX", display_name="x", category="sleight/x", inputs=[], outputs=[],
                       search_aliases=["y"], essentials_category="z")
    assert s.node_id == "SleightX"
    f = _compat.inp(_compat.io.Float, "w", default=1.0, tooltip="t", advanced=True, raw_link=True)
    assert f.id == "w" and f.default == 1.0
    with pytest.raises(TypeError):
        _compat.io.Float.Input("w", advanced=True)      # what the wrapper protects us from on 0.3.75
    kept = _compat.inp(_compat.io.Float, "w", advanced=True)
    if "advanced" in _compat.input_fields(_compat.io.Float):     # newer ComfyUI: used
        assert kept.advanced is True
    else:                                                        # 0.3.75: dropped
        assert not hasattr(kept, "advanced")
    with pytest.raises(TypeError, match="toltip"):     # a typo is an error, never silently dropped
        _compat.inp(_compat.io.Float, "w", toltip="t")
    with pytest.raises(TypeError, match="serch_aliases"):
        _compat.schema(node_id="SleightX", serch_aliases=["y"])


def test_every_float_input_rejects_nan_and_inf_naming_the_node():
    """ComfyUI's validation lets NaN through (every comparison with it is false) and a linked FLOAT skips the range:
    SleightNode checks every FLOAT input before execute runs, also in the locked class clone ComfyUI executes."""
    from comfy_api.internal import make_locked_method_func

    for node in NODES:
        schema = node.GET_SCHEMA()
        floats = [i.id for i in schema.inputs if isinstance(i, _compat.io.Float.Input)]
        assert getattr(node.execute.__func__, "sleight_checks_floats", False), node.__name__
        run = make_locked_method_func(node, "EXECUTE_NORMALIZED", node.PREPARE_CLASS_CLONE({}))
        for name in floats:
            for bad in (float("nan"), float("inf"), float("-inf")):
                inputs = {i.id: None for i in schema.inputs} | {name: bad}
                with pytest.raises(ValueError, match=f"^{re.escape(schema.display_name)}: {name} is {bad}, give a "
                                                     "finite number between"):
                    run(**inputs)
