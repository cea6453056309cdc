"""Loading the tiny models once per session and sampling them the way KSampler does."""
import collections
import ctypes
import gc
import sys

import torch

import tiny_models

ARCH_MODELS = ["sd15", "sdxl", "sd3", "flux_dev_narrow"]          # one model per architecture
ALL_SIX = ["sd15", "sd15_inpaint", "sdxl", "sd3", "flux_dev_narrow", "flux_schnell_narrow"]
WITH_SD35 = ALL_SIX + ["sd35"]
# the tiny model each family adapter's battery runs on (tests/comfy/test_families.py); one per registered family,
# or a tuple where one adapter serves models of different shapes (HunyuanVideo: an image and a video model)
FAMILY_MODELS = {"unet": "sd15", "mmdit": "sd3", "flux": "flux_dev_narrow", "flux2": "flux2", "chroma": "chroma",
                 "qwen_image": "qwen_image", "lumina2": "zimage", "hidream": "hidream", "wan": "wan21_t2v",
                 "hunyuan_video": ("hunyuan_image", "hunyuan_video15")}


def family_models(key) -> tuple:
    """The tiny models of a family's battery."""
    names = FAMILY_MODELS[key]
    return (names,) if isinstance(names, str) else tuple(names)
FRAMES = 5                                                  # video models: 5 frames = 2 latent frames


# Weights the session keeps loaded (an LRU of three models once held three SDXL- or Flux-sized ones: the suite peaked
# at 14.5 GB). With the text encoders read shallow and Flux.1 narrow, the largest (sdxl_layout) weighs 1.4 GB.
BUDGET = 3.5 * 2 ** 30
# The CLIP text encoders are read at their first 3 layers (the fewest that still have the penultimate layer SDXL and
# SD3 take): the tiny models' encoders are full size, and encoding was most of the SD1.5 / SDXL tests' time.
TEXT_LAYERS = 3
_loaded = collections.OrderedDict()      # name -> ((model, clip, vae), bytes of weights), least recently used first


def weight_bytes(loaded):
    model, clip, vae = loaded
    modules = [model.model, clip.cond_stage_model if clip is not None else None,
               vae.first_stage_model if vae is not None else None]
    return sum(t.numel() * t.element_size() for m in modules if m is not None for t in m.state_dict().values())


def load(name):
    """(model, clip, vae) of a tiny model, loaded once and kept while the weights kept stay within BUDGET."""
    if name in _loaded:
        _loaded.move_to_end(name)
        return _loaded[name][0]
    loaded = fresh(name)
    _loaded[name] = (loaded, weight_bytes(loaded))
    evicted = False
    while len(_loaded) > 1 and sum(size for _, size in _loaded.values()) > BUDGET:
        _loaded.popitem(last=False)
        evicted = True
    if evicted:
        release()
    return loaded


def fresh(name):
    """A new (model, clip, vae) of a tiny model as the tests load it, outside the shared ones."""
    tiny_models.ensure_models(names=[name])
    return tiny_models.load(name, text_layers=TEXT_LAYERS)


def unload_all():
    _loaded.clear()
    release()


def release():
    """Free what dropped models held: collect their reference cycles, then hand freed heap back to the OS."""
    gc.collect()
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None).malloc_trim(0)


def encode(clip, text):
    return tiny_models.encode(clip, text)


def latent_for(model, batch=1, size=64, frames=FRAMES):
    """An empty latent of a size×size image (or a video of `frames` frames), as the family's Empty Latent node
    makes it."""
    import comfy.sample
    from sleight.attention_patches.core import families

    size = families.detect(model).latent_size(size, size, frames)
    return comfy.sample.fix_empty_latent_channels(model, torch.zeros([batch, 4, *size]))


def text_seen_by_model(model, clip, prompt):
    """The text sequence (c_crossattn) the diffusion model receives for this prompt, as the positive of one step."""
    seen = []

    def spy(executor, x, t, c_concat=None, c_crossattn=None, control=None, transformer_options={}, **kwargs):
        seen.append(c_crossattn)
        return executor(x, t, c_concat, c_crossattn, control, transformer_options, **kwargs)

    import comfy.patcher_extension as pe
    import comfy.sample

    m = model.clone()
    m.add_wrapper_with_key(pe.WrappersMP.APPLY_MODEL, "test.spy", spy)
    latent = latent_for(m)
    comfy.sample.sample(m, comfy.sample.prepare_noise(latent, 0), 1, 1.0, "euler", "normal", encode(clip, prompt),
                        encode(clip, prompt), latent, disable_pbar=True, seed=0)
    return seen[0][0]


def sample(model, positive, negative, cfg=3.0, steps=3, batch=1, size=64, seed=7, callback=None, sampler="euler"):
    import comfy.sample

    latent = latent_for(model, batch, size)
    noise = comfy.sample.prepare_noise(latent, seed)
    return comfy.sample.sample(model, noise, steps, cfg, sampler, "normal", positive, negative, latent,
                               denoise=1.0, disable_pbar=True, seed=seed, callback=callback)


class Probe:
    """A router effect that records every call it sees and changes nothing (or scales the output)."""

    order = 90

    def __init__(self, scale=None, where=lambda call: True):
        self.calls = []          # every call, as the router describes it
        self.ran = []            # the calls this probe ran on, as earlier effects handed them on
        self.scale = scale
        self.where = where

    def applies(self, call):
        self.calls.append(call)
        return self.where(call)

    def run(self, call, attend):
        self.ran.append(call)
        out = attend(call)
        return out if self.scale is None else out * self.scale

    def forwards(self):
        """Calls grouped per model forward, in order."""
        groups = []
        for c in self.calls:
            if not groups or groups[-1][-1].forward is not c.forward:
                groups.append([])
            groups[-1].append(c)
        return groups
