"""HD-Painter PAIntA: prompt-aware introverted attention (Manukyan et al., ICLR 2025; techniques.md §5).

In the chosen self-attention layers, for the first half of the schedule, the logits of *hole query → known key*
pairs are scaled by c_j ∈ [0, 1], the prompt relevance of known token j:
    s_j = Σ_{l∈T} P[j, l]      P = head-averaged softmax cross-attention probabilities of the cond prompt
    c_j = clip((G∗s)_j − median(G∗s)) / max(G∗s), 0, 1)          G: 3×3 Gaussian, σ = 0.5 (official kernel)
    S'_ij = S_ij · [(1 − M_ij)·c_j + M_ij],  M_ij = m_i·m_j + (1 − m_i)                       (m = hole)
on the cond and uncond rows, both with the cond's c. Scaling the logit q_i·k_j by c_j is scaling key j by c_j,
so the hole queries attend to keys scaled by c (hole keys by 1) and every other query to the plain keys: two
SDPA calls on a query split, never the L×L matrix.

Where the probabilities come from:
- UNet: the paper takes the block's attn2 weights on norm2(x + y_self), the block's hidden state *after* the
  unmodified self-attention. ComfyUI's `middle_patch` sees exactly x + y_self (between attn1 and attn2), so the
  router effect lets attn1 run unchanged and keeps its q/k/v; the middle patch computes c there and replaces the
  hole tokens' self-attention output: x[hole] += to_out(PAIntA attention) − to_out(plain attention).
- SD3 / Flux (joint attention): from the image-query → text-key probabilities of the same joint call (softmax
  over the text keys), so the call is rewritten in place.
"""
import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..samplers import schedule
from . import arch as arch_mod
from . import layerspec
from . import router

KEY = "sleight.painta"           # patch/wrapper key
TARGET_KEY = "sleight.hdpainter"  # transformer_options: the InpaintTarget, read by the RASG sampler
PAPER_FACTORS = (2, 4)           # painta_res = [16, 32] at 512 px: latent 64 / 4 and 64 / 2
PAPER_SUFFIX = "Full HD, 4K, high quality, high resolution"


# ------------------------------------------------------------------ what to paint: hole mask and prompt tokens

@dataclass
class InpaintTarget:
    """The hole (pixel-space mask, 1 = hole) and the prompt token positions T in the cond's text sequence."""

    mask: torch.Tensor                 # (H, W) float, CPU
    tokens: tuple                      # positions in the text sequence of the cond
    text_len: int                      # length of the text sequence they index
    who: str = "Sleight · PAIntA"
    _cache: dict = field(default_factory=dict, repr=False)

    def check_latent(self, latent_hw, down: int = 8):
        """The mask must cover the latent's image (same aspect ratio, to a pixel per latent cell)."""
        mh, mw = self.mask.shape[-2:]
        lh, lw = latent_hw
        if abs(mh * lw - mw * lh) > 0.05 * mh * lw:        # aspect ratios differ by more than 5 %
            raise ValueError(
                f"{self.who}: the mask is {mw}×{mh} px but the latent is {lw}×{lh} ({lw * down}×{lh * down} px): "
                f"they have different shapes. Use the mask of the image being inpainted (same size as the image).")

    def hole(self, grid, device) -> torch.Tensor:
        """Bool (h·w,): the hole at this token grid (area-resized, binarised at 0.5 as in the official code)."""
        # a mask made under inference_mode (a plain sampler on the server) cannot be saved for RASG's backward
        key = (tuple(grid), str(device), torch.is_inference_mode_enabled())
        if key not in self._cache:
            m = F.interpolate(self.mask[None, None].float(), size=tuple(grid), mode="area")[0, 0]
            self._cache[key] = (m > 0.5).reshape(-1).to(device)
        return self._cache[key]

    def __deepcopy__(self, memo):      # model_options are deep-copied on clone; the target is read-only
        return self


def as_mask(mask, who: str) -> torch.Tensor:
    if mask is None or not torch.is_tensor(mask) or mask.ndim not in (2, 3) or mask.numel() == 0:
        raise ValueError(f"{who}: the mask must be a MASK (height × width); connect the hole mask.")
    m = mask[0] if mask.ndim == 3 else mask
    m = m.detach().float().cpu()
    if not bool((m > 0.5).any()):
        raise ValueError(f"{who}: the mask has no hole (no value above 0.5); paint the region to inpaint.")
    if bool((m > 0.5).all()):
        raise ValueError(f"{who}: the mask covers the whole image, so there is no known region to reweight; "
                         "PAIntA needs a partial mask.")
    return m


