"""Wan family: Wan 2.1 and 2.2 (T2V, I2V, the 2.2 TI2V 5B and the two A14B experts), ComfyUI's `WanModel`
(comfy/ldm/wan/model.py, image_model "wan2.1"; the 5B loads as model_base.WAN22 with the 48-channel Wan22 latent at
1/16, every other one as WAN21 with the 16-channel Wan21 latent at 1/8; 4 frames per latent frame after the first).

Block ids: `blocks.i`, the model's own module names: ComfyUI 0.3.75 writes no block id for Wan, so calls are counted
per forward (newer ComfyUI writes block_type "double" and block_index i, which are used where present). Each block
runs, in order:
- `self`: self-attention over the whole token volume, patch (1, 2, 2), tokens in (t, h, w) order (frames outermost);
- `vision` (I2V models, whose cross-attention is WanI2VCrossAttention): image queries to the CLIP-vision tokens
  (the `clip_fea` projection the model puts before the text in its context; without a clip_vision_output the model
  still makes this call, on the text tokens);
- `cross`: image queries to the text (umT5, padded to at least 512 tokens), text first token first.
The text reaches the image only through `cross`, whose K/V are projections of the text embedding alone, so prompt
routing swaps them for the routed prompt's, projected by the layer's own weights (`route_by` "cross_kv").
The A14B experts are two models sampled one after the other by two samplers: every trick is applied to each model
by its own node and acts in its run; percent windows are schedule percent, the same for both.
Other WanModel subclasses (VACE, camera, S2V, HuMo, Animate) run more attention per block and are not claimed.
"""
import math

from .base import Call, Family, Layer, image_model


class Wan(Family):
    key = "wan"
    models = "Wan 2.1 / 2.2 (T2V, I2V, TI2V 5B, A14B experts)"
    self_kind, text_kind = "self", "cross"
    route_by = "cross_kv"
    text_groups = (("umt5xxl",),)
    temporal_downscale = 4
    unsupported = {
        "painta": "PAIntA takes each known token's prompt relevance from its block's cross-attention between the "
                  "self- and cross-attention (the UNet's middle patch) or from a joint call; Wan runs self-attention "
                  "first and gives no hook between the two, and has no inpainting model. Use Sleight · DesignEdit "
                  "remove (one key mask over every frame) or a Wan inpainting workflow (VACE, Fun inpaint).",
        "rasg": "RASG guides with PAIntA's cross-attention scores in the hole and needs PAIntA, which Wan cannot "
                "run. Use Sleight · DesignEdit remove or a Wan inpainting workflow.",
    }

    def __init__(self, label, patch, downscale, vision: bool = False, ref_first: bool = False):
        super().__init__(label, patch, downscale)
        self.vision = vision          # I2V cross-attention: a vision call before the text call in every block
        self.ref_first = ref_first    # a reference-latent conv: its frame's tokens may come before the video's

    @classmethod
    def matches(cls, base, dm):
        return image_model(base) == "wan2.1" and type(dm).__name__ == "WanModel"

    @classmethod
    def create(cls, base, dm):
        lf = base.latent_format
        down = getattr(lf, "spacial_downscale_ratio", 16 if lf.latent_channels == 48 else 8)  # 0.3.75 has none
        label = "Wan 2.2 5B" if lf.latent_channels == 48 else ("Wan 2.1 I2V" if dm.model_type == "i2v" else "Wan 2.1")
        return cls(label, dm.patch_size[-1], down, hasattr(dm.blocks[0].cross_attn, "k_img"),
                   getattr(dm, "ref_conv", None) is not None)

    def kinds(self):
        return ("self", "vision", "cross") if self.vision else ("self", "cross")

    def layers(self, dm, latent_size):
        grid = self.image_grid(latent_size)
        n = math.prod(grid)
        return [Layer(f"blocks.{i}", kind, b.self_attn.num_heads, b.self_attn.head_dim, n, grid)
                for i, b in enumerate(dm.blocks) for kind in self.kinds()]

    def describe(self, fwd, to, q_len, k_len):
        kinds = self.kinds()
        n = fwd.counters.get("calls", 0)
        fwd.counters["calls"] = n + 1
        block, j = divmod(n, len(kinds))
        if to.get("block_type") == "double" and "block_index" in to:
            block = to["block_index"]
        grid = self.image_grid(fwd.latent_size)
        n_img = math.prod(grid)
        # a reference latent (ref_conv models) puts one frame's tokens first; frames concatenated in time
        # (time_dim_concat) come after the video's
        start = q_len - n_img if self.ref_first and q_len == n_img + math.prod(grid[-2:]) else 0
        img = slice(start, start + n_img)
        kind = kinds[j]
        return Call(f"blocks.{block}", kind, img, slice(0, k_len) if kind == "cross" else None, grid)

    def context_kv(self, dm, blocks, context):
        """{block: (k, v)} of a text embedding (B, L, text_dim) in the cross-attention of each block, as the model
        computes them: k = norm_k(W_k·text_embedding(context)), v = W_v·text_embedding(context), each (B, L, C)."""
        ctx = dm.text_embedding(context)
        out = {}
        for block in blocks:
            ca = dm.blocks[int(block.split(".")[1])].cross_attn
            out[block] = (ca.norm_k(ca.k(ctx)), ca.v(ctx))
        return out

    def context_dim(self, dm):
        return dm.text_dim

    def addit_map_grid(self, latent_size):
        return self.image_grid(latent_size)[-2:]
