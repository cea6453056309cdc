"""DesignEdit at sampler level: the background row starts on the source trajectory, is blended with it outside
the removal mask, pulled towards it (proximal guidance), and receives the foreground layers at the fusion step.

Official schedule (design-edit/DesignEdit, SDXL, DDIM 50 steps; `LayerFusion`, `proximal_guidance`):
- start: every row starts from the inverted x_T;
- blending, after steps 0..40 (the latents entering steps 1..41): x_bg = x_bg·M + x_src·(1 − M);
- fusion, entering step 42: canvas = bg·(1 − m_fg) + fg·m_fg in z-order; the last 8 steps run free;
- proximal guidance, after every step with t < 400: x ← x − 0.1·(x − x*_next)·(1 − M) on the background row
  (only the removal output shows it: blending overwrites it before step 42, the canvas row is exempt).
The source row of the official code is a reconstruction pulled towards x*_t; here it is the trajectory
itself (`source_at`: the inverted x*_t, or the clean source re-noised with its fixed noise), so no model
evaluation is spent on it.

How: a SAMPLER_SAMPLE wrapper runs the sampler in segments between the steps where the latent is edited and
edits the latent in between (sampler-agnostic; multistep samplers restart their history at each edit, so use
DDIM/Euler as the paper does). Stochastic samplers get seed + first step per segment.
"""
from dataclasses import dataclass, field, replace

import torch

import comfy.model_management

from ..attention_patches.core import comfy_compat, hooks, schedule
from . import fusion

KEY = "sleight.designedit"


@dataclass(frozen=True)
class Plan:
    trajectory: object                  # samplers.trajectory.SourceTrajectory
    mask: torch.Tensor                  # (1, 1, h, w) removal mask on the latent grid (dilated; 1 = inpaint)
    blend: schedule.StepWindow = schedule.StepWindow(0.0, 0.82)   # states entering steps 0..41 of 50
    proximal_strength: float = 0.1
    proximal_percent: float = 0.6       # t < 400 of 1000 ⇔ model percent > 0.6
    layers: tuple = field(default_factory=tuple)   # fusion.Layer, in z-order (last on top)
    who: str = "Sleight · DesignEdit remove"


def source_at(trajectory, model_sampling, sigma, like: torch.Tensor, who="Sleight · DesignEdit") -> torch.Tensor:
    """The source latent at `sigma`, shaped and placed like `like` (the one place DesignEdit reads a trajectory)."""
    s = float(sigma)
    try:
        x = trajectory.clean if s == 0.0 else trajectory.at(model_sampling, s)     # x*_0 is the clean source
    except ValueError as e:
        raise ValueError(f"{who}: {e}") from None
    x = x.to(device=like.device, dtype=like.dtype)
    return x.expand(like.shape[0], *x.shape[1:]) if x.shape[0] == 1 else x


def source_noise(trajectory, model_sampling, sigma, like):
    """ε with noise_scaling(σ, ε, clean) = source(σ): the source's own noise at σ (layers are re-noised with it)."""
    s = torch.tensor([float(sigma)])
    src = source_at(trajectory, model_sampling, s, like)
    clean = trajectory.clean.to(like).expand_as(src)
    base = model_sampling.noise_scaling(s, torch.zeros_like(src), clean.clone())
    unit = model_sampling.noise_scaling(s, torch.ones_like(src), torch.zeros_like(src))
    return (src - base) / unit


def edits(plan: Plan, sigmas: torch.Tensor, model_sampling) -> dict:
    """step j (the state entering step j, j = 1..N) → the edits applied to it, in order."""
    n = len(sigmas) - 1
    prox_sigma = float(model_sampling.percent_to_sigma(plan.proximal_percent))
    fusion_step = None
    if plan.layers:
        later = [j for j in range(1, n + 1) if not plan.blend.contains_step(j, n)]
        if not later or later[0] >= n:
            raise ValueError(f"{plan.who}: with {n} steps no step is left after the blending window "
                             f"(up to {plan.blend.end:.0%} of the steps) to fuse the layers and harmonise them. "
                             "Use more steps (the paper: 50) or end the blending earlier.")
        fusion_step = later[0]
    out = {}
    for j in range(1, n + 1):
        todo = []
        if not plan.layers and plan.proximal_strength > 0 and float(sigmas[j - 1]) < prox_sigma:
            todo.append("proximal")
        if plan.blend.contains_step(j, n):
            todo.append("blend")
        if j == fusion_step:
            todo.append("fuse")
        if todo:
            out[j] = todo
    return out