def _segments(tokenized: dict, tokenizer, names):
    """Token lists of the first encoder in `names` present: (list of chunks of ids, start, end)."""
    for name in names:
        if name in tokenized:
            tk = getattr(tokenizer, {"l": "clip_l", "g": "clip_g", "t5xxl": "t5xxl"}[name], None)
            start = getattr(tk, "start_token", None)
            end = getattr(tk, "end_token", 49407 if name in ("l", "g") else 1)
            return [[t for t, *_ in chunk] for chunk in tokenized[name]], start, end
    return None


def _positions(chunks, start, end, limit=None):
    """(content positions, position of the end token after the last content token) over concatenated chunks."""
    content, eot, off = [], None, 0
    for chunk in chunks:
        first_end = next((i for i, t in enumerate(chunk) if t == end), len(chunk))
        body = [off + i for i in range(len(chunk)) if i < first_end and not (start is not None and chunk[i] == start)]
        if body or not content:
            eot = off + first_end if first_end < len(chunk) else None
        content += body
        off += len(chunk)
    return (content if limit is None else content[:limit]), eot, off


def prompt_tokens(clip, text: str, suffix: str, arch: arch_mod.Arch, text_len: int, who: str):
    """T: positions of the bare prompt's tokens plus the end token of the full prompt (official: token_idx =
    range(1, EOT(prompt)) + [EOT(full prompt)]), in the text sequence the model attends to."""
    full = f"{text}, {suffix}" if suffix.strip() else text
    bare_tok, full_tok = clip.tokenize(text), clip.tokenize(full)
    tk = clip.tokenizer
    parts = []       # (bare chunks, full chunks, start, end) per text segment, in sequence order
    groups = {"unet": [("l", "g")], "mmdit": [("l", "g"), ("t5xxl",)], "flux": [("t5xxl",)]}[arch.name]
    for names in groups:
        b, f = _segments(bare_tok, tk, names), _segments(full_tok, tk, names)
        if b is not None and f is not None:
            parts.append((b, f))
    # SD3 may run with CLIP only, T5 only or both: keep the combination whose length is the conditioning's
    lengths = [sum(len(c) for c in f[0]) for _, f in parts]
    chosen = None
    for pick in ([0, 1], [0], [1]) if len(parts) == 2 else ([0],):
        if sum(lengths[i] for i in pick if i < len(parts)) == text_len and all(i < len(parts) for i in pick):
            chosen = pick
            break
    if chosen is None:
        raise ValueError(f"{who}: the clip's tokens ({'+'.join(map(str, lengths))}) do not match the encoded prompt "
                         f"({text_len} tokens); connect the CLIP that belongs to this model.")
    tokens, off = [], 0
    for i in chosen:
        (bchunks, bstart, bend), (fchunks, fstart, fend) = parts[i]
        bare, _, _ = _positions(bchunks, bstart, bend)
        content, eot, seg_len = _positions(fchunks, fstart, fend, limit=len(bare))
        tokens += [off + p for p in content] + ([off + eot] if eot is not None and content else [])
        off += seg_len
    if not tokens:
        raise ValueError(f"{who}: the prompt has no tokens; describe what to paint in the hole (e.g. \"a red hat\").")
    return tuple(sorted(set(tokens)))


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
    """s (B, L): Σ_{l∈T} of the head-averaged softmax(q·k) over the text keys (fp32, like the official code)."""
    scale = q_img.shape[-1] ** -0.5 if scale is None else scale
    p = torch.softmax((q_img.float() @ k_txt.float().transpose(-1, -2)) * scale, dim=-1)   # (B, H, L, Ltxt)
    return p.mean(dim=1)[..., list(tokens)].sum(dim=-1)


def key_scale(c, hole) -> torch.Tensor:
    """(B, Lk): c_j for known keys, 1 for hole keys."""
    return torch.where(hole[None, :], torch.ones_like(c), c)


def _slice_q(t, idx):
    if t is None or t.ndim < 2 or t.shape[-2] == 1:
        return t
    return t[..., idx, :]


