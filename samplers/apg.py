"""APG, adaptive projected guidance (Sadat, Hilliges, Weber, ICLR 2025, Algorithm 1), in x0 space.

    ΔD_t   = D_c − D_u
    ΔD^m_t = ΔD_t + β·ΔD^m_{t−1}                 (reverse momentum, β < 0; reset every run)
    ΔD     = ΔD^m · min(1, r / ‖ΔD^m‖)            (norm over all non-batch dims, per sample)
    ΔD_∥   = (⟨ΔD, D_c⟩ / ⟨D_c, D_c⟩)·D_c,  ΔD_⊥ = ΔD − ΔD_∥
    D̂      = D_c + (w − 1)·(ΔD_⊥ + η·ΔD_∥)
Paper defaults (SDXL, Table 10): η = 0, β = −0.5, r = 15.

`apg_x0` is the pure maths; `make_pre_cfg` turns it into a ComfyUI `sampler_pre_cfg_function`, whose
`conds_out` already hold x0 (denoised) predictions for every model type, EPS and flow alike.
"""
import logging
import math
from dataclasses import dataclass

import torch

from ..attention_patches.core import runstate, schedule

log = logging.getLogger("sleight")

KEY = "sleight.apg"               # wrapper key of its per-run state
REFERENCE_NUMEL = 4 * 128 * 128   # SDXL latent at 1024², where the paper's r = 15 was tuned


def _calc_dtype(t: torch.Tensor):
    return torch.float32 if t.device.type == "mps" else torch.float64  # MPS has no float64


def per_sample_norm(x: torch.Tensor) -> torch.Tensor:
    """L2 norm over every non-batch dim (C,H,W for images, C,T,H,W for video), shaped to broadcast."""
    return x.flatten(1).norm(p=2, dim=1).view(-1, *([1] * (x.ndim - 1)))


def project(v: torch.Tensor, onto: torch.Tensor):
    """Split v into the part parallel to `onto` and the orthogonal rest, per sample."""
    dims = tuple(range(1, v.ndim))
    unit = onto / per_sample_norm(onto).clamp_min(1e-12)
    parallel = (v * unit).sum(dim=dims, keepdim=True) * unit
    return parallel, v - parallel


class MomentumBuffer:
    """ΔD^m_t = ΔD_t + β·ΔD^m_{t−1}."""

    def __init__(self, beta: float):
        self.beta = beta
        self.running = None

    def update(self, diff: torch.Tensor) -> torch.Tensor:
        if self.running is None or self.running.shape != diff.shape:
            self.running = diff
        else:
            self.running = diff + self.beta * self.running
        return self.running


def apg_x0(cond, uncond, w: float, eta: float = 0.0, norm_threshold: float = 15.0, momentum: MomentumBuffer = None):
    """Algorithm 1: the guided x0 prediction D̂. Computed in float64, returned in cond's dtype."""
    dtype = _calc_dtype(cond)
    c, u = cond.to(dtype), uncond.to(dtype)
    diff = c - u
    if momentum is not None and momentum.beta != 0:
        diff = momentum.update(diff)
    if norm_threshold > 0:
        diff = diff * torch.clamp(norm_threshold / per_sample_norm(diff).clamp_min(1e-12), max=1.0)
    parallel, orthogonal = project(diff, c)
    return (c + (w - 1.0) * (orthogonal + eta * parallel)).to(cond.dtype)


@dataclass(frozen=True)
class APGSettings:
    eta: float = 0.0
    momentum: float = -0.5
    norm_threshold: float = 15.0
    window: schedule.Window = schedule.Window()
    warmup_steps: int = 0
    warmup_cfg: float = 0.0          # 0: the sampler's cfg
    scale_threshold: bool = False    # r ∝ √(latent elements), equal to r at SDXL 1024²

    def threshold_for(self, x: torch.Tensor) -> float:
        if not self.scale_threshold:
            return self.norm_threshold
        return self.norm_threshold * math.sqrt(x[0].numel() / REFERENCE_NUMEL)


class APGRun:
    """Momentum per guidance pair for one sampling run; reset when sigma rises (a new schedule started)."""

    def __init__(self, settings: APGSettings):
        self.settings = settings
        self.buffers = {}
        self.last_sigma = None

    def buffer(self, index: int) -> MomentumBuffer:
        if index not in self.buffers:
            self.buffers[index] = MomentumBuffer(self.settings.momentum)
        return self.buffers[index]

    def observe(self, sigma: float):
        if self.last_sigma is not None and sigma > self.last_sigma:
            self.buffers.clear()
        self.last_sigma = sigma


def _through_cfg(conds_out, target, w):
    """conds_out whose ComfyUI CFG step (uncond + w·(cond − uncond)) gives `target`: the cond rescaled by 1/w, the
    uncond kept for post-CFG patches. At w ≈ 0 the CFG step returns the uncond alone (a division by w would give
    inf, a black image), so `target` goes into both rows: the step then returns it exactly."""
    uncond, rest = conds_out[1], list(conds_out[2:])
    if abs(w) < 1e-4:
        return [target, target] + rest
    return [uncond + (target - uncond) / w, uncond] + rest


def make_pre_cfg(settings: APGSettings, node_name: str = "Sleight · APG"):
    def sleight_apg_pre_cfg(args):
        conds_out = args["conds_out"]
        if len(conds_out) < 2 or args["conds"][1] is None:
            raise ValueError(
                f"{node_name}: the sampler's cfg is 1, so there is no unconditional prediction to guide with. "
                "Set cfg above 1 on the sampler (APG uses it as its scale w), or bypass the APG node."
            )
        cond, uncond = conds_out[0], conds_out[1]
        w = float(args["cond_scale"])
        sigma = schedule.as_float(args["sigma"])
        model_options = args.get("model_options", {})
        to = model_options.get("transformer_options", {})
        state = runstate.of(to)
        # outside a run (no Sleight OUTER_SAMPLE wrapper ran): momentum for this call only
        run = state.slot(settings, lambda: APGRun(settings)) if state is not None else APGRun(settings)
        run.observe(sigma)

        if settings.warmup_steps > 0 and 0 <= schedule.step_index(to.get("sample_sigmas"), sigma) < settings.warmup_steps:
            if settings.warmup_cfg <= 0 or settings.warmup_cfg == w:
                return conds_out
            return _through_cfg(conds_out, uncond + settings.warmup_cfg * (cond - uncond), w)

        if not settings.window.contains(args["model"].model_sampling, sigma):
            return conds_out
        guided = apg_x0(cond, uncond, w, settings.eta, settings.threshold_for(cond), run.buffer(0))
        return _through_cfg(conds_out, guided, w)

    sleight_apg_pre_cfg.sleight_apg = True
    return sleight_apg_pre_cfg
