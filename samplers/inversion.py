"""Inversion of a clean latent along a sampling schedule: DDIM (ε / v models) and rectified flow (SD3, Flux).

One update covers every model type, because ComfyUI's k-diffusion space makes them the same ODE step:
`d = (x − D(x, σ)) / σ` is ε for ε/v models (DDIM ≡ Euler in σ-space) and the velocity ε − x0 for flow models.
Sampling with Euler goes σ_i → σ_{i+1} (σ_{i+1} < σ_i) by `x_{i+1} = x_i + (σ_{i+1} − σ_i)·d(x_i, σ_i)`.
Inversion solves that step backwards for x_i:

    x_i = x_{i+1} − (σ_{i+1} − σ_i)·d(x_i, σ_i)

Plain DDIM inversion (diffusers' DDIMInverseScheduler) takes d at the known lower-noise latent and the higher
sigma, `d(x_{i+1}, σ_i)`; `fixed_point_iterations` n re-evaluates d at the new estimate n more times
(Add-it inverts with 2, as in its `call_invert`), which converges to the exact inverse of the Euler step.

The model runs through ComfyUI's own sampler machinery (a KSAMPLER on the reversed schedule, cfg 1), so
conditioning, model patches, loading and previews work as in any sampler. Latents are recorded in model
space (after `process_latent_in`) on the CPU, as a `trajectory.SourceTrajectory`.
"""
import torch

import comfy.model_management
import comfy.model_sampling
import comfy.sample
import comfy.samplers
import comfy.utils

from .trajectory import SourceTrajectory


def schedule_sigmas(model, steps: int, scheduler: str, denoise: float = 1.0):
    """The sigmas KSampler would use for (steps, scheduler, denoise), descending and ending at 0."""
    sampler = comfy.samplers.KSampler(model, steps=steps, device="cpu", scheduler=scheduler, denoise=denoise,
                                      model_options=model.model_options)
    return sampler.sigmas.float().cpu()


def _inversion_function(sigmas_desc, fixed_point_iterations, record):
    """A KSAMPLER function walking the ascending schedule; `record(i, x)` gets x at sigmas_desc[i]."""

    def invert(model, x, sigmas, extra_args=None, callback=None, disable=None):
        extra_args = {} if extra_args is None else extra_args
        s_in = x.new_ones([x.shape[0]])
        n = len(sigmas_desc) - 1
        bar = comfy.utils.ProgressBar(n)
        record(n, x)
        for i in range(n - 1, -1, -1):          # from σ_n (the clean end) up to σ_0
            comfy.model_management.throw_exception_if_processing_interrupted()
            lo, hi = float(sigmas_desc[i + 1]), float(sigmas_desc[i])
            x_lo, x_hi = x, x
            for _ in range(1 + fixed_point_iterations):
                denoised = model(x_hi, hi * s_in, **extra_args)
                d = (x_hi - denoised) / hi
                x_hi = x_lo + (hi - lo) * d      # x_i = x_{i+1} − (σ_{i+1} − σ_i)·d(x_i, σ_i)
            x = x_hi
            record(i, x)
            if callback is not None:
                callback({"x": x, "i": n - 1 - i, "sigma": hi, "sigma_hat": hi, "denoised": denoised})
            bar.update(1)
        return x

    return invert


def invert(model, latent_samples, conditioning, sigmas, fixed_point_iterations: int = 0,
           who: str = "Sleight · Invert") -> SourceTrajectory:
    """Invert one clean latent (LATENT["samples"], shape (1, C, H, W)) along `sigmas` (descending, the schedule
    the edit will sample with) under `conditioning` at cfg 1. Returns an inverted SourceTrajectory whose
    latents[i] is the noisy latent at sigmas[i] (model space, CPU); latents[-1] is the clean latent itself."""
    if latent_samples.shape[0] != 1:
        raise ValueError(f"{who}: the latent holds {latent_samples.shape[0]} images; invert one image at a time "
                         "(split the batch with Latent From Batch).")
    sigmas = torch.as_tensor(sigmas).float().cpu().flatten()
    if len(sigmas) < 2 or bool((sigmas[1:] > sigmas[:-1]).any()):
        raise ValueError(f"{who}: sigmas must be a descending schedule of at least one step (e.g. from "
                         "BasicScheduler).")
    if float(sigmas[-1]) != 0.0 and float(sigmas[-1]) < 0:
        raise ValueError(f"{who}: sigmas must not be negative.")
    if fixed_point_iterations < 0:
        raise ValueError(f"{who}: fixed_point_iterations must be 0 or more (Add-it uses 2).")
    n = len(sigmas) - 1
    recorded = [None] * (n + 1)

    def record(i, x):
        recorded[i] = x.detach().float().cpu().clone()

    latent = comfy.sample.fix_empty_latent_channels(model, latent_samples)
    ascending = torch.flip(sigmas, [0])
    sampler = comfy.samplers.KSAMPLER(_inversion_function(sigmas, fixed_point_iterations, record))
    # noise_scaling(σ=ascending[0], zeros, latent) is the latent itself when the schedule ends at σ = 0
    noise = torch.zeros_like(latent)
    with torch.no_grad():
        comfy.sample.sample_custom(model, noise, 1.0, sampler, ascending, conditioning, conditioning, latent,
                                   disable_pbar=True, seed=0)
    if any(r is None for r in recorded):
        raise RuntimeError(f"{who}: the inversion did not run every step")
    return SourceTrajectory(recorded[-1], conditioning, sigmas=sigmas, latents=recorded)


def start_noise_and_latent(model, trajectory: SourceTrajectory):
    """(noise, latent_image) that make a KSAMPLER start exactly at the trajectory's first latent (at sigmas[0]):
    ε/v models: noise 0 and latent x_T (x = latent + σ·0); flow models: x_T for both (x = σ·x_T + (1−σ)·x_T).
    `latent_image` is in LATENT space (process_latent_out applied), ready for a sampler node."""
    x_t = trajectory.latents[0]
    base = model.model
    latent = base.process_latent_out(x_t.clone())
    flow = isinstance(base.model_sampling, comfy.model_sampling.CONST)
    noise = x_t.clone() if flow else torch.zeros_like(x_t)
    return noise, latent
