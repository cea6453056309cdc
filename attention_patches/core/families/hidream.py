"""HiDream family: HiDream-I1 (Full, Dev, Fast; comfy/ldm/hidream, image_model "hidream"): Flux-like double-stream
then single-stream blocks with MoE feed-forwards, image tokens first.

Block ids `double.i` / `single.i` (the model's `double_stream_blocks` / `single_stream_blocks`); ComfyUI 0.3.75
writes none, so calls are counted per forward. Every attention call is `[image | T5 | Llama (last layer) |
Llama (this block's layer)]`: the text stream (T5, then the Llama's last layer, both refined block by block) gets
one more Llama-3.1 layer's hidden states appended in each block (`llama_layers[block]`), which the block drops
again afterwards, so each call sees 128 T5 tokens and the Llama prompt twice. HiDream-E1's edit input (the source
latent beside the generated one in every row) is refused by name: its image tokens are not one block.
"""
from .base import Call
from .flux import Flux


class HiDream(Flux):
    key = "hidream"
    models = "HiDream-I1"
    image_models = ("hidream",)
    labels = {"HiDream": "HiDream"}
    text_groups = (("t5xxl",), ("llama",), ("llama",))   # T5, the Llama's last layer, the block's own layer
    inplace_activations = False

    def __init__(self, label, patch, downscale, double: int = 0):
        super().__init__(label, patch, downscale)
        self.double = double            # double-stream blocks: the calls before the single-stream ones

    @classmethod
    def create(cls, base, dm):
        return cls("HiDream", dm.patch_size, cls.downscale_of(base), len(dm.double_stream_blocks))

    def stacks(self, dm):
        heads, hd = dm.num_attention_heads, dm.attention_head_dim
        return [("double", dm.double_stream_blocks, heads, hd), ("single", dm.single_stream_blocks, heads, hd)]

    def text_length(self, c_crossattn, extra_conds):
        """Text tokens of every attention call: T5 plus the Llama prompt twice."""
        llama = extra_conds.get("encoder_hidden_states_llama3")
        return super().text_length(c_crossattn, extra_conds) + (2 * llama.shape[2] if llama is not None else 0)

    def describe(self, fwd, to, q_len, k_len):
        n = fwd.counters.get("calls", 0)
        fwd.counters["calls"] = n + 1
        grid = self.image_grid(fwd.latent_hw)
        n_img = grid[0] * grid[1]
        if q_len - fwd.txt_len != n_img:
            raise ValueError(f"Sleight · {self.label}: an attention call of {q_len} tokens, not the {n_img} image "
                             f"tokens and {fwd.txt_len} text tokens Sleight knows (HiDream-E1's edit input puts the "
                             "source beside the image in every row); the tricks support HiDream-I1 only.")
        block = f"double.{n}" if n < self.double else f"single.{n - self.double}"
        return Call(block, "joint", slice(0, n_img), slice(n_img, q_len), grid)
