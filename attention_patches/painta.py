"""HD-Painter PAIntA: prompt-aware introverted attention (Manukyan et al., ICLR 2025; techniques.md §5).

In the chosen self-attention layers, for the first half of the schedule, the logits of *hole query → known key*
pairs are scaled by c_j ∈ [0, 1], the prompt relevance of known token j:
    s_j = Σ_{l∈T} P[j, l]      P = head-averaged softmax cross-attention probabilities of the cond prompt
    c_j = clip((G∗s)_j − median(G∗s)) / max(G∗s), 0, 1)          G: 3×3 Gaussian, σ = 0.5 (official kernel)
    S'_ij = S_ij · [(1 − M_ij)·c_j + M_ij],  M_ij = m_i·m_j + (1 − m_i)                       (m = hole)
on the cond and uncond rows, both with the cond's c. Scaling the logit q_i·k_j by c_j is scaling key j by c_j,
so the hole queries attend to keys scaled by c (hole keys by 1) and every other query to the plain keys: two
SDPA calls on a query split, never the L×L matrix.

Where the probabilities come from (the family adapter's `relevance`):
- "block" (UNet): the paper takes the block's attn2 weights on norm2(x + y_self), the block's hidden state *after*
  the unmodified self-attention. ComfyUI's `middle_patch` sees exactly x + y_self (between attn1 and attn2), so
  the router effect lets attn1 run unchanged and keeps the call and its continuation `attend`; the middle patch
  computes c there, runs the hole queries' reweighted attention through that continuation (so other overrides
  still chain) and replaces their self-attention output: x[hole] += to_out(PAIntA attention) − to_out(plain).
- "call" (joint attention: SD3, Flux): from the image-query → text-key probabilities of the same joint call
  (softmax over the text keys), so the call is rewritten in place.
"""
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .core import families, headsplit, hooks, layerspec, masks, router, runstate, schedule
from .core.families import Family

KEY = "sleight.painta"           # patch/wrapper key
TARGET_KEY = "sleight.hdpainter"  # transformer_options: the InpaintTarget, read by the RASG sampler
PAPER_FACTORS = (2, 4)           # painta_res = [16, 32] at 512 px: latent 64 / 4 and 64 / 2
PAPER_SUFFIX = "Full HD, 4K, high quality, high resolution"


# ------------------------------------------------------------------ what to paint: hole mask and prompt tokens

@dataclass(frozen=True)
class InpaintTarget:
    """The hole (pixel-space mask, 1 = hole) and the prompt token positions T in the cond's text sequence."""

    mask: torch.Tensor                 # (H, W) float, CPU
    tokens: tuple                      # positions in the text sequence of the cond
    text_len: int                      # length of the text sequence they index
    who: str = "Sleight · PAIntA"

    def check_latent(self, latent_hw, down: int):
        """The mask must cover the latent's image (same aspect ratio, to a pixel per latent cell)."""
        mh, mw = self.mask.shape[-2:]
        lh, lw = latent_hw
        if abs(mh * lw - mw * lh) > 0.05 * mh * lw:        # aspect ratios differ by more than 5 %
            raise ValueError(
                f"{self.who}: the mask is {mw}×{mh} px but the latent is {lw}×{lh} ({lw * down}×{lh * down} px): "
                f"they have different shapes. Use the mask of the image being inpainted (same size as the image).")

    def tokens_in(self, call) -> list:
        """T in this call's text part: where they land among the conditioning's own tokens (a family may pad the
        encoded prompt, e.g. Flux.2 to 512 tokens, or put glyph tokens beside it, `call.prompt`)."""
        n, shift = call.prompt.stop - call.prompt.start, call.prompt.start - call.txt.start
        found = [shift + q for q in (call.family.text_position(p, self.text_len, n) for p in self.tokens)
                 if 0 <= q < n]
        if len(found) != len(self.tokens):
            raise ValueError(f"{self.who}: the prompt tokens do not fit this model's text sequence; use the node's "
                             "conditioning output as the sampler's positive.")
        return found

    def hole(self, grid, device, run=None) -> torch.Tensor:
        """Bool (h·w,): the hole at this token grid, made once per run and grid: the dilated pixel mask's area
        coverage above 0.5 (the official code resizes with PIL's bicubic filter, then binarises at 0.5)."""
        def make():
            return (masks.to_grid(self.mask, grid, "area")[0, 0] > 0.5).reshape(-1).to(device)

        if run is None:
            return make()
        # a mask made under inference_mode (a plain sampler on the server) cannot be saved for RASG's backward
        return run.memo(self, (tuple(grid), str(device), torch.is_inference_mode_enabled()), make)

    def __deepcopy__(self, memo):      # model_options are deep-copied on clone; the target is read-only
        return self


