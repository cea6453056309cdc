"""Layer specs and presets against layer lists shaped like the real models (pure, no ComfyUI)."""
import pytest

from sleight.attention_patches.core import layerspec
from sleight.attention_patches.core.layerspec import LayerSpecError


def unet_layers(blocks):
    """[(block id, kind)] in forward order: every transformer block has self- then cross-attention."""
    out = []
    for prefix, depth in blocks:
        for j in range(depth):
            out += [(f"{prefix}.{j}", "self"), (f"{prefix}.{j}", "cross")]
    return out


# Real SDXL base: diffusers down_blocks.1 (4), down_blocks.2 (20), mid (10), up_blocks.0 (30), up_blocks.1 (6).
SDXL = unet_layers([("input.4", 2), ("input.5", 2), ("input.7", 10), ("input.8", 10), ("middle.0", 10),
                    ("output.0", 10), ("output.1", 10), ("output.2", 10), ("output.3", 2), ("output.4", 2),
                    ("output.5", 2)])
SD15 = unet_layers([(f"input.{i}", 1) for i in (1, 2, 4, 5, 7, 8)] + [("middle.0", 1)]
                   + [(f"output.{i}", 1) for i in range(3, 12)])
SD3 = [(f"joint.{i}", "joint") for i in range(24)]
SD35M = [(f"joint.{i}", k) for i in range(24) for k in (("joint", "self") if i < 13 else ("joint",))]
FLUX = [(f"double.{i}", "joint") for i in range(19)] + [(f"single.{i}", "joint") for i in range(38)]


def ids(layers):
    return layerspec.block_ids(layers, layerspec.TEXT_KINDS)


def test_sdxl_paper_preset_counts_cross_attention_in_forward_order():
    assert len(ids(SDXL)) == 70
    assert layerspec.preset_blocks("SDXL text (paper)", SDXL, "SDXL") == ["output.2.1", "output.2.2", "output.2.3"]
    # the preset is derived by counting, not hard-coded: shift the layout and the answer moves with it
    shifted = unet_layers([("input.4", 2), ("input.5", 2), ("input.7", 10), ("input.8", 10), ("middle.0", 10),
                           ("output.0", 10), ("output.1", 11), ("output.2", 9), ("output.3", 2), ("output.4", 2),
                           ("output.5", 2)])
    assert layerspec.preset_blocks("SDXL text (paper)", shifted, "SDXL") == ["output.2.0", "output.2.1", "output.2.2"]


def test_sd3_paper_preset_is_joint_block_10_also_on_sd35_medium():
    assert layerspec.preset_blocks("SD3 text (paper)", SD3, "SD3") == ["joint.10"]
    assert layerspec.preset_blocks("SD3 text (paper)", SD35M, "SD3") == ["joint.10"]


@pytest.mark.parametrize("preset,layers,family", [
    ("SDXL text (paper)", SD15, "SD1.5"),
    ("SDXL text (paper)", SD3, "SD3"),
    ("SDXL text (paper)", unet_layers([("input.4", 2), ("output.2", 5)]), "SDXL"),   # SDXL-detected, other layout
    ("SD3 text (paper)", SDXL, "SDXL"),
    ("SD3 text (paper)", FLUX, "Flux"),
    ("SD3 text (paper)", [(f"joint.{i}", "joint") for i in range(38)], "SD3"),       # SD3.5 large
])
def test_preset_on_the_wrong_architecture_fails_naming_the_valid_ids(preset, layers, family):
    with pytest.raises(LayerSpecError, match="Valid block ids") as e:
        layerspec.preset_blocks(preset, layers, family, "Sleight · T")
    msg = str(e.value)
    assert msg.startswith("Sleight · T:") and preset in msg and family in msg
    assert layerspec.compact(ids(layers)).split(", ")[0] in msg


