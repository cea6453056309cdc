"""Per-layer prompt routing (Staniszewski et al., ICLR 2025): a second prompt reaches the image only through
chosen attention layers, inside a window of the schedule.

The family adapter says how (`route_by`): "context" families (UNet cross-attention) swap the context of the
chosen blocks (attention_patches/textswap.py, no extra cost); "cross_kv" families (Wan) swap the chosen
cross-attention layers' K/V for the routed prompt's, projected once per run (textswap.CrossKVRoute, no extra
forward); "text_kv" families (joint-attention DiTs) get the routed prompt's text K/V from a side pass of it run in
lockstep as extra rows of the main forward (attention_patches/textkv.py + trajectory.add_batched_side).
"""
import torch

from ..attention_patches import textkv, textswap
from ..attention_patches.core import families, layerspec, router, schedule
from . import trajectory

AUTO = "paper text layers (auto)"
CUSTOM = "custom"
LAYER_CHOICES = [AUTO, *layerspec.PRESETS, CUSTOM]
ROWS = {"cond": ("cond",), "cond and uncond": ("cond", "uncond")}


def routed_embedding(conditioning, who: str = "Sleight") -> torch.Tensor:
    """The token embedding (B, L, C) of a CONDITIONING holding one prompt."""
    if not conditioning:
        raise ValueError(f"{who}: the routed conditioning is empty; connect a CLIP Text Encode output.")
    if len(conditioning) != 1:
        raise ValueError(
            f"{who}: the routed conditioning holds {len(conditioning)} entries (from Conditioning Combine, "
            f"timestep ranges or areas); route one prompt. To route a longer prompt, use Conditioning Concat.")
    emb = conditioning[0][0]
    if not torch.is_tensor(emb) or emb.ndim != 3:
        raise ValueError(f"{who}: the routed conditioning is not a text embedding (got {type(emb).__name__}).")
    return emb


def text_layers(model):
    """(block, kind) of every attention layer in forward order (block ids do not depend on resolution)."""
    return [(layer.block, layer.kind) for layer in families.layers(model, 1024, 1024)]


def resolve_blocks(model, choice: str, custom: str = "", who: str = "Sleight"):
    """Block ids for the node's layer choice: a preset, the family's paper preset (auto), or a custom spec."""
    family = families.detect(model, who)
    layers = text_layers(model)
    if choice == CUSTOM:
        return layerspec.select(layers, custom, family.label, layerspec.TEXT_KINDS, who)
    if choice == AUTO:
        if not family.text_presets:
            raise layerspec.LayerSpecError(
                f"{who}: no paper text layers are known for {family.label}; papers exist for "
                f"{', '.join(p.label for p in layerspec.PRESETS.values())}. Set layers to custom and write them "
                f"(find them with Sleight · Find text layers). Valid block ids: "
                f"{layerspec.describe_valid(layerspec.block_ids(layers, layerspec.TEXT_KINDS))}.")
        return layerspec.preset_blocks(family.text_presets[0].name, layers, family.label, who)
    if choice in layerspec.PRESETS:
        return layerspec.preset_blocks(choice, layers, family.label, who)
    raise layerspec.LayerSpecError(f"{who}: unknown layer choice {choice!r}; choose one of {', '.join(LAYER_CHOICES)}.")


def _same_prompt(conditioning, guider, roles) -> bool:
    """Routing a prompt into rows that already use it changes nothing: skip the side pass (exactly baseline)."""
    keys = {"cond": "positive", "uncond": "negative"}
    for role in roles:
        entries = guider.original_conds.get(keys.get(role, role), [])
        if len(entries) != len(conditioning):
            return False
        for (emb, extra), c in zip(conditioning, entries):
            if not torch.equal(emb, c["cross_attn"]):
                return False
            pooled, theirs = extra.get("pooled_output"), c.get("pooled_output")
            if (pooled is None) != (theirs is None) or (pooled is not None and not torch.equal(pooled, theirs)):
                return False
    return True


def install_text_kv(model, conditioning, blocks, window: schedule.Window, roles=("cond",),
                    who="Sleight · Route prompt"):
    """Route `conditioning`'s text K/V into `blocks` of a DiT clone `model` (owned by the caller)."""
    effect = textkv.TextKVSwap(blocks, window, roles)

    def wanted(run, timestep):
        st = effect.state(run)
        st.cache.clear()
        st.expected = (trajectory.in_window(run.guider, effect.window, timestep)
                       and not _same_prompt(conditioning, run.guider, roles))
        return st.expected

    def missed(run):
        st = effect.state(run)
        was, st.missed = st.missed, False
        return was

    router.install(model, effect, who)
    trajectory.add_batched_side(model, router.ROUTE_ROLE, conditioning, wanted, missed)
    return effect


def route(model, conditioning, blocks, window: schedule.Window, rows=("cond",), who: str = "Sleight · Route prompt"):
    """A clone of `model` in which `conditioning` replaces the prompt in `blocks`, for `rows`, inside `window`."""
    family = families.detect(model, who)
    blocks = list(blocks)
    if not blocks:
        raise layerspec.LayerSpecError(f"{who}: no layers to route into.")
    rows = tuple(rows)
    m = model.clone()
    if family.route_by == "context":
        return textswap.install(m, routed_embedding(conditioning, who), blocks, window, rows, family, who)
    if family.route_by == "cross_kv":
        textswap.install_cross_kv(m, routed_embedding(conditioning, who), blocks, window, rows, family,
                                  lambda run: _same_prompt(conditioning, run.guider, rows), who)
        return m
    install_text_kv(m, conditioning, blocks, window, rows, who)
    return m
