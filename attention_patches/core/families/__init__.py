"""The family registry: which adapter a MODEL belongs to.

`detect(model)` asks every registered adapter, in order, whether the model is one of its family (by the
diffusion model it runs and its model config, never by a class name two families share) and returns that
adapter's instance for the model. A model no adapter claims is refused with the list of what is supported.
Adding a family = one module here with a `Family` subclass, listed in FAMILIES.
"""
from .base import KINDS, TRICKS, Call, Family, Layer, Preset  # noqa: F401  (the interface, for the rest of the pack)
from .chroma import Chroma
from .flux import Flux
from .flux2 import Flux2
from .hidream import HiDream
from .hunyuan_video import HunyuanVideo
from .lumina2 import Lumina2
from .mmdit import MMDiT
from .qwen_image import QwenImage
from .unet import UNet
from .wan import Wan

FAMILIES = (UNet, MMDiT, Flux, Flux2, Chroma, QwenImage, Lumina2, HiDream, Wan, HunyuanVideo)
PRESETS = {p.name: p for family in FAMILIES for p in family.known_presets}   # every paper's text layers
UNSUPPORTED_HINT = "Sleight supports " + ", ".join(f.models for f in FAMILIES)


def _parts(model):
    """(BaseModel, diffusion_model) of a ModelPatcher or of a BaseModel."""
    base = getattr(model, "model", model)
    return base, base.diffusion_model


def detect(model, who: str = "Sleight") -> Family:
    """The family adapter of a MODEL (ModelPatcher or BaseModel), or a ValueError naming what is supported."""
    base, dm = _parts(model)
    for family in FAMILIES:
        if family.matches(base, dm):
            return family.create(base, dm)
    raise ValueError(f"{who}: this model ({type(base).__name__}, {type(dm).__name__}) is not supported. "
                     f"{UNSUPPORTED_HINT}.")


def require(model, trick: str, who: str) -> Family:
    """The family of a MODEL, or a ValueError naming it when `trick` is not meaningful on it (and what to use)."""
    family = detect(model, who)
    family.require(trick, who)
    return family


def refuse_unsupported(model, trick: str, who: str):
    """For tricks that work on any model (sampler-level): refused only where a known family says it is not
    meaningful there."""
    try:
        family = detect(model, who)
    except ValueError:
        return None
    family.require(trick, who)
    return family


def layers(model, width: int, height: int, family: Family = None, frames: int = 1):
    """Every attention layer of a MODEL in forward order, with heads and image tokens at width×height pixels (and
    `frames` frames for a video model)."""
    family = family or detect(model)
    return family.layers(_parts(model)[1], family.latent_size(width, height, frames))


def diffusion_model(model):
    return _parts(model)[1]


def format_layers(model, width: int, height: int) -> str:
    """The table Sleight · Inspect attention layers prints."""
    family = detect(model)
    found = layers(model, width, height, family)
    col = max([14] + [len(layer.block) + 2 for layer in found])      # Z-Image's "context_refiner.1"
    lines = [f"{family.label} ({family.key}) at {width}x{height}: {len(found)} attention layers",
             f"{'block':<{col}}{'kind':<7}{'heads':>6}{'dim':>5}  image tokens"]
    for layer in found:
        lines.append(f"{layer.block:<{col}}{layer.kind:<7}{layer.heads:>6}{layer.head_dim:>5}  "
                     f"{layer.image_tokens} ({'x'.join(map(str, layer.grid))})")
    return "\n".join(lines)
