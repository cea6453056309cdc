"""HunyuanVideo family: HunyuanImage 2.1 (and its refiner) and HunyuanVideo 1.5 (and its super-resolution model),
which ComfyUI runs with one class, `HunyuanVideo` (comfy/ldm/hunyuan_video, image_model "hunyuan_video"): 2-D
patches and a 64-channel latent at 1/32 for the image model, 3-D patches and a 32-channel latent at 1/16 (4 frames
per latent frame after the first) for video. One adapter serves both: the blocks, the call layout and the text are
the same code; only the latent's time axis and the text's segment order differ, and both are read from the model.

Block ids `double.i` / `single.i` as ComfyUI writes them (HunyuanVideo 1.5 has double blocks only), and
`txt_in.0` / `txt_in.1`: the two blocks of the text refiner (`txt_in.individual_token_refiner.blocks`), which
attend over the conditioning alone (kind "text") first in every forward; ComfyUI writes no block id there, so they
are counted, and their length is the conditioning's.

Token layout of the joint calls (double and single blocks alike):
- ComfyUI 0.3.75 puts the image first, `[ref | image | text]` (its double blocks are built `flipped_img_txt`);
  newer ComfyUI (v0.14+) puts the text first, `[text | ref | image]`, and writes the single blocks' image part
  into transformer_options["img_slice"]. The adapter follows the running model: `img_slice` where ComfyUI writes
  it, else the double blocks' own flag.
- image: the token volume in (t, h, w) order, frames outermost; `ref`: the tokens of a clean `ref_latent`
  prepended to them, never part of the image slice (nor of `refs`, which name reference tokens after the image).
- text: Qwen2.5-VL's tokens (the conditioning's rows: the call's `prompt`), byT5 glyph tokens of quoted text after
  them on HunyuanImage 2.1 and before them on HunyuanVideo 1.5 (which tags each kind with `cond_type_embedding`),
  and on 1.5 the SigLIP vision tokens of image to video before everything: 2.1 `[qwen | byt5]`, 1.5
  `[vision | byt5 | qwen]`. Qwen2.5-VL drops its chat template's prefix, so a prompt's tokens line up with the
  end of the Qwen part.
HD-Painter (PAIntA, RASG) runs on HunyuanImage 2.1 (with a latent noise mask) and is refused on HunyuanVideo 1.5:
its extra input channels are image-to-video frames, and 0.3.75 cannot sample it with a noise mask.
HunyuanVideo 1.0 (the same class with a LLaMA encoder and a CLIP-L vector) is not claimed: its encoder cuts the
sequence after the prompt, which no alignment here describes.
"""
import math

from .base import Call, Layer, image_model
from .flux import Flux

# 0.3.75's latent formats do not say their downscale (newer ones do: `downscale_of` reads it first)
DOWNSCALE = {"HunyuanImage21": 32, "HunyuanImage21Refiner": 16, "HunyuanVideo15": 16}
NO_INPAINTING = ("HD-Painter needs an inpainting model or a latent noise mask; HunyuanVideo 1.5 has neither: its extra "
                 "input channels are image-to-video frames, and ComfyUI 0.3.75 cannot sample it with a noise mask "
                 "(the 32-channel noise mask fills its 1-channel mask input). Inpaint images with HunyuanImage 2.1; "
                 "on video use Sleight · DesignEdit remove or Add-it")


