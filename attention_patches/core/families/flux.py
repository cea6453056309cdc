"""Flux.1 family: dev, schnell, Fill and Kontext (ComfyUI's `Flux` diffusion model in comfy/ldm/flux, image_model
"flux"); also the base of the other families whose blocks ComfyUI numbers itself (Flux.2, Chroma, Qwen-Image).

Block ids: `double.7`, `single.12`, as ComfyUI writes them (`block_type`, `block_index`). Joint attention is
`[txt | img | reference images]` in both stream kinds (the single blocks run on the concatenated stream), after
RoPE, in the (B, H, L, D) layout. Its blocks add into activations in place after saving them for backward.
"""
from .base import Call, Family, Layer, image_model


class Flux(Family):
    key = "flux"
    models = "Flux.1 (dev, schnell, Fill, Kontext)"
    image_models = ("flux",)                 # what ComfyUI's detection calls this family's models
    labels = {}                              # BaseModel class -> the name users know
    text_groups = (("t5xxl",),)
    inplace_activations = True

    @classmethod
    def matches(cls, base, dm):
        return image_model(base) in cls.image_models

    @classmethod
    def create(cls, base, dm):
        name = type(base).__name__
        return cls(cls.labels.get(name, name), dm.patch_size, cls.downscale_of(base))

    def stacks(self, dm):
        """(block type, blocks, heads, head dim) of each stack of attention blocks, in forward order."""
        hd = dm.hidden_size // dm.num_heads
        return [("double", dm.double_blocks, dm.num_heads, hd), ("single", dm.single_blocks, dm.num_heads, hd)]

    def layers(self, dm, latent_hw):
        gh, gw = self.image_grid(latent_hw)
        return [Layer(f"{prefix}.{i}", "joint", heads, hd, gh * gw, (gh, gw))
                for prefix, blocks, heads, hd in self.stacks(dm) for i in range(len(blocks))]

    def describe(self, fwd, to, q_len, k_len):
        grid = self.image_grid(fwd.latent_hw)
        block = f"{to.get('block_type', 'double')}.{to.get('block_index', 0)}"
        start, stop = fwd.txt_len, fwd.txt_len + grid[0] * grid[1]
        refs = slice(stop, q_len) if q_len > stop else None
        return Call(block, "joint", slice(start, stop), slice(0, start), grid, refs)

    def addit_layers(self, layers, early_end, late_end):
        """The paper's own split: double-stream blocks end at `early_end`, single-stream at `late_end`; auto γ
        from the double-stream blocks (the official code's 'transformer_blocks'). Without single-stream blocks,
        the split by depth of every family."""
        if not any(layer.block.startswith("single") for layer in layers):
            return super().addit_layers(layers, early_end, late_end)
        windows = {(layer.block, "joint"): early_end if layer.block.startswith("double") else late_end
                   for layer in layers if layer.kind == "joint"}
        ratio = {lk for lk in windows if lk[0].startswith("double")}
        return windows, self._record_layers(layers), ratio
