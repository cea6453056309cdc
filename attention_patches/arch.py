"""Per-architecture facts the router needs: token layout, patch size, block ids, and the list of attention layers.

Block ids (what users write in layer specs and what `SleightInspectAttention` prints):
  UNet (SD1.5, SDXL)  `input.4.1`  = ComfyUI block ("input", 4), transformer block 1 inside it; also middle.0.j, output.i.j
  SD3 (MMDiT)         `joint.10`   = joint block 10 (SD3.5's extra image-only attention is `joint.10` of kind self)
  Flux                `double.7`, `single.12`
Kinds: `self` (image tokens attend to image tokens), `cross` (image to text, UNet), `joint` (text+image tokens, DiTs).
"""
import math
from dataclasses import dataclass

UNSUPPORTED_HINT = "Sleight supports SD1.5 (incl. inpainting), SDXL, SD3/3.5 and Flux (dev, schnell, Fill)"


@dataclass(frozen=True)
class Arch:
    name: str            # "unet" | "mmdit" | "flux"
    family: str          # human label: "SD1.5", "SDXL", "SD3", "Flux", …
    patch: int           # latent pixels per image token side
    text_first: bool     # joint attention token order [txt | img] (SD3, Flux 0.3.75)

    def image_grid(self, latent_hw):
        h, w = latent_hw
        return math.ceil(h / self.patch), math.ceil(w / self.patch)


@dataclass(frozen=True)
class Layer:
    block: str
    kind: str
    heads: int
    head_dim: int
    image_tokens: int    # query image tokens at the given resolution
    grid: tuple          # (h, w) of the image tokens


def _parts(model):
    """(BaseModel, diffusion_model) of a ModelPatcher or of a BaseModel."""
    base = getattr(model, "model", model)
    return base, base.diffusion_model


def detect(model, who: str = "Sleight") -> Arch:
    """The Arch of a MODEL (ModelPatcher or BaseModel), or a ValueError naming what is supported."""
    base, dm = _parts(model)
    kind = type(dm).__name__
    family = type(base).__name__
    family = {"BaseModel": "SD1.5"}.get(family, family)
    if kind == "UNetModel":
        return Arch("unet", family, 1, False)
    if kind in ("OpenAISignatureMMDITWrapper", "MMDiT"):
        return Arch("mmdit", family, dm.patch_size, True)
    if kind == "Flux" and type(dm).__module__.startswith("comfy.ldm.flux"):
        return Arch("flux", family, dm.patch_size, True)
    raise ValueError(f"{who}: this model ({family}, {kind}) is not supported. {UNSUPPORTED_HINT}.")


def _unet_transformers(module):
    return [m for m in module if type(m).__name__ == "SpatialTransformer"]


def _unet_layers(dm, lh, lw):
    """Walk the UNet as its forward does, tracking the spatial size at every SpatialTransformer."""
    layers = []

    def add(prefix, st, h, w):
        for j, tb in enumerate(st.transformer_blocks):
            for kind, attn in (("self", tb.attn1), ("cross", tb.attn2)):
                if attn is None:
                    continue
                layers.append(Layer(f"{prefix}.{j}", kind, attn.heads, attn.dim_head, h * w, (h, w)))

    h, w = lh, lw
    skips = []
    for i, block in enumerate(dm.input_blocks):
        for m in block:
            if type(m).__name__ == "Downsample":
                h, w = (h + 1) // 2, (w + 1) // 2
        for st in _unet_transformers(block):
            add(f"input.{i}", st, h, w)
        skips.append((h, w))
    for st in _unet_transformers(dm.middle_block if dm.middle_block is not None else []):
        add("middle.0", st, h, w)
    for i, block in enumerate(dm.output_blocks):
        h, w = skips.pop()
        for st in _unet_transformers(block):
            add(f"output.{i}", st, h, w)
    return layers


def list_layers(model_patcher, width: int, height: int):
    """Every attention layer in forward order, with heads and image tokens at width×height pixels."""
    arch = detect(model_patcher)
    base, dm = _parts(model_patcher)
    down = getattr(base.latent_format, "spacial_downscale_ratio", 8)
    lh, lw = max(1, math.ceil(height / down)), max(1, math.ceil(width / down))
    if arch.name == "unet":
        return _unet_layers(dm, lh, lw)
    gh, gw = arch.image_grid((lh, lw))
    layers = []
    if arch.name == "mmdit":
        for i, jb in enumerate(dm.joint_blocks):
            attn = jb.x_block.attn
            layers.append(Layer(f"joint.{i}", "joint", attn.num_heads, attn.head_dim, gh * gw, (gh, gw)))
            if getattr(jb.x_block, "x_block_self_attn", False):
                a2 = jb.x_block.attn2
                layers.append(Layer(f"joint.{i}", "self", a2.num_heads, a2.head_dim, gh * gw, (gh, gw)))
    else:
        heads = dm.num_heads
        hd = dm.hidden_size // heads
        for prefix, blocks in (("double", dm.double_blocks), ("single", dm.single_blocks)):
            for i in range(len(blocks)):
                layers.append(Layer(f"{prefix}.{i}", "joint", heads, hd, gh * gw, (gh, gw)))
    return layers


def format_layers(model_patcher, width: int, height: int) -> str:
    arch = detect(model_patcher)
    layers = list_layers(model_patcher, width, height)
    lines = [f"{arch.family} ({arch.name}) at {width}x{height}: {len(layers)} attention layers",
             f"{'block':<14}{'kind':<7}{'heads':>6}{'dim':>5}  image tokens"]
    for layer in layers:
        lines.append(f"{layer.block:<14}{layer.kind:<7}{layer.heads:>6}{layer.head_dim:>5}  "
                     f"{layer.image_tokens} ({layer.grid[0]}x{layer.grid[1]})")
    return "\n".join(lines)