class HunyuanVideo(Flux):
    key = "hunyuan_video"
    models = "HunyuanImage 2.1, HunyuanVideo 1.5"
    image_models = ("hunyuan_video",)
    labels = {"HunyuanImage21": "HunyuanImage 2.1", "HunyuanImage21Refiner": "HunyuanImage 2.1 refiner",
              "HunyuanVideo15": "HunyuanVideo 1.5", "HunyuanVideo15_SR_Distilled": "HunyuanVideo 1.5 SR"}
    text_groups = (("qwen25_7b",),)
    text_alignment = "end"

    def __init__(self, label, patch, downscale, refiners=2, image_first=True, prompt_last=False, extra_text=()):
        super().__init__(label, patch, downscale)
        self.refiners = refiners          # text refiner blocks: the first calls of every forward
        self.image_first = image_first    # 0.3.75's [ref | image | text]; else [text | ref | image]
        self.prompt_last = prompt_last    # 1.5: the conditioning's tokens end the text, after glyph / vision tokens
        self.extra_text = extra_text      # extra conds whose tokens the model adds to the text (byT5, SigLIP)

    @classmethod
    def matches(cls, base, dm):
        return image_model(base) in cls.image_models and getattr(dm, "vector_in", None) is None

    @classmethod
    def create(cls, base, dm):
        name = type(base).__name__
        fmt = type(base.latent_format).__name__
        down = int(getattr(base.latent_format, "spacial_downscale_ratio", DOWNSCALE.get(fmt, cls.default_downscale)))
        extra = tuple(key for key, module in (("txt_byt5", "byt5_in"), ("clip_fea", "vision_in"))
                      if getattr(dm, module, None) is not None)
        family = cls(cls.labels.get(name, name), dm.patch_size[-1], down, len(dm.txt_in.individual_token_refiner.blocks),
                     bool(dm.double_blocks) and getattr(dm.double_blocks[0], "flipped_img_txt", False),
                     getattr(dm, "cond_type_embedding", None) is not None, extra)
        if len(dm.patch_size) == 3:                    # a time axis: 4 frames per latent frame after the first
            family.temporal_downscale, family.patch_t = 4, dm.patch_size[0]
            if dm.img_in.proj.weight.shape[1] == 2 * base.latent_format.latent_channels + 1:  # latent, frames, mask
                family.unsupported = {trick: NO_INPAINTING for trick in ("painta", "rasg")}
        return family

    def layers(self, dm, latent_size):
        refiner = dm.txt_in.individual_token_refiner.blocks
        text = [Layer(f"txt_in.{i}", "text", b.heads, dm.hidden_size // b.heads, 0, (0, 0))
                for i, b in enumerate(refiner)]
        grid = self.image_grid(latent_size)
        return text + [Layer(f"{prefix}.{i}", "joint", heads, hd, math.prod(grid), grid)
                       for prefix, blocks, heads, hd in self.stacks(dm) for i in range(len(blocks))]

    def text_length(self, c_crossattn, extra_conds):
        """The joint calls' text tokens: the conditioning's, plus the glyph and vision tokens the model adds."""
        n = super().text_length(c_crossattn, extra_conds)
        for key in self.extra_text:
            t = extra_conds.get(key)
            n += t.shape[1] if t is not None else 0
        return n

    def describe(self, fwd, to, q_len, k_len):
        n = fwd.counters.get("calls", 0)
        fwd.counters["calls"] = n + 1
        if n < self.refiners:                          # the refiner: the conditioning's tokens alone
            fwd.counters["prompt"] = k_len
            return Call(f"txt_in.{n}", "text", slice(0, 0), slice(0, k_len), (0, 0))
        grid = self.image_grid(fwd.latent_size)
        n_img, n_txt = math.prod(grid), fwd.txt_len
        span = to.get("img_slice")
        if span is not None:                           # newer ComfyUI: [start, stop) of reference + image tokens
            start, stop = int(span[0]), int(span[1])
            img, txt = slice(stop - n_img, stop), (slice(0, start) if start > 0 else slice(stop, k_len))
        elif self.image_first:                         # 0.3.75: [ref | image | text]
            img, txt = slice(k_len - n_txt - n_img, k_len - n_txt), slice(k_len - n_txt, k_len)
        else:                                          # [text | ref | image]
            img, txt = slice(k_len - n_img, k_len), slice(0, n_txt)
        p = fwd.counters.get("prompt", n_txt)
        prompt = slice(txt.stop - p, txt.stop) if self.prompt_last else slice(txt.start, txt.start + p)
        block = f"{to.get('block_type', 'double')}.{to.get('block_index', 0)}"
        return Call(block, "joint", img, txt, grid, prompt=prompt)

    def inpaints(self, base):
        """HunyuanVideo 1.5's extra input channels carry image-to-video frames, not an inpainting mask; the 2.1
        refiner's the image it refines: the family inpaints with a latent noise mask only."""
        return False

    def default_size(self):
        return 2048 if not self.temporal_downscale else 1280
