"""Chroma family: Chroma and the pixel-space Chroma Radiance (comfy/ldm/chroma, chroma_radiance; image_model
"chroma" / "chroma_radiance"): Flux.1's double / single blocks without per-block modulation (a distilled
approximator makes the modulation vectors).

Block ids `double.i` / `single.i` as ComfyUI writes them; joint attention `[txt | img]`; T5 text with its padding
mask passed to attention. Chroma Radiance has no latent space: its "latent" is the image, cut into 16×16 patches.
"""
from .flux import Flux


class Chroma(Flux):
    key = "chroma"
    models = "Chroma (incl. Chroma Radiance)"
    image_models = ("chroma", "chroma_radiance")
    labels = {"ChromaRadiance": "Chroma Radiance"}

    @classmethod
    def create(cls, base, dm):
        pixels = type(base.latent_format).__name__ == "ChromaRadiance"      # the image itself, 3 channels
        name = type(base).__name__
        return cls(cls.labels.get(name, name), dm.patch_size, 1 if pixels else cls.downscale_of(base))
