"""Per-layer prompt routing: a second prompt reaches the image only through chosen attention layers.

UNet (SD1.5, SDXL): cross-attention K and V are projections of the prompt embedding alone (they do not depend
on the image or the step), so swapping the *pre-projection* context of a transformer block's attn2 is exactly
the paper's K/V patching (Staniszewski et al., ICLR 2025). We do it in an `attn2_patch` (a list hook, so other
packs' patches still run; no attn2 replace is taken) that, only
  - in the chosen block ids (`output.2.1`, …: ComfyUI's ("output", 2) block, transformer block 1),
  - in the chosen rows (the router's `Forward.rows`: cond, or cond and uncond),
  - inside the start/end percent window (`schedule.Window`, ComfyUI model-time percent),
replaces the context (and value) rows with the routed prompt's embedding. When the batch's context length L and
the routed length Lr differ, both are repeated to lcm(L, Lr) tokens: repeating every key/value token the same
number of times leaves softmax attention unchanged, which is how ComfyUI batches prompts of different lengths.

DiT (SD3, Flux): the text stream evolves through the blocks, so the routed text K/V must come from a parallel
routed trajectory; `route` hands that to `textkv.install_dit` (lockstep side pass, text K/V swap).

Localization search (`SleightFindTextLayers`): `candidates`, `change_scores`, `ranking_table`,
`latent_preview`, `contact_sheet`.
"""
import logging
import math

import torch

from ..samplers import schedule
from . import arch as arch_mod
from . import layerspec
from . import router
from .textkv import install_dit

log = logging.getLogger("sleight")

AUTO = "paper text layers (auto)"
CUSTOM = "custom"
LAYER_CHOICES = [AUTO, *layerspec.PRESETS, CUSTOM]
ROWS = {"cond": ("cond",), "cond and uncond": ("cond", "uncond")}
GRANULARITY = ("layer", "block")


# ------------------------------------------------------------------ what to route, where

def routed_embedding(conditioning, who: str = "Sleight") -> torch.Tensor:
    """The token embedding (B, L, C) of a CONDITIONING holding one prompt."""
    if not conditioning:
        raise ValueError(f"{who}: the routed conditioning is empty; connect a CLIP Text Encode output.")
    if len(conditioning) != 1:
        raise ValueError(
            f"{who}: the routed conditioning holds {len(conditioning)} entries (from Conditioning Combine, "
            f"timestep ranges or areas); route one prompt. To route a longer prompt, use Conditioning Concat.")
    emb = conditioning[0][0]
    if not torch.is_tensor(emb) or emb.ndim != 3:
        raise ValueError(f"{who}: the routed conditioning is not a text embedding (got {type(emb).__name__}).")
    return emb


def text_layers(model):
    """(block, kind) of every attention layer in forward order (block ids do not depend on resolution)."""
    return [(layer.block, layer.kind) for layer in arch_mod.list_layers(model, 1024, 1024)]


def resolve_blocks(model, choice: str, custom: str = "", who: str = "Sleight"):
    """Block ids for the node's layer choice: a preset, the family's paper preset (auto), or a custom spec."""
    a = arch_mod.detect(model, who)
    layers = text_layers(model)
    if choice == CUSTOM:
        return layerspec.select(layers, custom, a.family, layerspec.TEXT_KINDS, who)
    if choice == AUTO:
        name = layerspec.PAPER_TEXT_PRESET.get(a.family)
        if name is None:
            raise layerspec.LayerSpecError(
                f"{who}: no paper text layers are known for {a.family}; papers exist for "
                f"{', '.join(layerspec.PAPER_TEXT_PRESET)}. Set layers to custom and write them (find them with "
                f"Sleight · Find text layers). Valid block ids: "
                f"{layerspec.describe_valid(layerspec.block_ids(layers, layerspec.TEXT_KINDS))}.")
        return layerspec.preset_blocks(name, layers, a.family, who)
    if choice in layerspec.PRESETS:
        return layerspec.preset_blocks(choice, layers, a.family, who)
    raise layerspec.LayerSpecError(f"{who}: unknown layer choice {choice!r}; choose one of {', '.join(LAYER_CHOICES)}.")


def _context_dim(model):
    dm = model.model.diffusion_model
    for m in dm.modules():
        attn2 = getattr(m, "attn2", None)
        if type(m).__name__ == "BasicTransformerBlock" and attn2 is not None:
            return attn2.to_k.in_features
    return None


# ------------------------------------------------------------------ UNet: attn2 context swap