def test_ranges_prefixes_and_wildcards():
    v = ids(SDXL)
    assert layerspec.resolve("output.2.1-3", v) == ["output.2.1", "output.2.2", "output.2.3"]
    assert layerspec.resolve("output.2", v) == [f"output.2.{j}" for j in range(10)]
    assert layerspec.resolve("output.2.*", v) == layerspec.resolve("output.2", v)
    assert layerspec.resolve("output.*.0", v) == [f"output.{i}.0" for i in range(6)]
    assert layerspec.resolve("output.0-1.9", v) == ["output.0.9", "output.1.9"]
    assert layerspec.resolve("*", v) == v
    assert len(layerspec.resolve("output.*.*", v)) == 36
    assert layerspec.resolve("middle", v) == [f"middle.0.{j}" for j in range(10)]
    f = ids(FLUX)
    assert layerspec.resolve("double.*", f) == [f"double.{i}" for i in range(19)]
    assert layerspec.resolve("single.36-40", f) == ["single.36", "single.37"]   # a range may overhang
    assert layerspec.resolve("joint.10", ids(SD3)) == ["joint.10"]


def test_items_combine_in_forward_order_without_repeats_and_any_separator():
    v = ids(SDXL)
    got = layerspec.resolve("output.2.3, input.4.0;output.2.1-3\n  OUTPUT.2.2 input.4.0", v)
    assert got == ["input.4.0", "output.2.1", "output.2.2", "output.2.3"]


@pytest.mark.parametrize("spec,needle", [
    ("output.2.11", "'output.2.11' matches no layer"),
    ("output.12", "'output.12' matches no layer"),
    ("double.3", "'double.3' matches no layer"),
    ("output.2.1.0", "'output.2.1.0' matches no layer"),
    ("", "the layer spec is empty"),
    (" , ", "the layer spec is empty"),
])
def test_unknown_ids_and_empty_specs_fail_naming_the_valid_ids(spec, needle):
    with pytest.raises(LayerSpecError) as e:
        layerspec.resolve(spec, ids(SDXL), "Sleight · T")
    msg = str(e.value)
    assert needle in msg
    assert "Valid block ids: input.4.0-1, input.5.0-1, input.7.0-9, input.8.0-9, middle.0.0-9, output.0.0-9" in msg
    assert msg.count("output.2.") == (1 if "output.2" not in spec else 2)     # grouped, not 70 ids


@pytest.mark.parametrize("spec", ["output.2.3-1", "output.2.x-3", "output/2", "out put.2.$", "output.2" * 2000])
def test_syntax_errors_name_the_node_and_say_what_to_write(spec):
    with pytest.raises(LayerSpecError, match="^Sleight · T: .*(runs backwards|cannot read|at most 10000)"):
        layerspec.resolve(spec, ids(SDXL), "Sleight · T")


def test_compact_merges_runs_and_round_trips():
    assert layerspec.compact(["output.2.1", "output.2.2", "output.2.3", "joint.4", "joint.5", "double.1"]) == \
        "output.2.1-3, joint.4-5, double.1"
    assert layerspec.compact(["output.2", "output.1"]) == "output.2, output.1"
    assert layerspec.compact(["output.1", "output.2"]) == "output.1-2"
    v = ids(SDXL)
    for pick in (v[55:58], v[:5] + v[40:41] + v[69:], ["output.1.0", "output.2.9"]):
        assert layerspec.resolve(layerspec.compact(pick), v) == pick
    # a compacted block prefix still parses as every transformer block of those blocks
    assert layerspec.resolve(layerspec.compact(["output.1", "output.2"]), v) == [f"output.{i}.{j}" for i in (1, 2) for j in range(10)]
    f = ids(FLUX)
    assert layerspec.compact(f) == "double.0-18, single.0-37"


def test_select_takes_presets_or_specs_and_ignores_self_only_layers():
    assert layerspec.select(SDXL, "SDXL text (paper)", "SDXL") == ["output.2.1", "output.2.2", "output.2.3"]
    assert layerspec.select(SD35M, "joint.*", "SD3") == [f"joint.{i}" for i in range(24)]
    only_self = [("input.1.0", "self"), ("input.1.0", "cross"), ("extra.0", "self")]
    with pytest.raises(LayerSpecError, match="'extra.0' matches no layer"):
        layerspec.select(only_self, "extra.0", "SD1.5")
    assert layerspec.select(only_self, "extra.0", "SD1.5", kinds=None) == ["extra.0"]


def test_long_valid_lists_are_cut():
    many = [f"single.{i}" for i in range(0, 400, 2)]          # no runs to merge
    text = layerspec.describe_valid(many, limit=100)
    assert text.endswith(", …") and len(text) < 110
