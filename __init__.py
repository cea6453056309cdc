"""Sleight: training-free editing and sampling tricks from recent papers, as ComfyUI nodes.

@author: Sleight developers
@title: Sleight
@nickname: Sleight
@description: APG, prompt routing into layers, Add-it, DesignEdit, HD-Painter, Rare-to-Frequent and inference-time search on SD1.5, SDXL, SD3 and Flux.
"""
import sys

WEB_DIRECTORY = "./web"


def _prompt_server():
    """ComfyUI's running PromptServer (main.py imports `server` and creates it before loading custom nodes), or
    None where the pack is loaded without a server (tests, scripts)."""
    return getattr(getattr(sys.modules.get("server"), "PromptServer", None), "instance", None)


async def comfy_entrypoint():
    # Imported here so that `import sleight` (tests, scripts) never needs comfy_api.
    from .nodes import SleightExtension, block_picker

    server = _prompt_server()
    if server is not None:
        block_picker.register(server.routes)
    return SleightExtension()
