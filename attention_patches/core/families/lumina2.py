"""Z-Image / Lumina 2 family (comfy/ldm/lumina NextDiT, image_model "lumina2"; ComfyUI's configs ZImage, width
3840, and Lumina2, width 2304): a single-stream DiT whose forward has three phases, each a stack of the same block:

1. `context_refiner.i`: the caption alone (text attention; its padding mask, if any, is the model's own);
2. `noise_refiner.i`: the image tokens alone (kind "self");
3. `layers.i`: caption and image in one sequence `[caption + pad | image + pad]` (kind "joint").

Z-Image pads the caption and the image tokens each to a multiple of 32 with learned pad tokens (`cap_pad_token`,
`x_pad_token`); Lumina 2 pads nothing. The pads stay part of the attention (0.3.75 passes no mask to the noise
refiner or the joint layers), but never of an image slice, grid or map: the image slice is the real image tokens,
the caption pads count as text. ComfyUI 0.3.75 writes no block ids here, so the calls are counted per forward, and
a call whose length is not the phase's (a newer forward with more refiner paths) is refused by name.
"""
import math

from .base import PAPER_DOUBLE_SHARE, Call, Family, Layer, image_model


class Lumina2(Family):
    key = "lumina2"
    models = "Z-Image / Lumina 2"
    labels = {"ZImage": "Z-Image", "Lumina2": "Lumina 2"}           # ComfyUI config class -> name users know
    self_kind = "joint"
    text_groups = (("qwen3_4b", "gemma2_2b", "gemma3_4b"),)         # Z-Image's Qwen3, Lumina 2's Gemma 2

    def __init__(self, label, patch, downscale, refiners: int, layers: int, pad_multiple: int, heads: int,
                 head_dim: int):
        super().__init__(label, patch, downscale)
        self.refiners = refiners        # blocks in each refiner (context and noise)
        self.n_layers = layers
        self.pad_multiple = pad_multiple
        self.heads, self.head_dim = heads, head_dim

    @classmethod
    def matches(cls, base, dm):
        return image_model(base) == "lumina2"

    @classmethod
    def create(cls, base, dm):
        name = type(base.model_config).__name__
        return cls(cls.labels.get(name, name), dm.patch_size, cls.downscale_of(base), len(dm.context_refiner),
                   len(dm.layers), dm.pad_tokens_multiple or 1, dm.n_heads, dm.dim // dm.n_heads)

    def padded(self, n: int) -> int:
        """Tokens after the model pads `n` to its multiple."""
        return math.ceil(n / self.pad_multiple) * self.pad_multiple

    def text_length(self, c_crossattn, extra_conds):
        """The caption as the joint layers see it: the encoded prompt plus its pad tokens."""
        return self.padded(super().text_length(c_crossattn, extra_conds))

    def phases(self):
        """(block prefix, kind, count) of each phase, in forward order."""
        return (("context_refiner", "text", self.refiners), ("noise_refiner", "self", self.refiners),
                ("layers", "joint", self.n_layers))

    def layers(self, dm, latent_hw):
        gh, gw = self.image_grid(latent_hw)
        out = []
        for prefix, kind, count in self.phases():
            tokens, grid = (0, (0, 0)) if kind == "text" else (gh * gw, (gh, gw))
            out += [Layer(f"{prefix}.{i}", kind, self.heads, self.head_dim, tokens, grid) for i in range(count)]
        return out

    def describe(self, fwd, to, q_len, k_len):
        n = fwd.counters.get("calls", 0)
        fwd.counters["calls"] = n + 1
        grid = self.image_grid(fwd.latent_hw)
        n_img, txt = grid[0] * grid[1], fwd.txt_len
        img_seq = self.padded(n_img)
        for prefix, kind, count in self.phases():
            if n < count:
                break
            n -= count
        else:
            raise self._unknown(q_len, f"more than {2 * self.refiners + self.n_layers} attention calls")
        if kind == "text":
            if q_len != txt:
                raise self._unknown(q_len, f"{prefix}.{n} expects the caption's {txt}")
            return Call(f"{prefix}.{n}", kind, slice(0, 0), slice(0, q_len), (0, 0))
        if kind == "self":
            if q_len != img_seq:
                raise self._unknown(q_len, f"{prefix}.{n} expects the image's {img_seq}")
            return Call(f"{prefix}.{n}", kind, slice(0, n_img), None, grid)
        if q_len != txt + img_seq:
            raise self._unknown(q_len, f"{prefix}.{n} expects caption + image, {txt} + {img_seq}")
        return Call(f"{prefix}.{n}", kind, slice(txt, txt + n_img), slice(0, txt), grid)

    def _unknown(self, q_len, expected):
        return ValueError(f"Sleight: this {self.label} forward is not the one Sleight knows (ComfyUI 0.3.75's "
                          f"caption refiner, noise refiner, joint layers): an attention call of {q_len} tokens where "
                          f"{expected}. Reference-image (omni) inputs are not supported; sample without them.")

    def addit_layers(self, layers, early_end, late_end):
        """Add-it's extended attention on every image self-attention by depth, the noise refiner included (it
        comes first, so it takes the early window); auto γ from the joint layers, whose text queries it measures."""
        ext = [(layer.block, layer.kind) for layer in layers if layer.kind in ("self", "joint")]
        windows = {lk: early_end if j / len(ext) < PAPER_DOUBLE_SHARE else late_end for j, lk in enumerate(ext)}
        return windows, self._record_layers(layers), {lk for lk in windows if lk[1] == "joint"}
