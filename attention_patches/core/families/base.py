"""The family adapter interface: everything Sleight knows about one model family, asked by the router, the
effects, the samplers and the nodes, which never test a family's name themselves.

A `Family` subclass is one family (one module in this folder); `detect` (families/__init__.py) builds one
instance per detected model. An instance holds only small, immutable facts (it travels inside
transformer_options, which ComfyUI 0.3.75 deep-copies on every clone), never the model's modules: methods that
need them take the diffusion model `dm` as an argument.

Kinds of attention calls: `self` (image tokens attend to image tokens), `cross` (image queries, text keys:
UNet attn2, Wan), `joint` (text and image tokens in one sequence: DiTs), `text` (text tokens only: the text
refiners of Lumina2 / Z-Image and HunyuanVideo; no trick acts on them, Inspect lists them), `vision` (image queries,
keys from a conditioning image's vision-encoder tokens: Wan 2.1 I2V's CLIP-vision cross-attention; no trick acts on
it, Inspect lists it).

Geometry: a latent is (B, C, H, W) for images and (B, C, T, H, W) for video; `latent_size` is its size after the
channels, (h, w) or (t, h, w), and a token grid is (h, w) or (t, h, w) in token order (frames outermost).
"""
import math
from dataclasses import dataclass
from typing import ClassVar, Optional

TRICKS = ("apg", "route", "r2f", "addit", "designedit", "painta", "rasg", "search", "invert")
KINDS = ("self", "cross", "joint", "text", "vision")


def image_model(base) -> Optional[str]:
    """The `image_model` of a BaseModel's config, as ComfyUI's detection wrote it ("flux", "flux2", "chroma",
    "qwen_image", "lumina2", "hunyuan_video", "wan2.1", ...; None for the UNet and SD3)."""
    cfg = getattr(getattr(base, "model_config", None), "unet_config", None) or {}
    return cfg.get("image_model")


@dataclass(frozen=True)
class Layer:
    block: str
    kind: str
    heads: int
    head_dim: int
    image_tokens: int    # query image tokens at the given resolution
    grid: tuple          # token grid of the image tokens: (h, w), or (t, h, w) for video


@dataclass(frozen=True)
class Preset:
    """A paper's text layers, as indices into this model's forward-order layers of one kind."""

    name: str
    label: str           # the model the paper measured ("SDXL", "SD3")
    kind: str            # the layer kind the indices count
    indices: tuple       # 0-based, forward order among layers of that kind
    count: int           # how many layers of that kind the measured model has
    source: str


@dataclass(frozen=True)
class Call:
    """Where an attention call sits and how its tokens are laid out (the adapter's answer to the router)."""

    block: str                    # normalised block id, e.g. "output.2.1", "joint.10", "double.7"
    kind: str                     # "self" | "cross" | "joint"
    img: slice                    # image tokens among the query tokens
    txt: Optional[slice]          # text tokens among the key tokens (cross: all; joint: the text part)
    grid: tuple                   # token grid of the image tokens at this layer: (h, w) or (t, h, w)
    refs: Optional[slice] = None  # reference-image tokens after the image (edit models: Qwen-Image-Edit, Kontext)
    prompt: Optional[slice] = None  # the conditioning's own tokens among the keys, where the text part holds more
                                    # (glyph or vision tokens the model adds: HunyuanVideo); None: all of `txt`


