"""Add-it (Tewel et al., ICLR 2025): weighted extended attention and the subject's attention maps.

The source row runs in lockstep with the target (samplers/addit.py, through samplers/trajectory.py). In every
active layer:
- source row: normal attention; its image-token K/V are kept for this step (per-run state, cleared every step);
- target rows (cond and uncond): queries attend to [K_src_img ; γ·K_tgt] with values [V_src_img ; V_tgt]
  (official `extend_type="pixels"`: γ scales the target's own keys, text and image, i.e. its logits; one SDPA
  over the concatenated keys, no L×L matrix; per group of heads when the concatenation would cost memory). A
  padding mask the model passes goes with the target's keys (the source's image keys are never padding); a mask
  that is more than padding is refused.
At the recording steps the attention mass of the target's image queries on the subject's text tokens is taken
as one more SDPA whose values are the subject-token indicator (zero-padded to the head width, so that the fused
kernels run: no attention matrix), in the
paper's layers (Flux double 13, 14, 18, single 23, 33) or the layers at the same relative depth (the family
adapter's `addit_layers`).
"""
import torch
import torch.nn.functional as F
from scipy.optimize import brentq

from .core import headsplit, masks, router, schedule

TARGET_ROLES = ("cond", "uncond")
WHO = "Sleight · Add-it"


def extended_attention(attend, q, k_src, v_src, k_tgt, v_tgt, gamma: float):
    """out = softmax(q·[k_src ; γ·k_tgt]ᵀ/√d)·[v_src ; v_tgt], through `attend(q, k, v)` (SDPA)."""
    n, h, lt, _ = k_tgt.shape
    ns = k_src.shape[2]
    k = k_tgt.new_empty(n, h, ns + lt, k_tgt.shape[3])
    k[:, :, :ns] = k_src
    torch.mul(k_tgt, gamma, out=k[:, :, ns:])          # γ·k_tgt written in place: no temporary
    v = torch.cat([v_src.expand(n, -1, -1, -1).to(v_tgt), v_tgt], dim=2)
    return attend(q, k, v)


def reference(q, k_src, v_src, k_tgt, v_tgt, gamma: float):
    """The direct formula with the full matrix (tests, benchmarks): softmax(q·[k_src ; γ·k_tgt]ᵀ/√d)·[v_src ; v_tgt]."""
    k = torch.cat([k_src.expand(q.shape[0], -1, -1, -1), gamma * k_tgt], 2)
    v = torch.cat([v_src.expand(q.shape[0], -1, -1, -1), v_tgt], 2)
    return torch.softmax(q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5, -1) @ v


def key_mass(q, k, key_weights, padding=None):
    """Σ_j softmax(q·kᵀ/√d)_ij · w_j for every query: attention mass on weighted keys, via SDPA with the weights
    as the values (no attention matrix is kept). Weights (Lk,) → (B, H, Lq); (Lk, C) → (B, H, Lq, C).
    `padding`: the model's key-padding bias (B, 1, 1, Lk), so padded keys get no mass, as in its own attention."""
    cols = key_weights.reshape(key_weights.shape[0], -1)
    c = cols.shape[1]
    # values as wide as the keys' heads: SDPA's fused kernels need it (1-wide values fall back to the full matrix)
    w = torch.zeros(cols.shape[0], max(c, q.shape[-1]), dtype=q.dtype, device=q.device)
    w[:, :c] = cols
    out = F.scaled_dot_product_attention(q, k.to(q), w[None, None].expand(q.shape[0], q.shape[1], -1, -1),
                                         attn_mask=None if padding is None else padding.to(q))
    return out[..., 0] if key_weights.ndim == 1 else out[..., :c]


def source_target_mass(q, k_ext, n_src: int, tgt_img: slice, padding=None):
    """(mass on the source image keys, mass on the target image keys) of the queries `q` over the extended keys
    [K_src_img (n_src) ; γ·K_tgt], summed over the queries and rows, averaged over the heads (official
    `store_attention_ratios`, ratio_source 'text'); `tgt_img` is the image slice within the target's keys."""
    w = torch.zeros(k_ext.shape[2], 2)
    w[:n_src, 0] = 1.0
    w[n_src + tgt_img.start:n_src + tgt_img.stop, 1] = 1.0
    m = key_mass(q, k_ext, w, padding).float().mean(1).sum((0, 1))
    return float(m[0]), float(m[1])


AUTO_RATIO, AUTO_RANGE, AUTO_XTOL = 1.05, (1.0, 1.2), 0.01   # official `target_auto_ratio`, brentq bracket, xtol
AUTO_START = 1.05                                             # official γ before the auto step


