"""The ComfyUI internals Sleight uses where ComfyUI has no public hook, all in this one module.

Everything else in the pack goes through public paths: ModelPatcher wrappers and callbacks (WrappersMP /
CallbacksMP), model_options functions, `comfy.samplers.calc_cond_batch`, `comfy.sample.*`, `model_sampling`.
Two jobs need more than that:
- search over paths (samplers/search.py) runs the user's k-diffusion sampler in segments and keeps the x-space
  state between them (re-noising and pruning in between), which is `KSAMPLER.sample`'s loop without its noise
  scaling at both ends;
- DesignEdit (samplers/designedit.py) restarts the sampler at an edited x-space state through the public
  SAMPLER_SAMPLE wrapper, which needs the noise scaling `KSAMPLER.sample` applies first.

PINNED lists every symbol used here with the parameters it must take; tests/comfy/test_comfy_compat.py checks
them on the running ComfyUI and checks `run_steps` against `KSAMPLER.sample` bit for bit, so an upstream change
fails loudly there instead of silently changing results. Read unchanged in ComfyUI 0.38.1 (docs/COMPATIBILITY.md).
"""
import torch

import comfy.samplers

# symbol -> parameter names it must accept, in order (a later parameter with a default may follow)
PINNED = {
    "comfy.samplers.Sampler.max_denoise": ("self", "model_wrap", "sigmas"),
    "comfy.samplers.KSAMPLER.__init__": ("self", "sampler_function", "extra_options", "inpaint_options"),
    "comfy.samplers.KSAMPLER.sample": ("self", "model_wrap", "sigmas", "extra_args", "callback", "noise",
                                       "latent_image", "denoise_mask", "disable_pbar"),
    "comfy.samplers.KSamplerX0Inpaint.__init__": ("self", "model", "sigmas"),
    "comfy.samplers.KSamplerX0Inpaint.__call__": ("self", "x", "sigma", "denoise_mask", "model_options", "seed"),
    "comfy.model_sampling.EPS.noise_scaling": ("self", "sigma", "noise", "latent_image", "max_denoise"),
    "comfy.model_sampling.CONST.noise_scaling": ("self", "sigma", "noise", "latent_image", "max_denoise"),
    "comfy.samplers._calc_cond_batch": ("model", "conds", "x_in", "timestep", "model_options"),
}


def sampler_function(sampler):
    """The k-diffusion function a KSAMPLER (KSamplerSelect and friends) runs, or None for other samplers."""
    return getattr(sampler, "sampler_function", None)


def sampler_name(sampler) -> str:
    fn = sampler_function(sampler)
    return getattr(fn, "__name__", None) or getattr(getattr(fn, "func", None), "__name__", "") or ""


def start_state(sampler, model_wrap, sigmas, noise, latent_image):
    """The x-space state KSAMPLER.sample starts its loop from."""
    max_denoise = sampler.max_denoise(model_wrap, sigmas)
    return model_wrap.inner_model.model_sampling.noise_scaling(sigmas[0], noise, latent_image, max_denoise)


def run_steps(sampler, model_wrap, sigmas, x, extra_args, callback=None, noise=None, latent_image=None,
              denoise_mask=None, schedule=None):
    """KSAMPLER.sample's loop over `sigmas` from the x-space state `x`, without its noise scaling at either end,
    so segments chain exactly. `noise` / `latent_image` are what its inpainting wrapper keeps the known region
    with; `schedule` is the whole run's sigmas a denoise_mask_function sees (default: `sigmas`); `callback` gets
    k-diffusion's dict ({"i", "denoised", "x", ...})."""
    model_k = comfy.samplers.KSamplerX0Inpaint(model_wrap, sigmas if schedule is None else schedule)
    model_k.latent_image = latent_image
    model_k.noise = noise
    args = dict(extra_args)
    args["denoise_mask"] = denoise_mask
    return sampler.sampler_function(model_k, x, sigmas, extra_args=args, callback=callback, disable=True,
                                    **sampler.extra_options)


def noise_for_state(sampler, model_wrap, sigmas, x):
    """(noise, latent_image) with which KSAMPLER.sample (or any wrapper chain around it) starts at the x-space
    state `x`: it begins with noise_scaling(σ0, noise, latent_image, max_denoise)."""
    ms = model_wrap.inner_model.model_sampling
    max_denoise = sampler.max_denoise(model_wrap, sigmas) if hasattr(sampler, "max_denoise") else False
    unit = ms.noise_scaling(sigmas[0], torch.ones_like(x), torch.zeros_like(x), max_denoise)
    return x / unit, torch.zeros_like(x)


def state_after(model_sampling, sigmas, samples):
    """The x-space state at sigmas[-1] of what KSAMPLER.sample returned (it ends with inverse_noise_scaling)."""
    return model_sampling.noise_scaling(sigmas[-1], torch.zeros_like(samples), samples)


def calc_cond_batch_unwrapped(model, conds, x, sigma, model_options):
    """ComfyUI's batched evaluation without the CALC_COND_BATCH wrappers (what a pack's own
    sampler_calc_cond_batch_function may call; tests use it to behave like one)."""
    return comfy.samplers._calc_cond_batch(model, conds, x, sigma, model_options)