def _apply(plan: Plan, todo, x, sigma, model_sampling):
    m = plan.mask.to(x)
    if "proximal" in todo or "blend" in todo:
        src = source_at(plan.trajectory, model_sampling, sigma, x, plan.who)
        if "proximal" in todo:
            x = x - plan.proximal_strength * (x - src) * (1.0 - m)
        if "blend" in todo:
            x = x * m + src * (1.0 - m)
    if "fuse" in todo:
        eps = source_noise(plan.trajectory, model_sampling, sigma, x[:1])
        s = torch.tensor([float(sigma)])
        pasted = []
        for layer in plan.layers:
            noisy = model_sampling.noise_scaling(s, eps.clone(), layer.latent.to(eps).clone())
            pasted.append(fusion.transform(layer, noisy))
        x = fusion.fuse(x, pasted)
    return x


def _segments(n, points):
    bounds = [0] + sorted(j for j in points if 0 < j < n) + [n]
    return list(zip(bounds[:-1], bounds[1:]))


def make_wrapper(plan: Plan):
    def sampler_sample(executor, guider, sigmas, extra_args, callback, noise, latent_image=None,
                       denoise_mask=None, disable_pbar=False, *args, **kwargs):
        if denoise_mask is not None:
            raise ValueError(f"{plan.who}: the latent carries a noise mask (Set Latent Noise Mask / inpaint "
                             "encode). DesignEdit masks by itself: sample the plain latent.")
        ms = guider.inner_model.model_sampling
        clean = plan.trajectory.clean
        if tuple(noise.shape[1:]) != tuple(clean.shape[1:]):
            raise ValueError(f"{plan.who}: the sampled latent {tuple(noise.shape[1:])} differs from the source "
                             f"{tuple(clean.shape[1:])}. Sample a latent of the source image's size.")
        n = len(sigmas) - 1
        todo = edits(plan, sigmas, ms)
        x = source_at(plan.trajectory, ms, sigmas[0], noise, plan.who)
        seed = extra_args.get("seed")
        for a, b in _segments(n, todo):
            comfy.model_management.throw_exception_if_processing_interrupted()
            seg = sigmas[a:b + 1]
            start_noise, start_latent = comfy_compat.noise_for_state(executor.class_obj, guider, seg, x)
            extra = dict(extra_args)
            if seed is not None:
                extra["seed"] = seed + a
            cb = None
            if callback is not None:
                cb = (lambda off: (lambda i, x0, xi, total: callback(i + off, x0, xi, n)))(a)
            out = executor(guider, seg, extra, cb, start_noise, start_latent, None, True, *args, **kwargs)
            x = comfy_compat.state_after(ms, seg, out)
            if b in todo:
                x = _apply(plan, todo[b], x, sigmas[b], ms)
        return ms.inverse_noise_scaling(sigmas[-1], x)

    sampler_sample.sleight_plan = plan
    return sampler_sample


def install(model, plan: Plan):
    """Run `plan` whenever the clone `model` is sampled (replaces an earlier DesignEdit plan on it)."""
    hooks.replace_wrapper(model, hooks.WRAPPERS.SAMPLER_SAMPLE, KEY, make_wrapper(plan))
    return plan


def current_plan(model):
    for fn in model.get_wrappers(hooks.WRAPPERS.SAMPLER_SAMPLE, KEY):
        plan = getattr(fn, "sleight_plan", None)
        if plan is not None:
            return plan
    return None


def with_layers(plan: Plan, layers) -> Plan:
    return replace(plan, layers=tuple(plan.layers) + tuple(layers))