def solve_gamma(ratio_at, target: float = AUTO_RATIO, lo: float = AUTO_RANGE[0], hi: float = AUTO_RANGE[1],
                xtol: float = AUTO_XTOL):
    """γ in [lo, hi] with ratio_at(γ) = target (official: scipy brentq on text→target / text→source mass, each
    probe a full forward). Without a sign change in the bracket, the end whose ratio is closer to the target
    (the official code would raise there). Returns (γ, ratio at γ, {γ: ratio} of every probe)."""
    seen = {}

    def f(g):
        g = float(g)
        if g not in seen:
            seen[g] = float(ratio_at(g))
        return seen[g] - target

    f_lo, f_hi = f(lo), f(hi)
    if f_lo == 0 or f_hi == 0 or (f_lo < 0) != (f_hi < 0):
        g = float(brentq(f, lo, hi, xtol=xtol))
    else:
        g = lo if abs(f_lo) <= abs(f_hi) else hi
    f(g)
    return g, seen[g], seen


def attention_mask(maps, latent_hw, dilation: int = 1):
    """Add-it's mask from averaged subject attention maps (B,1,h,w): Gaussian blur (k=3, OpenCV's σ), Otsu per
    image, dilation by `dilation` tokens, nearest resize to the latent grid. 1 = where the object may appear."""
    maps = masks.gaussian_blur(maps.float(), masks.cv2_sigma(3), 1, pad="reflect")
    out = [(m >= masks.otsu_threshold(m)).float() for m in maps]
    mask = masks.dilate(torch.stack(out), dilation)
    return F.interpolate(mask, size=tuple(latent_hw), mode="nearest")


# ---------------------------------------------------------------- the effect

class AddItRun:
    """Add-it's state for one sampling run."""

    def __init__(self, gamma):
        self.gamma = gamma          # γ in use (auto γ replaces the start value at its step)
        self.cache = {}             # (block, kind) → (sigma, k_src_img, v_src_img), this step only
        self.maps, self.count = None, 0   # running sum of subject maps (B,1,h,w) and their count
        self.record_steps = set()
        self.probe = None           # auto γ: {"gamma", "mass": [source, target]} while a probe forward runs
        self.auto = None            # (γ, ratio, {γ: ratio}) of the auto solve
        self.mask = None            # the blend mask (B,1,h,w), once made

    def take_mask_maps(self):
        if self.maps is None or self.count == 0:
            return None
        return self.maps / self.count