def as_mask(mask, who: str) -> torch.Tensor:
    """The hole of a MASK, checked, then grown by 1 px as the official code does before any downscaling."""
    if mask is None or not torch.is_tensor(mask) or mask.ndim not in (2, 3) or mask.numel() == 0:
        raise ValueError(f"{who}: the mask must be a MASK (height × width); connect the hole mask.")
    m = mask[0] if mask.ndim == 3 else mask
    m = m.detach().float().cpu()
    if not bool((m > 0.5).any()):
        raise ValueError(f"{who}: the mask has no hole (no value above 0.5); paint the region to inpaint.")
    if bool((m > 0.5).all()):
        raise ValueError(f"{who}: the mask covers the whole image, so there is no known region to reweight; "
                         "PAIntA needs a partial mask.")
    return masks.dilate_cross((m > 0).float()[None, None])[0, 0]   # official: mask.dilate(1), scipy's cross


# ------------------------------------------------------------------ the math

def gaussian_3x3(sigma: float = 0.5) -> torch.Tensor:
    # official (Attend-and-Excite) kernel: exp(-((x - mean) / (2σ))²), normalised; σ = 0.5
    x = torch.arange(3, dtype=torch.float32) - 1.0
    g = torch.exp(-((x / (2 * sigma)) ** 2))
    k = g[:, None] * g[None, :]
    return k / k.sum()


def relevance(s: torch.Tensor, grid) -> torch.Tensor:
    """c (B, L) from s (B, L): 3×3 Gaussian smoothing ('same', zero padding), c = clip((s − median)/max, 0, 1)."""
    b = s.shape[0]
    img = s.float().reshape(b, 1, *grid)
    img = F.conv2d(img, gaussian_3x3().to(img.device)[None, None], padding=1)
    flat = img.reshape(b, -1)
    med = flat.median(dim=1, keepdim=True).values      # torch.median: lower median, as the official code
    mx = flat.max(dim=1, keepdim=True).values
    return ((flat - med) / mx).clamp(0, 1)


