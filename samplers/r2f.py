"""Rare-to-Frequent (Park et al., ICLR 2025), the parts that decide what each step sees: embedding
interpolation with token-length matching, the visual-detail level → stop-step maps and the per-step schedule.
Pure (no ComfyUI import); the switching itself is samplers/switching.py, the text parser samplers/r2f_text.py.
"""
import math
import re

import torch


def fit_lengths(a: torch.Tensor, b: torch.Tensor, how: str):
    """Bring two (B, L, D) text embeddings to one length L.

    "repeat" (UNet cross-attention; CLIP gives 77·n tokens, each 77-chunk encoded on its own): repeat both to the
    LCM length, so chunk k of one meets chunk k mod n of the other. Repeating keys and values does not change
    cross-attention, so the ends of an interpolation (α = 0 or 1) are exactly the plain prompts.
    "pad" (DiT joint attention, where repeating text tokens would change attention mass): pad the shorter with
    copies of its final token (usually a padding token, as if it had been encoded with a longer minimum length).
    """
    la, lb = a.shape[1], b.shape[1]
    if a.shape[-1] != b.shape[-1]:
        raise ValueError(f"embedding sizes differ ({a.shape[-1]} and {b.shape[-1]}): the two prompts come from "
                         "different text encoders")
    if la == lb:
        return a, b
    if how == "repeat":
        n = math.lcm(la, lb)
        return a.repeat(1, n // la, 1), b.repeat(1, n // lb, 1)
    n = max(la, lb)

    def pad(t):
        return t if t.shape[1] == n else torch.cat([t, t[:, -1:].expand(t.shape[0], n - t.shape[1], t.shape[2])], 1)

    return pad(a), pad(b)


def lerp_entry(freq, rare, alpha: float, how: str):
    """One conditioning entry e = α·e_freq + (1−α)·e_rare on the text embedding, the pooled output and the other
    per-token text states both entries carry (floating (…, L, D) tensors, e.g. HiDream's Llama layers
    `conditioning_llama3`, matched in length like the embedding).

    The other settings come from the rare entry. α = 0 / 1 give the rare / frequent tensors bit for bit when the
    lengths already match.
    """
    f, r = fit_lengths(freq[0], rare[0], how)
    out = dict(rare[1])
    for key, rv in rare[1].items():
        fv = freq[1].get(key)
        if not (torch.is_tensor(fv) and torch.is_tensor(rv) and fv.is_floating_point() and rv.is_floating_point()):
            continue
        if key == "pooled_output":
            out[key] = alpha * fv + (1.0 - alpha) * rv
        elif fv.ndim >= 3 and fv.shape[:-2] == rv.shape[:-2] and fv.shape[-1] == rv.shape[-1]:
            a, b = fit_lengths(fv.flatten(0, -3), rv.flatten(0, -3), how)
            out[key] = (alpha * a + (1.0 - alpha) * b).reshape(*rv.shape[:-2], *a.shape[-2:])
    return [alpha * f + (1.0 - alpha) * r, out]


# ---------------------------------------------------------------------------------------------- R2F schedule

# Rare-to-Frequent (Park et al., ICLR 2025), krafton-ai/Rare-to-Frequent: visual detail level 0..5 → the step at
# which the frequent prompt stops, out of 50 steps. Alternation: frequent prompt on even steps, the rare
# (original) prompt on odd steps, until the stop; then the rare prompt only. Interpolation (FLUX.1-schnell):
# e = α_i·e_freq + (1−α_i)·e_rare on steps 0 (levels 1–3) or 0–1 (levels 4–5), α = 0.3, 0.15, 0.15, 0.15.
SD3_MAP = (0, 5, 10, 20, 30, 40)       # SD3 / DiTs
SDXL_MAP = (0, 3, 5, 10, 20, 30)       # SDXL / UNets
MAP_STEPS = 50
LEVEL_MAPS = {"sd3": SD3_MAP, "sdxl": SDXL_MAP}
DEFAULT_ALPHAS = "0.3,0.15,0.15,0.15"
MAX_LEVEL = 5


def round_half_up(x: float) -> int:
    return int(math.floor(x + 0.5))


def level_stop(level: int, total_steps: int, level_map=SD3_MAP) -> int:
    """Stop step for a level as the same fraction of any step count; a level ≥ 1 keeps at least step 0."""
    if level <= 0 or total_steps <= 0:
        return 0
    return min(total_steps, max(1, round_half_up(level_map[level] / MAP_STEPS * total_steps)))


def interpolation_steps(level: int) -> int:
    """Steps with interpolated embeddings (official Flux code): 0 for level 0, 1 for levels 1–3, 2 for 4–5."""
    return 0 if level <= 0 else (1 if level <= 3 else 2)


def r2f_stops(levels, total_steps: int, mode: str = "alternate", level_map=SD3_MAP, stop_percent: float = -1.0):
    """Stop step of every stage, made non-decreasing (a stage never ends before the one before it)."""
    if stop_percent is not None and stop_percent >= 0:
        stops = [min(total_steps, round_half_up(stop_percent * total_steps))] * len(levels)
    elif mode == "interpolate":
        stops = [min(total_steps, interpolation_steps(lv)) for lv in levels]
    else:
        stops = [level_stop(lv, total_steps, level_map) for lv in levels]
    out, top = [], 0
    for s in stops:
        top = max(top, s)
        out.append(top)
    return out


def r2f_schedule(stops, total_steps: int, mode: str = "alternate", alphas=(1.0,)):
    """Per step: None (the rare prompt) or (stage, α). Stage at step i = how many stops are <= i.

    alternate: (stage, 1.0) on even steps before the stage's stop, None on odd steps and after the last stop.
    interpolate: (stage, α_i) on every step before the stop (α list indexed by step, its last value repeated);
    α = 0 is None.
    """
    out = []
    for i in range(total_steps):
        stage = sum(1 for s in stops if s <= i)
        if stage >= len(stops):
            out.append(None)
        elif mode == "interpolate":
            a = float(alphas[min(i, len(alphas) - 1)])
            out.append(None if a <= 0.0 else (stage, min(a, 1.0)))
        else:
            out.append((stage, 1.0) if i % 2 == 0 else None)
    return out


def parse_alphas(text: str, who: str = "Sleight · Rare-to-Frequent"):
    parts = [p for p in re.split(r"[\s,;]+", (text or "").strip()) if p]
    if not parts:
        raise ValueError(f"{who}: alphas is empty. Write one interpolation weight per step, e.g. '{DEFAULT_ALPHAS}'.")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise ValueError(f"{who}: alphas must be numbers separated by commas, e.g. '{DEFAULT_ALPHAS}'; "
                         f"got '{text}'.") from None
    bad = [v for v in values if not 0.0 <= v <= 1.0]
    if bad:
        raise ValueError(f"{who}: every alpha must lie in [0, 1] (0 = rare prompt, 1 = frequent prompt); got {bad}.")
    return values
