"""A test-only node for the frontend tests' server: the tiny Qwen3 CLIP of tiny_models.text_encoder (ComfyUI's own
Z-Image encoder class at toy size, seeded random weights). A real CLIPLoader builds Qwen3-4B at its fixed full size,
so this node stands in for it; it is loaded only by tests/frontend (ComfyServer(custom_nodes_dir=...))."""
import sys
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parents[3] / "scripts"


class SleightTestTinyQwen3CLIP:
    CATEGORY = "sleight-tests"
    RETURN_TYPES = ("CLIP",)
    FUNCTION = "load"
    DESCRIPTION = "Tests only: a tiny Qwen3 text encoder (random weights) in place of Qwen3-4B."

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {}}

    def load(self):
        if str(SCRIPTS) not in sys.path:
            sys.path.insert(0, str(SCRIPTS))
        import tiny_models

        return (tiny_models.text_encoder("qwen3"),)


NODE_CLASS_MAPPINGS = {"SleightTestTinyQwen3CLIP": SleightTestTinyQwen3CLIP}
NODE_DISPLAY_NAME_MAPPINGS = {"SleightTestTinyQwen3CLIP": "Sleight tests · tiny Qwen3 CLIP"}
