"""Localization search for Sleight · Find text layers: route prompt B into one candidate layer (or block) at a
time, sample with the same seed, rank the candidates by how much the image changes against prompt A alone."""
import torch

import comfy.model_management as mm
import comfy.sample
import comfy.utils

from ..attention_patches.core import families, layerspec, masks, schedule
from . import contact_sheet, routing

GRANULARITY = ("layer", "block")


def candidates(model, granularity: str = "layer", spec: str = "*", who: str = "Sleight · Find text layers"):
    """[(label, [block ids])] in forward order: one per text-attention layer, or per ComfyUI block."""
    family = families.detect(model, who)
    ids = layerspec.select(routing.text_layers(model), spec, family.label, layerspec.TEXT_KINDS, who)
    if granularity == "layer" or not family.groups_blocks:
        return [(b, [b]) for b in ids]
    if granularity != "block":
        raise ValueError(f"{who}: granularity must be one of {', '.join(GRANULARITY)}, not {granularity!r}.")
    groups = {}
    for b in ids:
        groups.setdefault(family.block_group(b), []).append(b)
    return list(groups.items())


def mask_weights(mask, hw):
    """A MASK (H, W) / (B, H, W) in pixels as weights (h, w) at latent resolution."""
    return masks.to_grid(masks.as_4d(mask)[:1], hw)[0, 0].clamp(0, 1)


def change_scores(base: torch.Tensor, other: torch.Tensor, weights=None):
    """Mean squared latent change: {"score", "overall"} and, with weights (h, w), "inside"/"outside".

    With a mask the score is inside − outside: how much more the image changes inside the mask than outside it
    (a layer that changes nothing scores 0, one that changes everything evenly scores ≈ 0 too).
    """
    d = (other.float() - base.float()).pow(2).mean(dim=1)[0]        # (h, w) over channels, first image
    overall = float(d.mean())
    if weights is None:
        return {"score": overall, "overall": overall}
    w = weights.to(d.device)
    inside = float((d * w).sum() / w.sum().clamp_min(1e-8))
    outside = float((d * (1 - w)).sum() / (1 - w).sum().clamp_min(1e-8))
    return {"score": inside - outside, "overall": overall, "inside": inside, "outside": outside}


def ranking_table(header: str, ranked, reference=None) -> str:
    """ranked: [(label, scores)] best first; reference: scores of B routed into every candidate layer."""
    masked = bool(ranked) and "inside" in ranked[0][1]
    ref = reference["score"] if reference and reference["score"] > 0 else None
    cols = f"{'rank':>4}  {'layer':<16}{'score':>12}"
    if ref:
        cols += f"{'% of all':>10}"
    if masked:
        cols += f"{'inside':>12}{'outside':>12}"
    lines = [header, cols]
    for i, (label, s) in enumerate(ranked, 1):
        line = f"{i:>4}  {label:<16}{s['score']:>12.6g}"
        if ref:
            line += f"{100 * s['score'] / ref:>9.1f}%"
        if masked:
            line += f"{s['inside']:>12.6g}{s['outside']:>12.6g}"
        lines.append(line)
    if reference is not None:
        lines.append(f"B routed into all of them at once: score {reference['score']:.6g}")
    return "\n".join(lines)


def find_layers(model, positive, routed, negative, seed, steps, cfg, sampler_name, scheduler, width, height,
                granularity="layer", max_candidates=100, top_k=3, vae=None, mask=None, start_percent=0.08,
                search_layers="*", who: str = "Sleight · Find text layers"):
    """Route `routed` into one candidate at a time, sample, rank by change vs the A-only image.

    Returns (table, spec, sheet). One progress tick per sample (baseline, all-candidates reference, each
    candidate); interruptible between and inside samples.
    """
    family = families.detect(model, who)
    cands = candidates(model, granularity, search_layers, who)
    found = len(cands)
    cands = cands[:max(1, int(max_candidates))]
    window = schedule.Window(start_percent, 1.0)
    all_blocks = [b for _, bs in cands for b in bs]
    reference_model = routing.route(model, routed, all_blocks, window, ("cond",), who)   # fails early on a bad prompt

    down = family.downscale
    latent = comfy.sample.fix_empty_latent_channels(model, torch.zeros([1, 4, max(1, height // down), max(1, width // down)]))
    noise = comfy.sample.prepare_noise(latent, seed)
    weights = None
    if mask is not None:
        masks.check_size(mask, tuple(latent.shape[-2:]), down, who)
        weights = mask_weights(mask, latent.shape[-2:])
        if float(weights.sum()) < 1e-3 or float((1 - weights).sum()) < 1e-3:
            raise ValueError(f"{who}: the mask is {'empty' if float(weights.sum()) < 1e-3 else 'full'}; "
                             f"mark the region where prompt B should change the image, or leave the mask out.")

    pbar = comfy.utils.ProgressBar(len(cands) + 2)

    def run(m):
        mm.throw_exception_if_processing_interrupted()
        out = comfy.sample.sample(m, noise, steps, cfg, sampler_name, scheduler, positive, negative, latent,
                                  denoise=1.0, disable_pbar=True, seed=seed)
        pbar.update(1)
        return out

    base = run(model)
    reference = run(reference_model)
    del reference_model
    results = []
    for order, (label, blocks) in enumerate(cands):
        out = run(routing.route(model, routed, blocks, window, ("cond",), who))
        results.append((order, label, blocks, change_scores(base, out, weights), out))
    ranked = sorted(results, key=lambda r: -r[3]["score"])          # stable: ties keep forward order
    ref_scores = change_scores(base, reference, weights)

    k = max(1, min(int(top_k), len(ranked)))
    top = sorted(ranked[:k], key=lambda r: r[0])
    spec = layerspec.compact([r[1] for r in top])

    what = "inside − outside the mask" if weights is not None else "over the whole image"
    header = "\n".join([
        f"{who}: {family.label}, {len(cands)} {granularity} candidates"
        + (f" (the first {len(cands)} of {found}: raise max_candidates or narrow search_layers)" if found > len(cands) else ""),
        f"sampling: {steps} steps {sampler_name}/{scheduler}, cfg {cfg}, seed {seed}, {width}x{height}; B routed into the cond rows "
        f"from {start_percent:g}",
        f"score: mean squared latent change vs A alone, {what}; top {k}: {spec}",
    ])
    table = ranking_table(header, [(r[1], r[3]) for r in ranked], ref_scores)

    @torch.no_grad()
    def picture(lat):
        if vae is not None:
            img = vae.decode(lat)
            return img.reshape(-1, *img.shape[-3:])[0].float().cpu()
        return contact_sheet.latent_preview(model, lat.cpu())

    tiles = [("A (baseline)", picture(base)), ("B in all", picture(reference))]
    tiles += [(f"#{i} {r[1]}", picture(r[4])) for i, r in enumerate(ranked, 1)]
    return table, spec, contact_sheet.contact_sheet(tiles)