def hole_attention(q, k, v, hole_q, scale_k, attend, bias=None):
    """Attention of the hole queries `hole_q` (indices) with keys scaled per key: (B, H, |hole|, D)."""
    k_scaled = k * scale_k[:, None, :, None].to(k.dtype)
    return attend(q[:, :, hole_q], k_scaled, v, _slice_q(bias, hole_q))


def reference_painta(q, k, v, hole, c):
    """The paper's formula, materialised (tests only): softmax(S ⊙ [(1−M)c + M]) V."""
    s = (q.float() @ k.float().transpose(-1, -2)) * q.shape[-1] ** -0.5            # (B, H, L, L)
    m = hole.float()
    big_m = m[:, None] * m[None, :] + (1 - m)[:, None]                             # (L, L)
    factor = (1 - big_m)[None] * c[:, None, :] + big_m[None]                        # (B, L, L)
    return torch.softmax(s * factor[:, None], dim=-1) @ v.float()


def sdpa(q, k, v, bias=None):
    return F.scaled_dot_product_attention(q, k, v, attn_mask=None if bias is None else bias.to(q.dtype))


def efficient_painta(q, k, v, hole, c, attend=sdpa):
    """Query split + key scaling, equal to `reference_painta` without the L×L matrix."""
    out = attend(q, k, v, None)
    idx = hole.nonzero().flatten()
    out[:, :, idx] = hole_attention(q, k, v, idx, key_scale(c, hole), attend)
    return out


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
    order = 40   # reweighting: after routing (10), extended attention (20) and key masks (30)

    def __init__(self, target: InpaintTarget, blocks, window: schedule.Window, embedding=None, unet_blocks=None):
        self.target = target
        self.blocks = frozenset(blocks)
        self.window = window
        self.embedding = embedding        # UNet: the cond prompt's token embedding (1, Ltxt, C)
        self.unet_blocks = unet_blocks or {}
        self.relevance = relevance        # c from s (a test sets c ≡ 1 here)
        self.pending = {}                 # UNet block id -> (Forward, call) of its attn1 in this forward
        self.y_plain = {}                 # UNet block id -> to_out(plain attn1 output)

    def clear(self):
        self.pending.clear()
        self.y_plain.clear()

    def active(self, fwd) -> bool:
        return "cond" in fwd.rows and self.window.contains(fwd.model_sampling, fwd.sigma)

    def applies(self, call):
        if call.block not in self.blocks or not self.active(call.forward):
            return False
        return call.kind == ("self" if call.forward.arch.name == "unet" else "joint")

    def run(self, call, attend):
        if call.forward.arch.name == "unet":
            self.pending[call.block] = (call.forward, call)
            return attend(call)
        return self._joint(call, attend)

    # ---- DiT: relevance and reweighting in the same joint call
    def _joint(self, call, attend):
        fwd, rows = call.forward, call.rows
        hole = self.target.hole(call.grid, call.q.device)
        if not bool(hole.any()) or bool(hole.all()):   # the hole vanishes (or is everything) at this grid
            return attend(call)
        cond = rows.get("cond", [])
        if call.txt is None or max(self.target.tokens) >= call.txt.stop - call.txt.start:
            raise ValueError(f"{self.target.who}: the prompt tokens do not fit this model's text sequence; "
                             "use the node's conditioning output as the sampler's positive.")
        q_img = call.q[cond][:, :, call.img]
        k_txt = call.k[cond][:, :, call.txt]
        c = self.relevance(prompt_scores(q_img, k_txt, self.target.tokens), call.grid)
        if bool((c[:, ~hole] == 1).all()):          # nothing to scale: exactly the plain attention
            return attend(call)
        per = fwd.batch // max(len(fwd.cond_or_uncond), 1)
        held = call.batch_rows if call.batch_rows is not None else list(range(call.q.shape[0]))
        c_rows = _row_c({k: [held[i] for i in v] for k, v in rows.items()}, c, per)
        targets = [i for i, r in enumerate(held) if r in c_rows]
        lq = call.q.shape[2]
        hole_q = call.img.start + hole.nonzero().flatten()
        keep = torch.ones(lq, dtype=torch.bool, device=call.q.device)
        keep[hole_q] = False
        keep_q = keep.nonzero().flatten()
        out = attend(call) if len(targets) < call.q.shape[0] else None
        sub = call.subset(targets)
        scale_k = torch.ones(len(targets), call.k.shape[2], device=call.k.device, dtype=torch.float32)
        c_t = torch.stack([c_rows[held[i]] for i in targets])
        scale_k[:, call.img] = key_scale(c_t, hole)

        rest = attend(sub.replace(q=sub.q[:, :, keep_q], bias=_slice_q(sub.bias, keep_q), mask=_slice_q(sub.mask, keep_q)))
        hole_out = attend(sub.replace(q=sub.q[:, :, hole_q], k=sub.k * scale_k[:, None, :, None].to(sub.k.dtype),
                                      bias=_slice_q(sub.bias, hole_q), mask=_slice_q(sub.mask, hole_q)))
        mixed = torch.empty(len(targets), call.q.shape[1], lq, rest.shape[-1], dtype=rest.dtype, device=rest.device)
        mixed[:, :, keep_q] = rest
        mixed[:, :, hole_q] = hole_out
        if out is None:
            return mixed
        out[targets] = mixed
        return out

    # ---- UNet: the block's middle_patch (x = x_in + y_plain, between attn1 and attn2)
    def attn1_output(self, n, extra_options):
        bid = _unet_bid(extra_options)
        if bid in self.pending:
            self.y_plain[bid] = n
        return n

    def middle(self, x, extra_options):
        bid = _unet_bid(extra_options)
        entry = self.pending.pop(bid, None)
        y_plain = self.y_plain.pop(bid, None)
        fwd = extra_options.get(router.KEY)
        if entry is None or y_plain is None or entry[0] is not fwd:
            return x
        call = entry[1]
        tb = self.unet_blocks[bid]
        hole = self.target.hole(call.grid, x.device)
        if not bool(hole.any()) or bool(hole.all()):
            return x
        rows = fwd.rows
        cond = rows["cond"]
        attn2 = tb.attn2
        emb = self.embedding.to(device=x.device, dtype=x.dtype)
        q2 = attn2.to_q(tb.norm2(x[cond]))
        k2 = attn2.to_k(emb)
        h2 = attn2.heads
        q2 = q2.reshape(q2.shape[0], q2.shape[1], h2, -1).transpose(1, 2)
        k2 = k2.reshape(k2.shape[0], k2.shape[1], h2, -1).transpose(1, 2)
        if max(self.target.tokens) >= k2.shape[2]:
            raise ValueError(f"{self.target.who}: the prompt tokens do not fit the encoded prompt.")
        c = self.relevance(prompt_scores(q2, k2, self.target.tokens), call.grid)
        if bool((c[:, ~hole] == 1).all()):          # nothing to scale: the block stays exactly as it is
            return x
        per = fwd.batch // max(len(fwd.cond_or_uncond), 1)
        c_rows = _row_c(rows, c, per)
        targets = sorted(c_rows)
        idx = hole.nonzero().flatten()
        scale_k = key_scale(torch.stack([c_rows[r] for r in targets]), hole)
        q, k, v = call.q[targets], call.k[targets], call.v[targets]
        bias = call.bias[targets] if call.bias is not None and call.bias.shape[0] == call.q.shape[0] else call.bias
        heads = call.heads

        def attend(q_, k_, v_, b_):
            from comfy.ldm.modules import attention
            return attention.optimized_attention(q_, k_, v_, heads, mask=b_, skip_reshape=True, skip_output_reshape=True)

        o = hole_attention(q, k, v, idx, scale_k, attend, bias)                     # (B, H, |hole|, D)
        o = o.transpose(1, 2).reshape(o.shape[0], o.shape[2], -1)
        y_new = tb.attn1.to_out(o.to(x.dtype))
        x = x.clone()
        t = torch.tensor(targets, device=x.device)
        x[t[:, None], idx[None, :]] = x[t[:, None], idx[None, :]] - y_plain[t[:, None], idx[None, :]] + y_new
        return x


