"""Sleight: training-free editing and sampling tricks from recent papers, as ComfyUI nodes.

@author: Sleight developers
@title: Sleight
@nickname: Sleight
@description: APG, prompt routing into layers, Add-it, DesignEdit, HD-Painter, Rare-to-Frequent and inference-time search on SD1.5, SDXL, SD3 and Flux.
"""

WEB_DIRECTORY = "./web"


async def comfy_entrypoint():
    # Imported here so that `import sleight` (tests, scripts) never needs comfy_api.
    from .nodes import SleightExtension

    return SleightExtension()
