"""Add-it at sampler level (Tewel et al., ICLR 2025): the source row in lockstep, structure transfer, auto γ,
subject-guided latent blending. The attention side is attention_patches/extended.py.

Timing as fractions of the step count (paper, 30 steps): extended attention in double-stream layers for steps
0–10, single-stream 0–20 (the official code's inclusive `extend_start <= step <= extend_end`; an end of 0 is off); structure transfer at 2/30 (generated) or 4/30 (real); subject maps
recorded at steps b−2..b and the latents blended right after step b, b = 15/30 (generated) or 18/30 (real).
A fraction ≥ 1 switches that part off.

The blend mask of a run travels with that run's output latent (`MASK_ATTR` on the samples tensor, read by
Sleight · Add-it mask), so the mask node shows the mask of *its* sampler's run.
"""
import logging

import torch

import comfy.model_management
import comfy.samplers

from ..attention_patches import extended
from ..attention_patches.core import families, hooks, masks, router, schedule
from . import trajectory as traj

log = logging.getLogger("sleight")
MASK_ATTR = "sleight_addit_mask"   # on the sampler's output samples tensor: {"mask": (B,1,h,w) or None}
MASK_KEY = "sleight.addit.mask"    # wrapper key of the hook that puts it there


class AddItSettings:
    def __init__(self, gamma, double_end, single_end, structure_at, blend_at, dilation=1, user_mask=None,
                 auto_at=None):
        self.gamma, self.double_end, self.single_end = gamma, double_end, single_end
        self.auto_at = auto_at     # auto γ: the step fraction it is solved at (official 5/30), None = fixed γ
        self.structure_at, self.blend_at, self.dilation, self.user_mask = structure_at, blend_at, dilation, user_mask


def paper_defaults(real: bool) -> dict:
    return {"gamma": 1.1 if real else 1.05, "structure_at": (4 if real else 2) / 30, "blend_at": (18 if real else 15) / 30,
            "auto_at": 5 / 30}


def install(model, source, positions, settings: AddItSettings, own_text_len=None, who="Sleight · Add-it"):
    """Add-it on a clone of `model`; returns (clone, effect)."""
    m = model.clone()
    family = families.detect(m, who)
    found = families.layers(m, 64, 64, family)
    windows, record, ratio = family.addit_layers(found, settings.double_end, settings.single_end)
    clean = source.clean
    latent_hw = tuple(clean.shape[-2:])
    effect = extended.AddItAttention(settings.gamma, windows, record, ratio, positions,
                                     family.addit_map_grid(latent_hw), own_text_len)
    ext_end = max(settings.double_end, settings.single_end)

    def before_source(run, x, timestep):
        st = effect.state(run.state)
        st.cache.clear()                         # the source K/V of the previous evaluation
        total = len(run.sigmas) - 1
        if "init" not in run.done:
            run.done.add("init")
            b = schedule.step_at(settings.blend_at, total)
            st.record_steps = set(range(b - 2, b + 1)) if settings.user_mask is None and b + 1 < total else set()
        i, exact = run.step_of(timestep)
        if not exact or ("step", i) in run.done:
            return
        run.done.add(("step", i))
        sigma = run.sigmas[i].reshape(1).to(x)
        if i == schedule.step_at(settings.structure_at, total) and i < total:
            # structure transfer: x_tgt ← clean source re-noised with the target's own noise (official code)
            x.copy_(run.model_sampling.noise_scaling(sigma, run.noise.to(x), clean.to(x)))
        b = schedule.step_at(settings.blend_at, total)
        if i == b + 1 and i < total:
            mask = _blend_mask(st, settings, latent_hw, x.shape[0], who)
            if mask is not None:
                st.mask = mask.cpu()
                mask = masks.for_latent(mask.to(x), x)
                src = run.source_at(timestep, x)
                x.copy_(mask * x + (1 - mask) * src)   # x_tgt = m·x_tgt + (1 − m)·x_src

    def active(run, timestep):
        """The source row runs in the extended-attention window, unless the target carries a reference image
        (an edit model's own source path: the effect takes its tokens from the target's call)."""
        i, _ = run.step_of(timestep)
        return not _has_references(run.guider) and i <= schedule.last_step(ext_end, len(run.sigmas) - 1)

    def after_source(run, x, timestep, model_options):
        if settings.auto_at is None:
            return
        i, exact = run.step_of(timestep)
        if not exact or i != schedule.step_at(settings.auto_at, len(run.sigmas) - 1) or ("auto", i) in run.done:
            return
        run.done.add(("auto", i))
        positive = run.guider.conds.get("positive")
        if positive is None:
            raise ValueError(f"{who}: auto gamma needs a sampler with a positive conditioning (KSampler, "
                             "SamplerCustom); set gamma by hand with this guider.")
        st = effect.state(run.state)

        def forward():      # one full forward of the target's cond rows at this step (each brentq probe)
            comfy.samplers.calc_cond_batch(run.guider.inner_model, [positive], x, timestep, model_options)

        st.auto = extended.solve_gamma(lambda g: effect.ratio_at(st, g, forward))
        st.gamma = st.auto[0]
        log.info("%s: auto gamma %.4f (text→target / text→source mass %.4f, target %.2f)", who, st.auto[0],
                 st.auto[1], extended.AUTO_RATIO)

    traj.add_source_row(m, source, active, before_source, who=who, after_source=after_source)
    router.install(m, effect, who)

    def check(run):            # a mask that cannot fit the batch fails before sampling, not at the blend step
        if settings.user_mask is not None and run.latent_image is not None:
            _user_mask(settings, run.latent_image.shape[0], who)

    hooks.on_run(m, MASK_KEY, start=check, after=lambda run, out: _attach_mask(out, effect.state(run).mask))
    return m, effect


def _has_references(guider) -> bool:
    return any("reference_latents" in c for c in guider.conds.get("positive", []) or [])


def _user_mask(settings, batch, who):
    """The node's mask for a batch of `batch` images: one mask for all, or one per image."""
    mask = settings.user_mask
    if mask.shape[0] not in (1, batch):
        raise ValueError(f"{who}: the mask holds {mask.shape[0]} masks but the sampler makes {batch} images; "
                         "give one mask or one per image.")
    return mask.expand(batch, -1, -1, -1) if mask.shape[0] == 1 else mask


def _blend_mask(st, settings, latent_hw, batch, who):
    if settings.user_mask is not None:
        return _user_mask(settings, batch, who)
    maps = st.take_mask_maps()
    if maps is None:
        return None
    if maps.shape[0] not in (1, batch):
        return None
    mask = extended.attention_mask(maps, latent_hw, settings.dilation)
    return mask.expand(batch, -1, -1, -1) if mask.shape[0] == 1 else mask


def _attach_mask(samples, mask):
    """The run's output on the device ComfyUI hands latents on with, carrying its blend mask (None: no blend)."""
    out = samples.to(comfy.model_management.intermediate_device())
    setattr(out, MASK_ATTR, {"mask": mask})
    return out


def run_mask(samples, downscale: int, who: str):
    """The blend mask (B, H, W) of the Add-it run that made `samples`: all white where no blending ran."""
    record = getattr(samples, MASK_ATTR, None)
    if record is None:
        raise ValueError(f"{who}: these latents were not sampled with a Sleight · Add-it model; connect the "
                         "LATENT output of the sampler that used the Add-it model (directly, not through "
                         "another node).")
    if record["mask"] is None:
        h, w = samples.shape[-2:]
        return torch.ones(samples.shape[0], h * downscale, w * downscale)
    return masks.latent_to_pixel(record["mask"], downscale)
