"""MMDiT family: SD3 and SD3.5 (Large, Medium with its extra image-only self-attention).

Block ids: `joint.10` = joint block 10; SD3.5 Medium's image-only attention of that block is `joint.10` of kind
self. ComfyUI writes no block id for SD3: calls are counted per forward (a call whose queries are exactly the
image tokens is the image-only attention of the joint block before it). Joint attention is
`[context (+ register tokens) | image]`, text first. SD3.5 Large (38 joint blocks) and Medium (MMDiT-X: 24 joint blocks,
the first 13 with an image-only attention) run on this adapter; ComfyUI gives both the SD3 model class, so the SD3
text preset (measured on SD3 Medium's 24 blocks) is offered where the joint-block count matches (SD3.5 Medium) and
refused elsewhere: on SD3.5 Medium it is the paper's index, not a measurement of that model.
"""
from .base import Call, Family, Layer, Preset

SD3_TEXT = Preset("SD3 text (paper)", "SD3", "joint", (10,), 24,
                  # Staniszewski et al., ICLR 2025: ATTENTIONS_TO_PATCH = [10] over SD3-medium's 24 joint blocks
                  "Staniszewski et al. 2025, SD3 medium: joint block 10 of 24")


class MMDiT(Family):
    key = "mmdit"
    models = "SD3 / SD3.5"
    known_presets = (SD3_TEXT,)
    text_groups = (("l", "g"), ("t5xxl",))   # CLIP-L/G (concatenated on features), then T5

    @classmethod
    def matches(cls, base, dm):
        return type(dm).__name__ in ("OpenAISignatureMMDITWrapper", "MMDiT")

    @classmethod
    def create(cls, base, dm):
        label = type(base).__name__
        return cls(label, dm.patch_size, cls.downscale_of(base), (SD3_TEXT,) if label == "SD3" else ())

    def layers(self, dm, latent_hw):
        gh, gw = self.image_grid(latent_hw)
        layers = []
        for i, jb in enumerate(dm.joint_blocks):
            attn = jb.x_block.attn
            layers.append(Layer(f"joint.{i}", "joint", attn.num_heads, attn.head_dim, gh * gw, (gh, gw)))
            if getattr(jb.x_block, "x_block_self_attn", False):
                a2 = jb.x_block.attn2
                layers.append(Layer(f"joint.{i}", "self", a2.num_heads, a2.head_dim, gh * gw, (gh, gw)))
        return layers

    def describe(self, fwd, to, q_len, k_len):
        grid = self.image_grid(fwd.latent_hw)
        n_img = grid[0] * grid[1]
        joint = fwd.counters.get("joint", 0)
        if q_len == n_img:        # SD3.5's image-only attention belongs to the joint block before it
            return Call(f"joint.{joint - 1}", "self", slice(0, q_len), None, grid)
        fwd.counters["joint"] = joint + 1
        start = q_len - n_img
        return Call(f"joint.{joint}", "joint", slice(start, start + n_img), slice(0, start), grid)