def _unet_bid(extra_options) -> str:
    block = extra_options.get("block") or ("unknown", 0)
    return f"{block[0]}.{block[1]}.{extra_options.get('block_index', 0)}"


def unet_block_modules(model, blocks):
    """Block id -> BasicTransformerBlock of a UNet (the modules the middle patch needs: norm2, attn2, attn1.to_out)."""
    dm = model.model.diffusion_model
    out = {}
    for bid in blocks:
        part, i, j = bid.split(".")
        seq = {"input": lambda n: dm.input_blocks[n], "output": lambda n: dm.output_blocks[n],
               "middle": lambda n: dm.middle_block}[part](int(i))
        st = [m for m in seq if type(m).__name__ == "SpatialTransformer"][0]
        out[bid] = st.transformer_blocks[int(j)]
    return out


# ------------------------------------------------------------------ which layers

AUTO = "paper levels (auto)"
CUSTOM = "custom"


def paper_blocks(model, who: str):
    """UNet: the self-attention at 1/2 and 1/4 of the latent size (16² and 32² at 512 px, SD1.5); DiT: every joint block."""
    a = arch_mod.detect(model, who)
    size = 1024 if a.family == "SDXL" else 512
    layers = arch_mod.list_layers(model, size, size)
    if a.name != "unet":
        return [layer.block for layer in layers if layer.kind == "joint"]
    lat = size // 8
    selfs = [layer for layer in layers if layer.kind == "self"]
    if not selfs:
        raise layerspec.LayerSpecError(f"{who}: this {a.family} model has no self-attention layers.")
    factors = {lat / layer.grid[0] for layer in selfs}
    # A UNet without a level at 1/2 or 1/4 (e.g. a pruned one) takes the levels nearest to them (log scale).
    wanted = {min(factors, key=lambda f: abs(math.log2(f / target))) for target in PAPER_FACTORS}
    return [layer.block for layer in selfs if lat / layer.grid[0] in wanted]


