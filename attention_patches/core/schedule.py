"""Step / percent / sigma windows: the one place every trick turns "when" into a predicate.

Percent is ComfyUI's model-time percent (what ConditioningSetTimestepRange and the core guidance nodes use):
`model_sampling.percent_to_sigma(p)` maps it to a sigma; a window [start, end] is active while
percent_to_sigma(end) <= sigma <= percent_to_sigma(start). Steps come from the sampler's own schedule
(`transformer_options["sample_sigmas"]`), so hires-fix passes and several samplers in one graph work.
"""
from dataclasses import dataclass

import torch


def as_float(sigma) -> float:
    """The sigma of a model call as a float (ComfyUI passes a per-row tensor; rows share one sigma)."""
    if torch.is_tensor(sigma):
        return float(sigma.detach().flatten().max())
    return float(sigma)


def step_index(sample_sigmas, sigma) -> int:
    """Index of the step a model call belongs to: the largest i with sample_sigmas[i] >= sigma.

    Multi-evaluation samplers (heun, dpm_2, sde) evaluate between two scheduled sigmas; they count as the
    earlier step. Returns -1 when no schedule is known.
    """
    if sample_sigmas is None or len(sample_sigmas) == 0:
        return -1
    s = as_float(sigma)
    sched = sample_sigmas.detach().flatten().tolist() if torch.is_tensor(sample_sigmas) else list(sample_sigmas)
    tol = 1e-5 * max(1.0, abs(s))
    idx = 0
    for i, si in enumerate(sched):
        if si + tol >= s:
            idx = i
        else:
            break
    return idx


def total_steps(sample_sigmas) -> int:
    return max(len(sample_sigmas) - 1, 0) if sample_sigmas is not None else 0


def sigma_to_percent(model_sampling, sigma, iterations: int = 40) -> float:
    """Inverse of percent_to_sigma by bisection (ComfyUI has no inverse); percent_to_sigma is monotone decreasing."""
    s = as_float(sigma)
    lo, hi = 0.0, 1.0
    for _ in range(iterations):
        mid = 0.5 * (lo + hi)
        if model_sampling.percent_to_sigma(mid) > s:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


@dataclass(frozen=True)
class Window:
    """A start/end percent window, ComfyUI semantics (0 = first step, 1 = last)."""

    start_percent: float = 0.0
    end_percent: float = 1.0

    def __post_init__(self):
        if not 0.0 <= self.start_percent <= 1.0 or not 0.0 <= self.end_percent <= 1.0:
            raise ValueError(f"percent window must lie in [0, 1], got {self.start_percent}..{self.end_percent}")
        if self.start_percent > self.end_percent:
            raise ValueError(f"start_percent {self.start_percent} is after end_percent {self.end_percent}")

    @property
    def always(self) -> bool:
        return self.start_percent <= 0.0 and self.end_percent >= 1.0

    def contains(self, model_sampling, sigma) -> bool:
        if self.always:
            return True
        s = as_float(sigma)
        return model_sampling.percent_to_sigma(self.end_percent) <= s <= model_sampling.percent_to_sigma(self.start_percent)


def step_fraction(step: int, total: int) -> float:
    """Step i of N as the fraction i/N of the sampler's schedule (0 = first step)."""
    return step / total if total > 0 else 0.0


@dataclass(frozen=True)
class StepWindow:
    """The steps i of an N-step schedule with start <= i/N <= end: a paper's "steps a..b of 50" is
    StepWindow(a/50, b/50), step-exact at 50 steps and scaled to any other step count. Steps come from the
    sampler's own sigmas (`step_index`), so any scheduler, denoise or hires pass counts its own steps."""

    start: float = 0.0
    end: float = 1.0

    def __post_init__(self):
        if not 0.0 <= self.start <= 1.0 or not 0.0 <= self.end <= 1.0:
            raise ValueError(f"step window must lie in [0, 1], got {self.start}..{self.end}")
        if self.start > self.end:
            raise ValueError(f"window start {self.start} is after its end {self.end}")

    def contains_step(self, step: int, total: int) -> bool:
        f = step_fraction(step, total)
        return self.start - 1e-6 <= f <= self.end + 1e-6

    def contains(self, sample_sigmas, sigma) -> bool:
        return self.contains_step(step_index(sample_sigmas, sigma), total_steps(sample_sigmas))


def step_at(fraction: float, total: int) -> int:
    """The step index a schedule fraction names (10/30 of 30 steps → 10), for any step count."""
    return int(round(fraction * total))


def last_step(fraction: float, total: int) -> int:
    """The last step of a window that runs from step 0 through the step `fraction` names, ends included (Add-it's
    official `extend_start <= step_index <= extend_end`: 10/30 of 30 steps is steps 0–10); −1 (no step) for 0."""
    return step_at(fraction, total) if fraction > 0 else -1


def window(who: str, start_percent: float, end_percent: float) -> Window:
    """A node's percent window, or an error naming the node and the fix."""
    try:
        return Window(start_percent, end_percent)
    except ValueError as e:
        raise ValueError(f"{who}: {e}. Set start_percent <= end_percent.") from None


def step_window(who: str, name: str, start: float, end: float) -> StepWindow:
    """A node's step-fraction window `name`, or an error naming the node and the window."""
    try:
        return StepWindow(start, end)
    except ValueError as e:
        raise ValueError(f"{who}: {name}: {e}; set the start at or before the end, both fractions in [0, 1].") from None


# Samplers that evaluate the model again at a *later scheduled* sigma inside one step (heun: σ_{i+1},
# heunpp2: σ_{i+1} and σ_{i+2}). By sigma alone those evaluations look like the next step; they are counted
# by order instead (see StepTracker). Other multi-evaluation samplers (dpm_2, dpmpp_2s, sde) evaluate strictly
# between two scheduled sigmas, which schedule.step_index already maps to the earlier step.
LOOKAHEAD_SAMPLERS = frozenset({"sample_heun", "sample_heunpp2"})


class StepTracker:
    """Maps each model evaluation of one run to the sampler step it belongs to.

    Default: step_index (largest i with sample_sigmas[i] >= sigma); exact for one-evaluation samplers
    and for samplers whose extra evaluations lie strictly between scheduled sigmas. Look-ahead samplers (heun):
    a step starts with an evaluation whose sigma does not go below the previous one; the later, lower
    evaluations belong to that step.
    """

    def __init__(self, sample_sigmas, lookahead: bool = False):
        self.sigmas = sample_sigmas
        self.lookahead = lookahead
        self.step = -1
        self.last = None

    def __call__(self, sigma) -> int:
        s = as_float(sigma)
        if not self.lookahead:
            return step_index(self.sigmas, s)
        if self.last is None or s >= self.last - 1e-6 * max(1.0, abs(self.last)):
            self.step = max(self.step + 1, step_index(self.sigmas, s)) if self.last is not None \
                else step_index(self.sigmas, s)
        self.last = s
        return self.step