class Family:
    """One model family. Class attributes are the family's facts; `detect()` makes the instance."""

    key: ClassVar[str] = ""                     # registry id, used only inside families/
    models: ClassVar[str] = ""                  # what users know it as, for messages
    self_kind: ClassVar[str] = "joint"          # the kind carrying image self-attention
    text_kind: ClassVar[str] = "joint"          # the kind through which the prompt reaches the image
    route_by: ClassVar[str] = "text_kv"         # "context": swap the cross-attention context (attn2 patch);
                                                # "cross_kv": swap the cross-attention K/V for the routed text's,
                                                # projected by the layer's own weights (`context_kv`); "text_kv":
                                                # the text K/V of a side pass (joint attention)
    text_groups: ClassVar[tuple] = ()           # tokenizer keys per text segment, in sequence order
    r2f_level_map: ClassVar[str] = "sd3"        # Rare-to-Frequent level → stop-step map of this family
    embedding_fit: ClassVar[str] = "pad"        # how two prompts of different token lengths are matched
    relevance: ClassVar[str] = "call"           # PAIntA's prompt relevance: "call" (joint) or "block" (attn2)
    inplace_activations: ClassVar[bool] = False # blocks add into saved activations in place (autograd copies)
    groups_blocks: ClassVar[bool] = False       # block ids have a depth part (output.2.1 of output.2)
    default_downscale: ClassVar[int] = 8        # latent pixels per side, where the latent format does not say
    temporal_downscale: ClassVar[int] = 0       # video: frames per latent frame after the first (0: images)
    patch_t: ClassVar[int] = 1                  # video: latent frames per token
    known_presets: ClassVar[tuple] = ()         # the papers' text layers measured on models of this family
    text_alignment: ClassVar[str] = "start"     # "end": the text encoder drops a template prefix or pads on the
                                                # left, so its tokens line up with the text sequence's end
    unsupported: ClassVar[dict] = {}            # trick -> why it is not meaningful here and what to use instead

    def __init__(self, label: str, patch: int, downscale: int, presets: tuple = ()):
        self.label = label              # "SD1.5", "SDXL", "SD3", "Flux", ...
        self.patch = patch              # latent pixels per image token side
        self.downscale = downscale      # image pixels per latent pixel side
        self.text_presets = tuple(presets)

    def __repr__(self):
        return f"{type(self).__name__}({self.label!r}, patch={self.patch}, downscale={self.downscale})"

    def __deepcopy__(self, memo):       # immutable; model_options are deep-copied on clone (0.3.75)
        return self

    # ---------------------------------------------------------------- detection

    @classmethod
    def matches(cls, base, dm) -> bool:
        raise NotImplementedError

    @classmethod
    def create(cls, base, dm) -> "Family":
        raise NotImplementedError

    @classmethod
    def downscale_of(cls, base) -> int:
        """Image pixels per latent pixel: the latent format's own figure where ComfyUI has one."""
        return int(getattr(base.latent_format, "spacial_downscale_ratio", cls.default_downscale))

    # ---------------------------------------------------------------- geometry and layers

    def latent_size(self, width: int, height: int, frames: int = 1) -> tuple:
        """(h, w) of an image's latent, or (t, h, w) of a video of `frames` frames (as the Empty Latent nodes)."""
        hw = max(1, math.ceil(height / self.downscale)), max(1, math.ceil(width / self.downscale))
        if not self.temporal_downscale:
            return hw
        return (max(1, (frames - 1) // self.temporal_downscale + 1), *hw)

    def image_grid(self, latent_size) -> tuple:
        """The token grid of a latent size: (h, w) → (gh, gw); (t, h, w) → (gt, gh, gw)."""
        *t, h, w = latent_size
        return (*(math.ceil(d / self.patch_t) for d in t), math.ceil(h / self.patch), math.ceil(w / self.patch))

    def default_size(self) -> int:
        """The resolution the family's models are made for (pixels per side)."""
        return 1024

    def layers(self, dm, latent_hw) -> list:
        """Every attention layer in forward order, as the router will see them at this latent size ((h, w), or
        (t, h, w) for video families)."""
        raise NotImplementedError

    # ---------------------------------------------------------------- each attention call

    def describe(self, fwd, to: dict, q_len: int, k_len: int) -> Call:
        """Block, kind and token layout of the call being made now (called once per call, in order;
        `fwd.counters` is a per-forward dict the adapter may count in)."""
        raise NotImplementedError

    def text_length(self, c_crossattn, extra_conds: dict) -> int:
        return c_crossattn.shape[1] if c_crossattn is not None else 0

    # ---------------------------------------------------------------- tricks

    @property
    def tricks(self) -> tuple:
        return tuple(t for t in TRICKS if t not in self.unsupported)

    def require(self, trick: str, who: str):
        """At patch time: a trick this family cannot do is refused, naming the family and what to use instead."""
        if trick in self.unsupported:
            raise ValueError(f"{who}: not available on {self.label} ({self.models}): {self.unsupported[trick]}")

    def text_position(self, position: int, tokenized_len: int, text_len: int) -> int:
        """Where token `position` of a tokenized prompt (`tokenized_len` tokens) lands in a text sequence of
        `text_len` tokens: the same index, or aligned on the sequence's end (`text_alignment` "end")."""
        return position + (text_len - tokenized_len if self.text_alignment == "end" else 0)

    def addit_layers(self, layers, early_end: float, late_end: float):
        """Add-it's plan: ({(block, kind): end fraction of extended attention}, {recording layers},
        {layers whose attention masses set auto γ}). Flux (the paper): double blocks end early, single blocks
        late; elsewhere the first third of the self-attention layers by depth (Flux's 19 of 57) ends early."""
        ext = [layer.block for layer in layers if layer.kind == self.self_kind]
        windows = {(b, self.self_kind): early_end if j / len(ext) < PAPER_DOUBLE_SHARE else late_end
                   for j, b in enumerate(ext)}
        return windows, self._record_layers(layers), set(windows)

    def _record_layers(self, layers):
        """Add-it's recording layers: the text layers at the paper's relative depths."""
        rec = [layer.block for layer in layers if layer.kind == self.text_kind]
        return {(rec[min(len(rec) - 1, int(d * len(rec)))], self.text_kind) for d in PAPER_RECORD_DEPTHS}

    def addit_map_grid(self, latent_hw) -> tuple:
        """The grid Add-it averages its subject maps on."""
        return self.image_grid(latent_hw)

    def context_kv(self, dm, blocks, context) -> dict:
        """{block: (k, v)} the cross-attention of each block makes from a text embedding (route_by "cross_kv")."""
        raise NotImplementedError

    def context_dim(self, dm) -> Optional[int]:
        """Width of the cross-attention context (families that route by context swap)."""
        return None

    def transformer_block(self, dm, block: str):
        """The module holding `block`'s attention (families whose PAIntA relevance comes from the block)."""
        raise NotImplementedError

    def patch_block(self, extra_options) -> Optional[str]:
        """The block id a block-level patch (attn1_output_patch, middle_patch) runs in."""
        return None

    def block_group(self, block: str) -> str:
        """The group a block id belongs to for coarse searches (itself where ids have no depth part)."""
        return block

    def inpaints(self, base) -> bool:
        """An inpainting model: it takes the mask as a concat input (9-channel SD, Flux Fill)."""
        if getattr(base, "concat_keys", ()):
            return True
        cfg = getattr(base.model_config, "unet_config", {}) or {}
        ch = getattr(base.latent_format, "latent_channels", 4)
        return int(cfg.get("in_channels", ch) or ch) > ch


# Add-it (Tewel et al.) measured Flux.1: 19 double + 38 single blocks; subject maps at double 13, 14, 18 and
# single 23, 33. Other families use the same relative depths.
FLUX_DOUBLE, FLUX_SINGLE = 19, 38
PAPER_RECORD_DEPTHS = tuple(i / 57 for i in (13, 14, 18, 19 + 23, 19 + 33))
PAPER_DOUBLE_SHARE = FLUX_DOUBLE / (FLUX_DOUBLE + FLUX_SINGLE)