def resolve_blocks(model, choice: str, custom: str, who: str):
    a = arch_mod.detect(model, who)
    if choice == AUTO:
        return paper_blocks(model, who)
    kinds = ("self",) if a.name == "unet" else ("joint",)
    layers = [(layer.block, layer.kind) for layer in arch_mod.list_layers(model, 512, 512)]
    return layerspec.select(layers, custom, a.family, kinds, who)


# ------------------------------------------------------------------ install

def is_inpainting_model(model) -> bool:
    """9-channel SD1.5/SDXL inpainting, Flux Fill: the model takes the mask as a concat input."""
    base = model.model
    if getattr(base, "concat_keys", ()):
        return True
    cfg = getattr(base.model_config, "unet_config", {}) or {}
    ch = getattr(base.latent_format, "latent_channels", 4)
    return int(cfg.get("in_channels", ch) or ch) > ch


def outer_sample_check(target, inpainting, state):
    def wrapper(executor, *args, **kwargs):
        latent = args[1] if len(args) > 1 else kwargs.get("latent_image")
        denoise_mask = args[4] if len(args) > 4 else kwargs.get("denoise_mask")
        if latent is not None and latent.ndim >= 4:
            target.check_latent(tuple(latent.shape[-2:]))
        if not inpainting and denoise_mask is None:
            raise ValueError(
                f"{target.who}: this model is not an inpainting model (its input has no mask channels) and the "
                "latent has no noise mask, so nothing keeps the known region. Use an inpainting checkpoint with "
                "InpaintModelConditioning, or give the latent a mask (Set Latent Noise Mask or VAE Encode (for "
                "Inpainting)).")
        try:
            return executor(*args, **kwargs)
        finally:
            if state is not None:
                state.clear()
    return wrapper


def install(model, target: InpaintTarget, blocks, window: schedule.Window, embedding, who: str, painta_on=True):
    """PAIntA on a clone `model` the caller owns; also stores `target` for the RASG sampler."""
    import comfy.patcher_extension as pe

    a = arch_mod.detect(model, who)
    effect = None
    if painta_on:
        unet = unet_block_modules(model, blocks) if a.name == "unet" else None
        effect = PAIntA(target, blocks, window, embedding, unet)
        router.install(model, effect, who)
        if a.name == "unet":
            model.set_model_attn1_output_patch(effect.attn1_output)
            model.set_model_patch(effect.middle, "middle_patch")
    model.model_options.setdefault("transformer_options", {})[TARGET_KEY] = target
    model.remove_wrappers_with_key(pe.WrappersMP.OUTER_SAMPLE, KEY)
    model.add_wrapper_with_key(pe.WrappersMP.OUTER_SAMPLE, KEY, outer_sample_check(target, is_inpainting_model(model), effect))
    return effect
