"""UNet family: SD1.5 and SDXL (incl. their 9-channel inpainting models).

Block ids: `input.4.1` = ComfyUI block ("input", 4), transformer block 1 inside it; `middle.0.j`, `output.i.j`.
Every transformer block calls attn1 (self-attention over the image tokens of its level) then attn2
(cross-attention to the prompt's context); ComfyUI writes `block` and `block_index` into transformer_options.
The text reaches the image only through attn2, whose K/V are projections of the context alone, so prompt routing
swaps the context (attn2_patch). Token grids halve at each level (`activations_shape`).
"""
from .base import Call, Family, Layer, Preset

SDXL_TEXT = Preset("SDXL text (paper)", "SDXL", "cross", (55, 56, 57), 70,
                   # Staniszewski et al., ICLR 2025: ATTENTIONS_TO_PATCH = [55, 56, 57] over SDXL's 70 attn2 blocks
                   "Staniszewski et al. 2025, SDXL base: cross-attention layers 55-57 of 70")
LABELS = {"BaseModel": "SD1.5"}


class UNet(Family):
    key = "unet"
    models = "SD1.5 (incl. inpainting), SDXL"
    self_kind, text_kind = "self", "cross"
    route_by = "context"
    known_presets = (SDXL_TEXT,)
    text_groups = (("l", "g"),)          # SDXL's l and g are concatenated on features: one sequence
    r2f_level_map, embedding_fit = "sdxl", "repeat"
    relevance = "block"
    groups_blocks = True

    @classmethod
    def matches(cls, base, dm):
        return type(dm).__name__ == "UNetModel"

    @classmethod
    def create(cls, base, dm):
        label = LABELS.get(type(base).__name__, type(base).__name__)
        return cls(label, 1, cls.downscale_of(base), (SDXL_TEXT,) if label == "SDXL" else ())

    def default_size(self):
        return 1024 if SDXL_TEXT in self.text_presets else 512

    def layers(self, dm, latent_hw):
        """Walk the UNet as its forward does, tracking the spatial size at every SpatialTransformer."""
        layers = []

        def add(prefix, st, h, w):
            for j, tb in enumerate(st.transformer_blocks):
                for kind, attn in (("self", tb.attn1), ("cross", tb.attn2)):
                    if attn is not None:
                        layers.append(Layer(f"{prefix}.{j}", kind, attn.heads, attn.dim_head, h * w, (h, w)))

        h, w = latent_hw
        skips = []
        for i, block in enumerate(dm.input_blocks):
            for m in block:
                if type(m).__name__ == "Downsample":
                    h, w = (h + 1) // 2, (w + 1) // 2
            for st in _transformers(block):
                add(f"input.{i}", st, h, w)
            skips.append((h, w))
        for st in _transformers(dm.middle_block if dm.middle_block is not None else []):
            add("middle.0", st, h, w)
        for i, block in enumerate(dm.output_blocks):
            h, w = skips.pop()
            for st in _transformers(block):
                add(f"output.{i}", st, h, w)
        return layers

    def describe(self, fwd, to, q_len, k_len):
        bid = self.patch_block(to)
        seen = fwd.counters.setdefault("blocks", {})
        n = seen.get(bid, 0)                 # every transformer block calls attn1 (self) then attn2 (cross)
        seen[bid] = n + 1
        shape = to.get("activations_shape")
        grid = tuple(shape[-2:]) if shape is not None and len(shape) >= 4 else fwd.latent_hw
        if n % 2 == 0 and q_len == k_len:
            return Call(bid, "self", slice(0, q_len), None, grid)
        return Call(bid, "cross", slice(0, q_len), slice(0, k_len), grid)

    def patch_block(self, extra_options):
        block = extra_options.get("block") or ("unknown", 0)
        return f"{block[0]}.{block[1]}.{extra_options.get('block_index', 0)}"

    def block_group(self, block):
        return block.rsplit(".", 1)[0]

    def addit_map_grid(self, latent_hw):
        return tuple(latent_hw)

    def context_dim(self, dm):
        for m in dm.modules():
            attn2 = getattr(m, "attn2", None)
            if type(m).__name__ == "BasicTransformerBlock" and attn2 is not None:
                return attn2.to_k.in_features
        return None

    def transformer_block(self, dm, block):
        """The BasicTransformerBlock of a block id (PAIntA's relevance needs its norm2, attn2 and attn1.to_out)."""
        part, i, j = block.split(".")
        seq = {"input": lambda n: dm.input_blocks[n], "output": lambda n: dm.output_blocks[n],
               "middle": lambda n: dm.middle_block}[part](int(i))
        return _transformers(seq)[0].transformer_blocks[int(j)]


def _transformers(module):
    return [m for m in module if type(m).__name__ == "SpatialTransformer"]