def prompt_scores(q_img, k_txt, tokens, scale=None) -> torch.Tensor:
    """s (B, L): Σ_{l∈T} of the head-averaged softmax(q·k) over the text keys (fp32, like the official code), a
    block of queries at a time so that the fp32 (heads × queries × text) probabilities stay small."""
    scale = q_img.shape[-1] ** -0.5 if scale is None else scale
    b, h, n, _ = q_img.shape
    idx = torch.tensor(list(tokens), device=q_img.device)
    kt = k_txt.float().transpose(-1, -2)                               # (B, H, D, Ltxt): the text keys are few
    rows = max(256, int(4 * headsplit.nbytes(q_img) * headsplit.SHARE) // (8 * b * h * k_txt.shape[2]))
    s = torch.empty(b, n, dtype=torch.float32, device=q_img.device)
    for r in range(0, n, rows):
        p = torch.softmax((q_img[:, :, r:r + rows].float() @ kt) * scale, dim=-1)     # (B, H, rows, Ltxt)
        s[:, r:r + rows] = p[..., idx].sum(dim=(1, 3))
    return s / h


def key_scale(c, hole) -> torch.Tensor:
    """(B, Lk): c_j for known keys, 1 for hole keys."""
    return torch.where(hole[None, :], torch.ones_like(c), c)


def _slice_q(t, idx):
    if t is None or t.ndim < 2 or t.shape[-2] == 1:
        return t
    return t[..., idx, :]


def _queries(call, idx, **changes):
    """`call` on the queries `idx` (its bias and mask rows with them)."""
    return call.replace(q=call.q[:, :, idx], bias=_slice_q(call.bias, idx), mask=_slice_q(call.mask, idx), **changes)


def hole_attention(call, attend, hole_q, scale_k):
    """The hole queries `hole_q` (indices) attending to keys scaled per row and key (B, Lk): S'_ij = S_ij·c_j
    (per group of heads when the scaled keys would cost memory)."""
    scale = scale_k[:, None, :, None]
    temp = headsplit.nbytes(call.k) + 2 * headsplit.nbytes(call.q) * len(hole_q) // max(call.q.shape[2], 1)
    return headsplit.by_heads(call, attend, temp,
                              lambda part, _: attend(_queries(part, hole_q, k=part.k * scale.to(part.k.dtype))))


def painta_attention(call, attend, hole_q, scale_k):
    """PAIntA on every query of a call without the L×L matrix: a query split, the hole queries with scaled keys,
    every other query plainly (per group of heads when the copies would cost memory); equal to `reference_painta`."""
    b, h, lq, _ = call.q.shape
    keep = torch.ones(lq, dtype=torch.bool, device=call.q.device)
    keep[hole_q] = False
    keep_q = keep.nonzero().flatten()
    scale = scale_k[:, None, :, None]

    def split(part, _):
        out = headsplit.output(b, part.q.shape[1], lq, part.v.shape[-1], part.q)
        out[:, :, keep_q] = attend(_queries(part, keep_q))
        out[:, :, hole_q] = attend(_queries(part, hole_q, k=part.k * scale.to(part.k.dtype)))
        return out

    return headsplit.by_heads(call, attend, headsplit.nbytes(call.k) + 2 * headsplit.nbytes(call.q), split)


def reference_painta(q, k, v, hole, c, queries=None):
    """The paper's formula, materialised (tests, benchmarks): softmax(S ⊙ [(1−M)c + M]) V. `queries`: the positions
    of q's rows among the keys when q holds only some of the queries (default: q holds them all)."""
    dt = torch.promote_types(q.dtype, torch.float32)                                # fp32, or fp64 if given
    s = (q.to(dt) @ k.to(dt).transpose(-1, -2)) * q.shape[-1] ** -0.5              # (B, H, Lq, Lk)
    m = hole.to(dt)
    mq = m if queries is None else m[queries]
    big_m = mq[:, None] * m[None, :] + (1 - mq)[:, None]                            # (Lq, Lk)
    factor = (1 - big_m)[None] * c.to(dt)[:, None, :] + big_m[None]                 # (B, Lq, Lk)
    return torch.softmax(s * factor[:, None], dim=-1) @ v.to(dt)


def _heads(t, heads):
    """(B, L, H·D) → (B, H, L, D), a view."""
    return t.reshape(t.shape[0], t.shape[1], heads, -1).transpose(1, 2)


# ------------------------------------------------------------------ the effect

def _row_c(rows_by_role, c_cond, per):
    """c for every cond/uncond row of a batch: the cond row at the same place in its chunk (cond's c for both)."""
    cond = rows_by_role["cond"]
    by_pos = {r % per: i for i, r in enumerate(cond)}
    out = {}
    for role in ("cond", "uncond"):
        for r in rows_by_role.get(role, []):
            if r % per in by_pos:
                out[r] = c_cond[by_pos[r % per]]
    return out


class PAIntA:
    """PAIntA whose prompt relevance comes from the same joint call (families with relevance "call")."""

    order = 40   # reweighting: after routing (10), extended attention (20) and key masks (30)

    def __init__(self, target: InpaintTarget, blocks, window: schedule.Window, family: Family):
        self.target = target
        self.blocks = frozenset(blocks)
        self.window = window
        self.kind = family.self_kind
        self.relevance = relevance        # c from s (a test sets c ≡ 1 here)

    def active(self, fwd) -> bool:
        return "cond" in fwd.rows and self.window.contains(fwd.model_sampling, fwd.sigma)

    def applies(self, call):
        return call.block in self.blocks and call.kind == self.kind and self.active(call.forward)

    def run(self, call, attend):
        fwd, rows = call.forward, call.rows
        hole = self.target.hole(call.grid, call.q.device, call.run)
        if not bool(hole.any()) or bool(hole.all()):   # the hole vanishes (or is everything) at this grid
            return attend(call)
        cond = rows.get("cond", [])
        if call.txt is None:
            raise ValueError(f"{self.target.who}: this attention call has no text tokens.")
        q_img = router.take_rows(call.q, cond)[:, :, call.img]
        k_txt = router.take_rows(call.k, cond)[:, :, call.txt]
        c = self.relevance(prompt_scores(q_img, k_txt, self.target.tokens_in(call)), call.grid)
        if bool((c[:, ~hole] == 1).all()):          # nothing to scale: exactly the plain attention
            return attend(call)
        held = call.batch_rows if call.batch_rows is not None else list(range(call.q.shape[0]))
        c_rows = _row_c({k: [held[i] for i in v] for k, v in rows.items()}, c, fwd.per_chunk)
        targets = [i for i, r in enumerate(held) if r in c_rows]
        scale_k = torch.ones(len(targets), call.k.shape[2], device=call.k.device, dtype=torch.float32)
        scale_k[:, call.img] = key_scale(torch.stack([c_rows[held[i]] for i in targets]), hole)
        hole_q = call.img.start + hole.nonzero().flatten()
        if len(targets) == call.q.shape[0]:
            return painta_attention(call, attend, hole_q, scale_k)
        b, h, lq, _ = call.q.shape
        out = headsplit.output(b, h, lq, call.v.shape[-1], call.q)
        others = [i for i in range(b) if i not in set(targets)]
        out[others] = attend(call.subset(others))
        out[targets] = painta_attention(call.subset(targets), attend, hole_q, scale_k)
        return out


class BlockPAIntA(PAIntA):
    """PAIntA whose prompt relevance comes from the block's cross-attention (families with relevance "block"):
    attn1 runs plainly and is kept, the block's middle_patch reweights the hole tokens' output."""

    def __init__(self, target, blocks, window, family: Family, embedding, modules):
        super().__init__(target, blocks, window, family)
        self.family = family
        self.embedding = embedding        # the cond prompt's token embedding (1, Ltxt, C)
        self.modules = modules            # block id -> the module with norm2, attn1.to_out, attn2

    def _state(self, run):
        return run.slot(self, lambda: {"pending": {}, "y_plain": {}})

    def run(self, call, attend):
        self._state(call.run)["pending"][call.block] = (call.forward, call, attend)
        return attend(call)

    def attn1_output(self, n, extra_options):
        run = runstate.of(extra_options)
        if run is not None:
            state, bid = self._state(run), self.family.patch_block(extra_options)
            if bid in state["pending"]:
                state["y_plain"][bid] = n
        return n

    def middle(self, x, extra_options):
        run, fwd = runstate.of(extra_options), extra_options.get(router.KEY)
        if run is None:
            return x
        state, bid = self._state(run), self.family.patch_block(extra_options)
        entry = state["pending"].pop(bid, None)
        y_plain = state["y_plain"].pop(bid, None)
        if entry is None or y_plain is None or entry[0] is not fwd:
            return x
        _, call, attend = entry
        tb = self.modules[bid]
        hole = self.target.hole(call.grid, x.device, run)
        if not bool(hole.any()) or bool(hole.all()):
            return x
        rows = fwd.rows
        cond = rows["cond"]
        attn2 = tb.attn2
        emb = self.embedding.to(device=x.device, dtype=x.dtype)
        k2 = _heads(attn2.to_k(emb), attn2.heads)
        if max(self.target.tokens) >= k2.shape[2]:
            raise ValueError(f"{self.target.who}: the prompt tokens do not fit the encoded prompt.")
        x_cond = router.take_rows(x, cond)
        step = max(256, -(-x_cond.shape[1] // 8))                     # attn2's queries an eighth of the tokens at a time
        s = torch.cat([prompt_scores(_heads(attn2.to_q(tb.norm2(x_cond[:, r:r + step])), attn2.heads), k2,
                                     self.target.tokens) for r in range(0, x_cond.shape[1], step)], dim=1)
        c = self.relevance(s, call.grid)
        if bool((c[:, ~hole] == 1).all()):          # nothing to scale: the block stays exactly as it is
            return x
        c_rows = _row_c(rows, c, fwd.per_chunk)
        targets = sorted(c_rows)
        idx = hole.nonzero().flatten()
        scale_k = key_scale(torch.stack([c_rows[r] for r in targets]), hole)
        o = hole_attention(call.subset(targets), attend, idx, scale_k)              # (B, H, |hole|, D)
        y_new = tb.attn1.to_out(o.transpose(1, 2).reshape(o.shape[0], o.shape[2], -1).to(x.dtype))
        del o
        x = x.clone()
        t = torch.tensor(targets, device=x.device)[:, None]
        x[t, idx[None, :]] = x[t, idx[None, :]].sub_(y_plain[t, idx[None, :]]).add_(y_new)
        return x


# ------------------------------------------------------------------ which layers

AUTO = "paper levels (auto)"
CUSTOM = "custom"


def paper_blocks(model, who: str):
    """The self-attention at 1/2 and 1/4 of the latent size (16² and 32² at 512 px on SD1.5; a family whose
    self-attention runs at one size, a DiT's, takes every layer)."""
    family = families.detect(model, who)
    size = family.default_size()
    found = families.layers(model, size, size, family)
    lat = family.latent_size(size, size)[0]
    selfs = [layer for layer in found if layer.kind == family.self_kind]
    if not selfs:
        raise layerspec.LayerSpecError(f"{who}: this {family.label} model has no self-attention layers.")
    factors = {lat / layer.grid[0] for layer in selfs}
    # Without a level at 1/2 or 1/4 (e.g. a pruned UNet) the levels nearest to them count (log scale).
    wanted = {min(factors, key=lambda f: abs(math.log2(f / target))) for target in PAPER_FACTORS}
    return [layer.block for layer in selfs if lat / layer.grid[0] in wanted]


def resolve_blocks(model, choice: str, custom: str, who: str):
    family = families.detect(model, who)
    if choice == AUTO:
        return paper_blocks(model, who)
    found = [(layer.block, layer.kind) for layer in families.layers(model, 512, 512, family)]
    return layerspec.select(found, custom, family.label, (family.self_kind,), who)


# ------------------------------------------------------------------ install

def outer_sample_check(target, inpainting, downscale):
    def start(run):
        latent, denoise_mask = run.latent_image, run.denoise_mask
        if latent is not None and latent.ndim >= 4:
            target.check_latent(tuple(latent.shape[-2:]), downscale)
        if not inpainting and denoise_mask is None:
            raise ValueError(
                f"{target.who}: this model is not an inpainting model (its input has no mask channels) and the "
                "latent has no noise mask, so nothing keeps the known region. Use an inpainting checkpoint with "
                "InpaintModelConditioning, or give the latent a mask (Set Latent Noise Mask or VAE Encode (for "
                "Inpainting)).")
    return start


def install(model, target: InpaintTarget, blocks, window: schedule.Window, embedding, who: str, painta_on=True):
    """PAIntA on a clone `model` the caller owns; also stores `target` for the RASG sampler."""
    family = families.detect(model, who)
    effect = None
    if painta_on:
        if family.relevance == "block":
            dm = families.diffusion_model(model)
            effect = BlockPAIntA(target, blocks, window, family, embedding,
                                 {b: family.transformer_block(dm, b) for b in blocks})
            model.set_model_attn1_output_patch(effect.attn1_output)
            model.set_model_patch(effect.middle, "middle_patch")
        else:
            effect = PAIntA(target, blocks, window, family)
        router.install(model, effect, who)
    model.model_options.setdefault("transformer_options", {})[TARGET_KEY] = target
    hooks.on_run(model, KEY, outer_sample_check(target, family.inpaints(model.model), family.downscale))
    return effect
