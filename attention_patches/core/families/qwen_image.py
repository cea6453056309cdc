"""Qwen-Image family: Qwen-Image and Qwen-Image-Edit (comfy/ldm/qwen_image, image_model "qwen_image").

Block ids `double.i` as ComfyUI writes them (one stack of dual-stream blocks, `transformer_blocks` in the model).
Joint attention `[txt | img | reference images]` after RoPE in (B, H, L, D); the edit model's reference
images are more image tokens after the generated ones. The text encoder (Qwen2.5-VL) drops its chat-template
prefix, so a prompt's tokens line up with the text sequence's end.
"""
from .flux import Flux


class QwenImage(Flux):
    key = "qwen_image"
    models = "Qwen-Image (incl. Qwen-Image-Edit)"
    image_models = ("qwen_image",)
    labels = {"QwenImage": "Qwen-Image"}
    text_groups = (("qwen25_7b",),)
    text_alignment = "end"

    def stacks(self, dm):
        attn = dm.transformer_blocks[0].attn
        return [("double", dm.transformer_blocks, attn.heads, attn.dim_head)]
