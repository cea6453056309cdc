"""Flux.2 family: Flux.2 dev (and Klein, which only newer ComfyUI loads): ComfyUI runs it with the same `Flux` class
as Flux.1, with image_model "flux2" (global modulation, SwiGLU, no biases, 128 latent channels).

Block ids `double.i` / `single.i` as ComfyUI writes them. Joint attention `[txt | img | reference images]`; the
text is left-padded to 512 tokens (model_base.Flux2.extra_conds), so a prompt's tokens line up with the text
sequence's end. Latents are 1/16 of the image (patch 1); 0.3.75's latent format does not say so, hence
`default_downscale`.
"""
from .flux import Flux


class Flux2(Flux):
    key = "flux2"
    models = "Flux.2 (dev, Klein)"
    image_models = ("flux2",)
    labels = {"Flux2": "Flux.2"}
    text_groups = (("mistral3_24b", "qwen3_8b", "qwen3_4b"),)
    text_alignment = "end"
    default_downscale = 16