class UNetRoute:
    """What one routing patch does; shared by every clone (no tensors are copied on clone)."""

    def __init__(self, emb: torch.Tensor, blocks, window: schedule.Window, roles):
        self.emb = emb.detach()
        self.blocks = frozenset(blocks)
        self.window = window
        self.roles = tuple(roles)
        self._ready = {}           # (device, dtype, length) -> routed embedding repeated to that length
        self._warned = False

    def __deepcopy__(self, memo):
        return self

    def routed(self, device, dtype, length):
        key = (device, dtype, length)
        t = self._ready.get(key)
        if t is None:
            t = self.emb.to(device=device, dtype=dtype)
            if length != t.shape[1]:
                t = t.repeat(1, length // t.shape[1], 1)
            self._ready = {**self._ready, key: t}
        return t

    def active_rows(self, extra_options):
        """Rows to route in this call, or None. Block first: it is the cheap test most calls fail."""
        block = extra_options.get("block")
        if block is None or f"{block[0]}.{block[1]}.{extra_options.get('block_index', 0)}" not in self.blocks:
            return None
        fwd = extra_options.get(router.KEY)
        if fwd is None:
            if not self._warned:
                self._warned = True
                log.warning("Sleight · Route prompt: the router's per-call context is missing (a node removed the "
                            "Sleight wrappers?); the prompt is not routed.")
            return None
        if not self.window.contains(fwd.model_sampling, fwd.sigma):
            return None
        rows = [r for role in self.roles for r in fwd.rows.get(role, ())]
        if not rows:
            return None
        per = fwd.batch // max(len(fwd.cond_or_uncond), 1)
        return rows, max(per, 1)

    def swap(self, t: torch.Tensor, rows, per: int) -> torch.Tensor:
        b, length = t.shape[0], t.shape[1]
        rows = [r for r in rows if r < b]
        n = math.lcm(length, self.emb.shape[1])
        out = t.repeat(1, n // length, 1) if n != length else t.clone()
        src = self.routed(t.device, t.dtype, n)
        if src.shape[0] == 1:
            out[rows] = src.expand(len(rows), -1, -1)
        else:                      # a batched routed prompt: row i of every chunk takes entry i
            out[rows] = src[[(r % per) % src.shape[0] for r in rows]]
        return out


def make_unet_patch(route: UNetRoute):
    def sleight_prompt_route(n, context, value, extra_options):
        active = route.active_rows(extra_options)
        if active is None or context is None:
            return n, context, value
        rows, per = active
        new_context = route.swap(context, rows, per)
        new_value = new_context if value is None or value is context else route.swap(value, rows, per)
        return n, new_context, new_value

    sleight_prompt_route.sleight_route = route
    return sleight_prompt_route


def install_unet(model, emb, blocks, window, roles, who: str = "Sleight"):
    dim = _context_dim(model)
    if dim is not None and emb.shape[-1] != dim:
        raise ValueError(f"{who}: the routed prompt is {emb.shape[-1]}-wide but this model's cross-attention "
                         f"takes {dim}; encode it with this model's CLIP.")
    router.install(model, who=who)          # no effect: only the per-call Forward (rows, sigma) is needed
    model.set_model_attn2_patch(make_unet_patch(UNetRoute(emb, blocks, window, roles)))
    return model


# ------------------------------------------------------------------ one entry point for every architecture

def route(model, conditioning, blocks, window: schedule.Window, rows=("cond",), who: str = "Sleight · Route prompt"):
    """A clone of `model` in which `conditioning` replaces the prompt in `blocks`, for `rows`, inside `window`."""
    a = arch_mod.detect(model, who)
    blocks = list(blocks)
    if not blocks:
        raise layerspec.LayerSpecError(f"{who}: no layers to route into.")
    rows = tuple(rows)
    if a.name == "unet":
        return install_unet(model.clone(), routed_embedding(conditioning, who), blocks, window, rows, who)
    m = model.clone()
    install_dit(m, conditioning, blocks, window, rows, who)
    return m


# ------------------------------------------------------------------ localization search

def candidates(model, granularity: str = "layer", spec: str = "*", who: str = "Sleight · Find text layers"):
    """[(label, [block ids])] in forward order: one per text-attention layer, or per ComfyUI block."""
    a = arch_mod.detect(model, who)
    layers = text_layers(model)
    ids = layerspec.select(layers, spec, a.family, layerspec.TEXT_KINDS, who)
    if granularity == "layer" or a.name != "unet":
        return [(b, [b]) for b in ids]
    if granularity != "block":
        raise ValueError(f"{who}: granularity must be one of {', '.join(GRANULARITY)}, not {granularity!r}.")
    groups = {}
    for b in ids:
        groups.setdefault(b.rsplit(".", 1)[0], []).append(b)
    return list(groups.items())


def mask_weights(mask, hw):
    """A MASK (H, W) / (B, H, W) in pixels as weights (h, w) at latent resolution."""
    m = mask.float()
    if m.ndim == 2:
        m = m[None]
    m = m[:1, None]
    m = torch.nn.functional.interpolate(m, size=tuple(hw), mode="bilinear", align_corners=False)
    return m[0, 0].clamp(0, 1)


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


def latent_preview(model, latent: torch.Tensor) -> torch.Tensor:
    """A rough RGB image (H, W, 3) in [0, 1] of a sampled latent, with the latent format's latent→RGB factors."""
    fmt = model.model.latent_format
    x = fmt.process_in(latent.float())[0]                              # (C, h, w), model space
    factors = getattr(fmt, "latent_rgb_factors", None)
    if factors is not None and len(factors) == x.shape[0]:
        f = torch.tensor(factors, dtype=x.dtype)                       # (C, 3)
        rgb = torch.einsum("chw,cr->hwr", x, f)
        bias = getattr(fmt, "latent_rgb_factors_bias", None)
        if bias is not None:
            rgb = rgb + torch.tensor(bias, dtype=x.dtype)
        return ((rgb + 1) / 2).clamp(0, 1)
    rgb = x[:3].movedim(0, -1)
    lo, hi = rgb.amin(), rgb.amax()
    return (rgb - lo) / (hi - lo).clamp_min(1e-8)


def contact_sheet(tiles, box: int = 256, strip: int = 16) -> torch.Tensor:
    """tiles: [(label, image (H, W, 3) in [0, 1])] -> IMAGE (1, H, W, 3): a labelled grid, each fit into `box`."""
    import numpy as np
    from PIL import Image, ImageDraw

    cols = max(1, math.ceil(math.sqrt(len(tiles))))
    rows = math.ceil(len(tiles) / cols)
    h0, w0 = tiles[0][1].shape[:2]
    scale = box / max(h0, w0)
    tw, th = max(1, round(w0 * scale)), max(1, round(h0 * scale))
    sheet = Image.new("RGB", (cols * tw, rows * (th + strip)), (24, 24, 24))
    draw = ImageDraw.Draw(sheet)
    for i, (label, img) in enumerate(tiles):
        arr = (img[..., :3].detach().float().clamp(0, 1).cpu().numpy() * 255).round().astype(np.uint8)
        pic = Image.fromarray(arr).resize((tw, th), Image.NEAREST if scale >= 2 else Image.BILINEAR)
        x, y = (i % cols) * tw, (i // cols) * (th + strip)
        sheet.paste(pic, (x, y + strip))
        draw.text((x + 3, y + 2), label[: max(4, tw // 6)], fill=(235, 235, 235))
    return torch.from_numpy(np.asarray(sheet).astype(np.float32) / 255.0)[None]


def find_layers(model, positive, routed, negative, seed, steps, cfg, sampler_name, scheduler, width, height,
                granularity="layer", max_candidates=100, top_k=3, vae=None, mask=None, start_percent=0.08,
                search_layers="*", who: str = "Sleight · Find text layers"):
    """Route `routed` into one candidate at a time, sample, rank by change vs the A-only image.

    Returns (table, spec, sheet). One progress tick per sample (baseline, all-candidates reference, each
    candidate); interruptible between and inside samples.
    """
    import comfy.model_management as mm
    import comfy.sample
    import comfy.utils

    a = arch_mod.detect(model, who)
    cands = candidates(model, granularity, search_layers, who)
    found = len(cands)
    cands = cands[:max(1, int(max_candidates))]
    window = schedule.Window(start_percent, 1.0)
    all_blocks = [b for _, bs in cands for b in bs]
    reference_model = route(model, routed, all_blocks, window, ("cond",), who)   # fails early on a bad prompt

    down = getattr(model.model.latent_format, "spacial_downscale_ratio", 8)
    latent = comfy.sample.fix_empty_latent_channels(model, torch.zeros([1, 4, max(1, height // down), max(1, width // down)]))
    noise = comfy.sample.prepare_noise(latent, seed)
    weights = None
    if mask is not None:
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
        out = run(route(model, routed, blocks, window, ("cond",), who))
        results.append((order, label, blocks, change_scores(base, out, weights), out))
    ranked = sorted(results, key=lambda r: -r[3]["score"])          # stable: ties keep forward order
    ref_scores = change_scores(base, reference, weights)

    k = max(1, min(int(top_k), len(ranked)))
    top = sorted(ranked[:k], key=lambda r: r[0])
    spec = layerspec.compact([r[1] for r in top])

    what = "inside − outside the mask" if weights is not None else "over the whole image"
    header = "\n".join([
        f"{who}: {a.family}, {len(cands)} {granularity} candidates"
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
        return latent_preview(model, lat.cpu())

    tiles = [("A (baseline)", picture(base)), ("B in all", picture(reference))]
    tiles += [(f"#{i} {r[1]}", picture(r[4])) for i, r in enumerate(ranked, 1)]
    return table, spec, contact_sheet(tiles)
