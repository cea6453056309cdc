"""Flux.1 family: dev, schnell and Fill (ComfyUI's `Flux` diffusion model in comfy/ldm/flux).

Block ids: `double.7`, `single.12`, as ComfyUI writes them (`block_type`, `block_index`). Joint attention is
`[txt | img]` in both stream kinds (the single blocks run on the concatenated stream), after RoPE, in the
(B, H, L, D) layout. Its blocks add into activations in place after saving them for backward.
"""
from .base import Call, Family, Layer


class Flux(Family):
    key = "flux"
    models = "Flux.1 (dev, schnell, Fill)"
    text_groups = (("t5xxl",),)
    inplace_activations = True

    @classmethod
    def matches(cls, base, dm):
        return type(dm).__name__ == "Flux" and type(dm).__module__.startswith("comfy.ldm.flux")

    @classmethod
    def create(cls, base, dm):
        return cls(type(base).__name__, dm.patch_size, cls.downscale_of(base))

    def layers(self, dm, latent_hw):
        gh, gw = self.image_grid(latent_hw)
        hd = dm.hidden_size // dm.num_heads
        return [Layer(f"{prefix}.{i}", "joint", dm.num_heads, hd, gh * gw, (gh, gw))
                for prefix, blocks in (("double", dm.double_blocks), ("single", dm.single_blocks))
                for i in range(len(blocks))]

    def describe(self, fwd, to, q_len, k_len):
        grid = self.image_grid(fwd.latent_hw)
        block = f"{to.get('block_type', 'double')}.{to.get('block_index', 0)}"
        start = fwd.txt_len
        return Call(block, "joint", slice(start, start + grid[0] * grid[1]), slice(0, start), grid)

    def addit_layers(self, layers, early_end, late_end):
        """The paper's own split: double-stream blocks end at `early_end`, single-stream at `late_end`; auto γ
        from the double-stream blocks (the official code's 'transformer_blocks')."""
        windows = {(layer.block, "joint"): early_end if layer.block.startswith("double") else late_end
                   for layer in layers if layer.kind == "joint"}
        ratio = {lk for lk in windows if lk[0].startswith("double")}
        return windows, self._record_layers(layers), ratio