class AddItAttention:
    order = 20   # extended attention: after prompt routing, before key masks and reweighting

    def __init__(self, gamma: float, windows: dict, record_layers: set, ratio_layers: set, subject_positions: list,
                 map_grid: tuple, own_text_len=None):
        self.gamma = float(gamma)               # γ at the start of a run
        self.windows = dict(windows)            # (block, kind) → end fraction of the schedule
        self.record_layers = set(record_layers)
        self.ratio_layers = set(ratio_layers)   # auto γ: layers whose attention masses decide it
        self.subject_positions = list(subject_positions)
        self.map_grid = tuple(map_grid)         # (h, w) the subject maps are averaged on
        self.own_text_len = own_text_len        # the target prompt's own token count (UNet: contexts may be
                                                # repeated to an LCM length)

    def state(self, run) -> AddItRun:
        return run.slot(self, lambda: AddItRun(self.gamma))

    def active(self, call) -> bool:
        end = self.windows.get((call.block, call.kind))
        total = call.forward.total_steps
        return end is not None and total > 0 and 0 <= call.step <= schedule.last_step(end, total)

    def records(self, call, st) -> bool:
        return (call.block, call.kind) in self.record_layers and call.step in st.record_steps

    def applies(self, call):
        rows = call.rows
        if router.SOURCE_ROLE in rows:
            return self.active(call)
        if not any(r in rows for r in TARGET_ROLES):
            return False
        st = self.state(call.run)
        return self.records(call, st) or (((call.block, call.kind) in st.cache or call.refs is not None)
                                          and self.active(call))

    def run(self, call, attend):
        rows, st = call.rows, self.state(call.run)
        if router.SOURCE_ROLE in rows:           # the source row: plain attention, keep its image K/V
            idx = rows[router.SOURCE_ROLE]
            st.cache[(call.block, call.kind)] = (call.sigma, call.k[idx][:, :, call.img], call.v[idx][:, :, call.img])
            return attend(call)
        entry = st.cache.get((call.block, call.kind))
        from_source = entry is not None and entry[0] == call.sigma and self.active(call)
        # edit models (Qwen-Image-Edit, Flux Kontext / Flux.2): the reference image in the call is the source
        from_refs = not from_source and call.refs is not None and self.active(call)
        target = sorted(r for role in TARGET_ROLES for r in rows.get(role, []))   # in the batch's order
        keep = sorted(set(range(call.q.shape[0])) - set(target))
        out = headsplit.output(*call.q.shape[:3], call.v.shape[-1], call.q) if keep else None
        if keep:
            out[keep] = attend(call.subset(keep))
        sub = call.subset(target)
        extended = from_source or from_refs
        record = st.probe is None and self.records(call, st) and "cond" in rows
        # the model's padding mask, carried through the key concatenation (source image keys are never padding)
        pad = call.key_padding(WHO) if (extended or record) else None
        pad = None if pad is None else router.take_rows(pad, target)
        if from_refs:                            # the reference tokens' own queries attend plainly
            refs = call.refs
            ref_out = attend(sub.replace(q=sub.q[:, :, refs]))
            k_src, v_src = sub.k[:, :, refs], sub.v[:, :, refs]
            sub = sub.replace(q=sub.q[:, :, :refs.start], k=sub.k[:, :, :refs.start], v=sub.v[:, :, :refs.start])
            pad = None if pad is None else pad[..., :refs.start]
        else:
            k_src, v_src = entry[1:] if from_source else (None, None)
        offset = k_src.shape[2] if extended else 0
        if extended and pad is not None:
            pad = torch.cat([pad.new_zeros(*pad.shape[:3], offset), pad], dim=-1)
        gamma = st.gamma if st.probe is None else st.probe["gamma"]
        measure = extended and st.probe is not None and (call.block, call.kind) in self.ratio_layers and "cond" in rows
        where = [target.index(r) for r in rows["cond"]] if measure or record else []
        pad_where = None if pad is None or not where else pad[where]
        weights = self._subject_weights(call, offset + sub.k.shape[2], offset) if record else None
        queries = call.txt if call.kind == "joint" and call.txt is not None else call.img
        heads, sums = call.q.shape[1], {"src": 0.0, "tgt": 0.0, "mass": 0.0}

        def group(part, hs):
            seen = {"k": part.k}

            def attend_qkv(q, k, v):
                seen["k"] = k
                return attend(part.replace(q=q, k=k, v=v, mask=pad))

            if extended:
                o = extended_attention(attend_qkv, part.q, k_src[:, hs], v_src[:, hs], part.k, part.v, gamma)
            else:
                o = attend(part)
            share = part.q.shape[1] / heads          # a group's mean over its heads, weighted into the mean over all
            if measure:   # auto γ: text queries (UNet self-attention has none: image queries) on source / target
                src, tgt = source_target_mass(part.q[where][:, :, queries], seen["k"][where], offset, call.img,
                                              pad_where)
                sums["src"] += src * share
                sums["tgt"] += tgt * share
            if record:
                q_img = part.q[where][:, :, call.img]
                sums["mass"] = sums["mass"] + key_mass(q_img, seen["k"][where], weights, pad_where).mean(1) * share
            return o

        temp = (headsplit.nbytes(sub.k) + headsplit.nbytes(sub.v)) * (offset + sub.k.shape[2]) // sub.k.shape[2]
        result = headsplit.by_heads(sub, attend, temp if extended else 0, group)
        if measure:        # the probe's sums (mean over layers = sum, for the ratio)
            st.probe["mass"][0] += sums["src"]
            st.probe["mass"][1] += sums["tgt"]
        if record:
            self._store_map(call, st, sums["mass"])
        if out is None and not from_refs:
            return result
        if out is None:
            out = headsplit.output(*call.q.shape[:3], call.v.shape[-1], call.q)
        out[target, :, :result.shape[2]] = result
        if from_refs:
            out[target, :, refs] = ref_out
        return out

    def ratio_at(self, st, gamma, forward):
        """text→target / text→source attention mass when `forward()` runs the target's cond rows with γ."""
        st.probe = {"gamma": float(gamma), "mass": [0.0, 0.0]}
        try:
            forward()
            src, tgt = st.probe["mass"]
        finally:
            st.probe = None
        if src <= 0:
            raise ValueError("Sleight · Add-it: auto gamma found no extended attention at its step; put the step "
                             "inside the extended-attention window or set gamma by hand.")
        return tgt / src

    def _subject_weights(self, call, n_keys, offset):
        """(n_keys,) weights of the subject's text tokens among the keys (mean over the subject's tokens); the
        positions count in the conditioning's own tokens (`call.prompt`, where the model adds glyph tokens)."""
        period = call.prompt.stop - call.prompt.start
        own = self.own_text_len or period
        if call.kind == "cross":             # UNet contexts may be repeated to an LCM length: count every copy
            own = max(min(own, period), 1)
            pos = [p for p in self.subject_positions if p < period]
            copies = {p: range(p, period, own) for p in pos}
        else:                                # where the tokenized prompt lands in the text sequence
            pos = [q for q in (call.family.text_position(p, own, period) for p in self.subject_positions)
                   if 0 <= q < period]
            copies = {q: (q,) for q in pos}
        if not pos:
            raise ValueError("Sleight · Add-it: the subject's tokens lie beyond this model's text tokens "
                             f"({period}); put the subject earlier in the prompt.")
        weights = torch.zeros(n_keys)
        txt0 = offset + call.prompt.start
        for p in pos:
            for c in copies[p]:
                weights[txt0 + c] = 1.0 / len(pos)
        return weights

    def _store_map(self, call, st, mass):
        """Add the cond rows' mean attention mass on the subject tokens (n, L_img) to the maps, on the map grid."""
        gh, gw = call.grid[-2:]
        # video: the frames' maps averaged, one map (and one blend mask) for the whole clip
        m = mass.float().reshape(mass.shape[0], 1, -1, gh, gw).mean(2)
        if (gh, gw) != self.map_grid:
            m = F.interpolate(m, size=self.map_grid, mode="bilinear", align_corners=False)
        m = m.cpu()
        st.maps = m if st.maps is None or st.maps.shape != m.shape else st.maps + m
        st.count += 1
