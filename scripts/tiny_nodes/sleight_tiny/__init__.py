"""Stand-ins for the tiny test models, loaded only by the demo's and the tests' ComfyUI servers (never part of the pack).

The example workflows name the real models; `make demo` and tests/server swap them for the tiny ones. Two of those
swaps need a loader the stock nodes cannot be on ComfyUI 0.3.75:
- a diffusion model whose recipe shrinks sizes 0.3.75's detection fixes (Flux.2's heads, Qwen-Image's width):
  Sleight tiny diffusion model loads it with the recipe's config (scripts/tiny_models.py `load_with_config`;
  newer ComfyUI reads Flux.2's heads from the file itself);
- a language-model text encoder (Qwen3, Qwen2.5-VL): its tiny version is built in memory from ComfyUI's own
  classes (`text_encoder`), since a smaller file would leave the fixed-size encoder uninitialised.
"""
import sys
from pathlib import Path

import folder_paths

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))     # scripts/
import tiny_models  # noqa: E402


def _spec_of(unet_name):
    for spec in tiny_models.MODELS.values():
        if Path(spec.files.get("unet", "")).name == unet_name:
            return spec
    raise ValueError(f"{unet_name} is not one of Sleight's tiny models")


class SleightTinyDiffusionModel:
    CATEGORY = "sleight/testing"
    RETURN_TYPES = ("MODEL",)
    FUNCTION = "load"
    DESCRIPTION = "Test stand-in: a tiny diffusion model loaded with its recipe's config (UNETLoader's tiny twin)."

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"unet_name": (folder_paths.get_filename_list("diffusion_models"),)}}

    def load(self, unet_name):
        spec = _spec_of(unet_name)
        return (tiny_models.load_with_config(folder_paths.get_full_path_or_raise("diffusion_models", unet_name), spec),)


class SleightTinyTextEncoder:
    CATEGORY = "sleight/testing"
    RETURN_TYPES = ("CLIP",)
    FUNCTION = "load"
    DESCRIPTION = "Test stand-in: a tiny language-model text encoder built in memory (CLIPLoader's tiny twin)."

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"text_encoder": (sorted(tiny_models.TEXT_ENCODERS),)}}

    def load(self, text_encoder):
        return (tiny_models.text_encoder(text_encoder),)


NODE_CLASS_MAPPINGS = {"SleightTinyDiffusionModel": SleightTinyDiffusionModel,
                       "SleightTinyTextEncoder": SleightTinyTextEncoder}
NODE_DISPLAY_NAME_MAPPINGS = {"SleightTinyDiffusionModel": "Sleight tiny diffusion model (test stand-in)",
                              "SleightTinyTextEncoder": "Sleight tiny text encoder (test stand-in)"}
