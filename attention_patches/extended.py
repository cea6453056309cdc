"""Add-it (Tewel et al., ICLR 2025): weighted extended attention, subject attention maps, latent surgery.

The source row runs in lockstep with the target (samplers/trajectory.py `add_source_row`). In every active layer:
- source row: normal attention; its image-token K/V are kept for this step (`cache`, cleared every step);
- target rows (cond and uncond): queries attend to [K_src_img ; γ·K_tgt] with values [V_src_img ; V_tgt]
  (official `extend_type="pixels"`: γ scales the target's own keys, text and image, i.e. its logits; one SDPA
  over the concatenated keys, no L×L matrix).
At the recording steps the attention mass of the target's image queries on the subject's text tokens is taken
as one more SDPA whose values are the subject-token indicator (an Lq×1 output, no attention matrix), in the
paper's layers (Flux double 13, 14, 18, single 23, 33) or the layers at the same relative depth.
"""
import logging

import torch
import torch.nn.functional as F

import comfy.samplers

from ..samplers import schedule
from ..samplers.trajectory import SOURCE_ROLE
from . import arch as arch_mod

FLUX_DOUBLE, FLUX_SINGLE = 19, 38
PAPER_RECORD_DEPTHS = tuple(i / 57 for i in (13, 14, 18, 19 + 23, 19 + 33))   # Flux's 57 blocks
DOUBLE_SHARE = FLUX_DOUBLE / (FLUX_DOUBLE + FLUX_SINGLE)                       # first third of the depth
TARGET_ROLES = ("cond", "uncond")
log = logging.getLogger("sleight")


def step_at(fraction: float, total: int) -> int:
    """The step index a schedule fraction names (10/30 of 30 steps → 10), for any step count."""
    return int(round(fraction * total))


def plan_layers(model, double_end: float, single_end: float):
    """(layer → end fraction of the extended-attention window, layers recording the subject map).

    Flux: double blocks use `double_end`, single blocks `single_end` (paper: 10/30, 20/30). SD3 joint blocks and
    UNet self-attention layers: the first third of the depth (Flux's 19 of 57 double blocks) uses `double_end`,
    the rest `single_end`. Recording: the paper's Flux blocks, else the text-attending layers (joint / UNet
    cross-attention) at the same relative depths."""
    a = arch_mod.detect(model)
    layers = arch_mod.list_layers(model, 64, 64)
    ext_kind = "self" if a.name == "unet" else "joint"
    rec_kind = "cross" if a.name == "unet" else "joint"
    ext = [layer.block for layer in layers if layer.kind == ext_kind]
    windows = {}
    for j, block in enumerate(ext):
        if a.name == "flux":
            windows[(block, ext_kind)] = double_end if block.startswith("double") else single_end
        else:
            windows[(block, ext_kind)] = double_end if j / len(ext) < DOUBLE_SHARE else single_end
    rec = [layer.block for layer in layers if layer.kind == rec_kind]
    record = {(rec[min(len(rec) - 1, int(d * len(rec)))], rec_kind) for d in PAPER_RECORD_DEPTHS}
    return windows, record


def extended_attention(attend, q, k_src, v_src, k_tgt, v_tgt, gamma: float):
    """out = softmax(q·[k_src ; γ·k_tgt]ᵀ/√d)·[v_src ; v_tgt], through `attend(q, k, v)` (SDPA)."""
    n = q.shape[0]
    k = torch.cat([k_src.expand(n, -1, -1, -1).to(k_tgt), k_tgt * gamma], dim=2)
    v = torch.cat([v_src.expand(n, -1, -1, -1).to(v_tgt), v_tgt], dim=2)
    return attend(q, k, v)


def key_mass(q, k, key_weights):
    """Σ_j softmax(q·kᵀ/√d)_ij · w_j for every query: attention mass on weighted keys, via SDPA with the weights
    as the values (no attention matrix is kept). Weights (Lk,) → (B, H, Lq); (Lk, C) → (B, H, Lq, C)."""
    cols = key_weights.reshape(key_weights.shape[0], -1)
    w = cols.to(q)[None, None].expand(q.shape[0], q.shape[1], -1, -1)
    out = F.scaled_dot_product_attention(q, k.to(q), w)
    return out[..., 0] if key_weights.ndim == 1 else out


def source_target_mass(q, k_ext, n_src: int, tgt_img: slice):
    """(mass on the source image keys, mass on the target image keys) of the queries `q` over the extended keys
    [K_src_img (n_src) ; γ·K_tgt], summed over the queries and rows, averaged over the heads (official
    `store_attention_ratios`, ratio_source 'text'); `tgt_img` is the image slice within the target's keys."""
    w = torch.zeros(k_ext.shape[2], 2)
    w[:n_src, 0] = 1.0
    w[n_src + tgt_img.start:n_src + tgt_img.stop, 1] = 1.0
    m = key_mass(q, k_ext, w).float().mean(1).sum((0, 1))
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
        from scipy.optimize import brentq

        g = float(brentq(f, lo, hi, xtol=xtol))
    else:
        g = lo if abs(f_lo) <= abs(f_hi) else hi
    f(g)
    return g, seen[g], seen


# ---------------------------------------------------------------- the mask pipeline (blur, Otsu, dilate)

def gaussian_blur(x, kernel: int = 3):
    """(B,1,H,W) blur with OpenCV's default sigma for the kernel size (0.3·((k−1)/2 − 1) + 0.8), reflect pad."""
    sigma = 0.3 * ((kernel - 1) * 0.5 - 1) + 0.8
    r = kernel // 2
    t = torch.arange(kernel, dtype=torch.float32) - r
    g = torch.exp(-t ** 2 / (2 * sigma ** 2))
    g = (g / g.sum()).to(x)
    x = F.pad(x, (r, r, r, r), mode="reflect") if min(x.shape[-2:]) > r else F.pad(x, (r, r, r, r), mode="replicate")
    x = F.conv2d(x, g.reshape(1, 1, 1, -1))
    return F.conv2d(x, g.reshape(1, 1, -1, 1))


def otsu_threshold(values, bins: int = 256) -> float:
    """Otsu's threshold of a 1-d tensor (maximises the between-class variance over a histogram)."""
    v = values.float().flatten()
    lo, hi = float(v.min()), float(v.max())
    if hi <= lo:
        return hi
    hist = torch.histc(v, bins=bins, min=lo, max=hi)
    centers = lo + (torch.arange(bins, dtype=torch.float32) + 0.5) * (hi - lo) / bins
    w0 = torch.cumsum(hist, 0)
    w1 = w0[-1] - w0
    m0 = torch.cumsum(hist * centers, 0)
    mu0 = m0 / w0.clamp(min=1e-12)
    mu1 = (m0[-1] - m0) / w1.clamp(min=1e-12)
    between = w0 * w1 * (mu0 - mu1) ** 2
    between[(w0 == 0) | (w1 == 0)] = -1
    i = int(torch.argmax(between))
    return float(lo + (i + 1) * (hi - lo) / bins)      # upper edge of the last bin of the lower class


def dilate(mask, radius: int):
    if radius <= 0:
        return mask
    return F.max_pool2d(mask, 2 * radius + 1, stride=1, padding=radius)


def attention_mask(maps, latent_hw, dilation: int = 1):
    """Add-it's mask from averaged subject attention maps (B,1,h,w): Gaussian blur (k=3), Otsu per image,
    dilation by `dilation` tokens, nearest resize to the latent grid. 1 = where the object may appear."""
    maps = gaussian_blur(maps.float(), 3)
    out = []
    for m in maps:
        out.append((m >= otsu_threshold(m)).float())
    mask = dilate(torch.stack(out), dilation)
    return F.interpolate(mask, size=tuple(latent_hw), mode="nearest")


# ---------------------------------------------------------------- the effect

class AddItAttention:
    order = 20   # extended attention: after prompt routing, before key masks and reweighting

    def __init__(self, gamma: float, windows: dict, record_layers: set, subject_positions: list,
                 record_steps=(), arch_name: str = "flux"):
        self.gamma = float(gamma)
        self.windows = dict(windows)            # (block, kind) → end fraction of the schedule
        self.record_layers = set(record_layers)
        self.subject_positions = list(subject_positions)
        self.record_steps = set(record_steps)
        self.arch_name = arch_name
        self.cache = {}                          # (block, kind) → (sigma, k_src_img, v_src_img), this step only
        self.maps = None                         # running sum of subject maps (B,1,h,w) and their count
        self.count = 0
        self.key = f"addit-{id(self):x}"
        self.last_mask = None                    # the blend mask of the last run (B,1,h,w), for inspection
        # auto γ: layers whose attention masses decide it (Flux: the double-stream blocks, as the official
        # 'transformer_blocks'; elsewhere every extended layer), and the running [source, target] masses of a probe
        self.ratio_layers = {lk for lk in self.windows if arch_name != "flux" or lk[0].startswith("double")}
        self.probe = None
        self.auto = None                         # (γ, ratio, {γ: ratio}) of the last auto solve

    def active(self, call) -> bool:
        end = self.windows.get((call.block, call.kind))
        total = schedule.total_steps(call.forward.sample_sigmas)
        return end is not None and total > 0 and 0 <= call.step < step_at(end, total)

    def records(self, call) -> bool:
        return (call.block, call.kind) in self.record_layers and call.step in self.record_steps

    def applies(self, call):
        rows = call.rows
        if SOURCE_ROLE in rows:
            return self.active(call)
        if not any(r in rows for r in TARGET_ROLES):
            return False
        return self.records(call) or ((call.block, call.kind) in self.cache and self.active(call))

    def run(self, call, attend):
        rows = call.rows
        if SOURCE_ROLE in rows:                  # the source row: plain attention, keep its image K/V
            idx = rows[SOURCE_ROLE]
            self.cache[(call.block, call.kind)] = (call.sigma, call.k[idx][:, :, call.img], call.v[idx][:, :, call.img])
            return attend(call)
        if call.mask is not None:
            raise ValueError("Sleight · Add-it: this model passes an attention mask to its attention; extended "
                             "attention is not supported on it.")
        entry = self.cache.get((call.block, call.kind))
        extended = entry is not None and entry[0] == call.sigma and self.active(call)
        target = [r for role in TARGET_ROLES for r in rows.get(role, [])]
        out = torch.empty_like(call.q)
        keep = [r for r in range(call.q.shape[0]) if r not in set(target)]
        if keep:
            out[keep] = attend(call.subset(keep))
        sub = call.subset(target)
        offset = 0
        if extended:
            _, k_src, v_src = entry
            offset = k_src.shape[2]
            seen = {}

            def attend_qkv(q, k, v):
                seen["sub"] = sub.replace(q=q, k=k, v=v)
                return attend(seen["sub"])

            gamma = self.gamma if self.probe is None else self.probe["gamma"]
            out[target] = extended_attention(attend_qkv, sub.q, k_src, v_src, sub.k, sub.v, gamma)
            sub = seen["sub"]
            if self.probe is not None and (call.block, call.kind) in self.ratio_layers and "cond" in rows:
                self._measure(call, sub, [target.index(r) for r in rows["cond"]], offset)
        else:
            out[target] = attend(sub)
        if self.probe is None and self.records(call) and "cond" in rows:
            self._record(call, sub, rows["cond"], target, offset)
        return out

    def _measure(self, call, sub, where, offset):
        """Auto γ: mass of the text queries (UNet self-attention, which has none: the image queries) on the source
        and on the target image keys, added to the probe's sums (mean over layers = sum, for the ratio)."""
        queries = call.txt if call.kind == "joint" and call.txt is not None else call.img
        src, tgt = source_target_mass(sub.q[where][:, :, queries], sub.k[where], offset, call.img)
        self.probe["mass"][0] += src
        self.probe["mass"][1] += tgt

    def ratio_at(self, gamma, forward):
        """text→target / text→source attention mass when `forward()` runs the target's cond rows with γ."""
        self.probe = {"gamma": float(gamma), "mass": [0.0, 0.0]}
        try:
            forward()
            src, tgt = self.probe["mass"]
        finally:
            self.probe = None
        if src <= 0:
            raise ValueError("Sleight · Add-it: auto gamma found no extended attention at its step; put the step "
                             "inside the extended-attention window or set gamma by hand.")
        return tgt / src

    def _record(self, call, sub, cond_rows, target, offset):
        """Mean attention mass of the cond rows' image queries on the subject tokens, on the latent grid."""
        pos = [p for p in self.subject_positions if p < (call.txt.stop - call.txt.start)]
        if not pos:
            raise ValueError("Sleight · Add-it: the subject's tokens lie beyond this model's text tokens "
                             f"({call.txt.stop - call.txt.start}); put the subject earlier in the prompt.")
        weights = torch.zeros(sub.k.shape[2])
        txt0 = offset + call.txt.start
        period = call.txt.stop - call.txt.start
        own = period
        if call.kind == "cross":             # UNet contexts may be repeated to an LCM length: count every copy
            own = max(min(self.own_text_len or period, period), 1)
        for p in pos:
            for c in range(p, period, own):
                weights[txt0 + c] = 1.0 / len(pos)
        where = [target.index(r) for r in cond_rows]
        q_img = sub.q[where][:, :, call.img]
        mass = key_mass(q_img, sub.k[where], weights).mean(1)          # (n, L_img)
        gh, gw = call.grid
        m = mass.float().reshape(len(where), 1, gh, gw)
        size = self.map_grid or (gh, gw)
        if (gh, gw) != tuple(size):
            m = F.interpolate(m, size=tuple(size), mode="bilinear", align_corners=False)
        m = m.cpu()
        self.maps = m if self.maps is None or self.maps.shape != m.shape else self.maps + m
        self.count += 1

    own_text_len = None      # the target prompt's own token count (UNet: contexts may be repeated to an LCM)
    map_grid = None          # (h, w) the subject maps are averaged on: the token grid of the largest layer

    def take_mask_maps(self):
        if self.maps is None or self.count == 0:
            return None
        return self.maps / self.count

    def reset_run(self):
        self.cache.clear()
        self.maps, self.count = None, 0


def subject_positions(clip, prompt: str, subject: str, arch: arch_mod.Arch, who: str = "Sleight · Add-it"):
    """Indices of the subject's tokens among the text tokens attention sees, for this architecture:
    SD1.5/SDXL the CLIP tokens (77 per chunk); SD3 the CLIP tokens then T5 after the 77 CLIP tokens; Flux the T5
    tokens. Every occurrence of the subject's token sequence counts; any number of tokens."""
    if not subject.strip():
        raise ValueError(f"{who}: subject is empty; write the word(s) of the prompt that name the new object.")
    tokens = clip.tokenize(prompt)
    alone = clip.tokenize(subject)
    empty = clip.tokenize("")
    keys = {"unet": ["l", "g"], "mmdit": ["l", "g", "t5xxl"], "flux": ["t5xxl"]}[arch.name]
    positions = []
    used = False
    for key in keys:
        if key not in tokens:
            continue
        if arch.name == "mmdit" and key == "g" and "l" in tokens:
            continue                                   # l and g share positions (concatenated on features)
        if arch.name == "unet" and key == "g" and "l" in tokens:
            continue
        used = True
        special = {t[0] for chunk in empty[key] for t in chunk}
        want = [t[0] for chunk in alone[key] for t in chunk if t[0] not in special]
        flat = [t[0] for chunk in tokens[key] for t in chunk]
        base = 77 if (arch.name == "mmdit" and key == "t5xxl") else 0
        found = _find(flat, want)
        positions += [base + p for p in found]
    if not used:
        raise ValueError(f"{who}: this CLIP has no tokenizer for {arch.family}; load the model's own text encoders.")
    if not positions:
        raise ValueError(f"{who}: the subject \"{subject}\" does not appear in the prompt \"{prompt}\"; write it "
                         "exactly as in the prompt (e.g. prompt 'a dog on the sofa', subject 'dog').")
    return sorted(set(positions))


def _find(seq, sub):
    if not sub:
        return []
    out = []
    for i in range(len(seq) - len(sub) + 1):
        if seq[i:i + len(sub)] == sub:
            out += range(i, i + len(sub))
    return out


def prompt_token_count(clip, prompt: str, arch: arch_mod.Arch) -> int:
    """How many context tokens the prompt itself makes on a UNet (77 per CLIP chunk)."""
    tokens = clip.tokenize(prompt)
    key = "l" if "l" in tokens else next(iter(tokens))
    return sum(len(chunk) for chunk in tokens[key])


def pixel_mask(mask_latent, downscale: int):
    """(B,1,h,w) latent mask → ComfyUI MASK (B, h·s, w·s)."""
    return F.interpolate(mask_latent.float(), scale_factor=downscale, mode="nearest")[:, 0]


def user_mask_to_latent(mask, latent_hw, downscale: int, batch: int, who: str = "Sleight · Add-it"):
    """A ComfyUI MASK (B,H,W) at the image's pixel size (or latent size) → (B,1,h,w) on the latent grid."""
    if mask.ndim == 2:
        mask = mask[None]
    h, w = latent_hw
    if tuple(mask.shape[-2:]) not in ((h * downscale, w * downscale), (h, w)):
        raise ValueError(f"{who}: the mask is {mask.shape[-1]}x{mask.shape[-2]} but the image is "
                         f"{w * downscale}x{h * downscale}; resize the mask to the image size.")
    if mask.shape[0] not in (1, batch):
        raise ValueError(f"{who}: the mask batch ({mask.shape[0]}) must be 1 or the latent batch ({batch}).")
    m = F.interpolate(mask[:, None].float(), size=(h, w), mode="area")
    return m.expand(batch, -1, -1, -1) if m.shape[0] == 1 else m


# ---------------------------------------------------------------- wiring: source row, structure transfer, blending

class AddItSettings:
    """Timing as fractions of the step count (paper, 30 steps): extended attention in double-stream layers for
    steps [0, 10/30), single-stream [0, 20/30); structure transfer at 2/30 (generated) or 4/30 (real); subject
    maps recorded at steps b−2..b and the latents blended right after step b, b = 15/30 (generated) or 18/30
    (real). A fraction ≥ 1 switches that part off."""

    def __init__(self, gamma, double_end, single_end, structure_at, blend_at, dilation=1, user_mask=None,
                 auto_at=None):
        self.gamma, self.double_end, self.single_end = gamma, double_end, single_end
        self.auto_at = auto_at     # auto γ: the step fraction it is solved at (official 5/30), None = fixed γ
        self.structure_at, self.blend_at, self.dilation, self.user_mask = structure_at, blend_at, dilation, user_mask


def paper_defaults(real: bool) -> dict:
    return {"gamma": 1.1 if real else 1.05, "structure_at": (4 if real else 2) / 30, "blend_at": (18 if real else 15) / 30,
            "auto_at": 5 / 30}


def install(model, trajectory, positions, settings: AddItSettings, own_text_len=None, who="Sleight · Add-it"):
    """Add-it on a clone of `model`; returns (clone, effect). The effect's `last_mask` holds the blend mask
    of the last run on the latent grid (B,1,h,w)."""
    from ..samplers import trajectory as traj_mod
    from . import router

    m = model.clone()
    a = arch_mod.detect(m, who)
    windows, record = plan_layers(m, settings.double_end, settings.single_end)
    effect = AddItAttention(settings.gamma, windows, record, positions, arch_name=a.name)
    effect.own_text_len = own_text_len
    clean = trajectory.clean
    latent_hw = tuple(clean.shape[-2:])
    effect.map_grid = a.image_grid(latent_hw) if a.name != "unet" else latent_hw
    ext_end = max(settings.double_end, settings.single_end)

    def before_source(run, x, timestep):
        total = len(run.sigmas) - 1
        if "init" not in run.done:
            run.done.add("init")
            effect.reset_run()
            effect.last_mask = None
            effect.gamma = settings.gamma        # auto: the steps before the solve use the start value
            b = step_at(settings.blend_at, total)
            effect.record_steps = set(range(b - 2, b + 1)) if settings.user_mask is None and b + 1 < total else set()
        i, exact = run.step_of(timestep)
        if not exact or ("step", i) in run.done:
            return
        run.done.add(("step", i))
        sigma = run.sigmas[i].reshape(1).to(x)
        if i == step_at(settings.structure_at, total) and i < total:
            # structure transfer: x_tgt ← clean source re-noised with the target's own noise (official code)
            x.copy_(run.model_sampling.noise_scaling(sigma, run.noise.to(x), clean.to(x)))
        b = step_at(settings.blend_at, total)
        if i == b + 1 and i < total:
            mask = _blend_mask(effect, settings, latent_hw, x.shape[0], who)
            if mask is not None:
                mask = mask.to(x)
                effect.last_mask = mask.cpu()
                src = run.source_at(timestep, x)
                x.copy_(mask * x + (1 - mask) * src)   # x_tgt = m·x_tgt + (1 − m)·x_src

    def active(run, timestep):
        i, _ = run.step_of(timestep)
        return i < step_at(ext_end, len(run.sigmas) - 1)

    def after_source(run, x, timestep, model_options):
        if settings.auto_at is None:
            return
        i, exact = run.step_of(timestep)
        if not exact or i != step_at(settings.auto_at, len(run.sigmas) - 1) or ("auto", i) in run.done:
            return
        run.done.add(("auto", i))
        positive = run.guider.conds.get("positive")
        if positive is None:
            raise ValueError(f"{who}: auto gamma needs a sampler with a positive conditioning (KSampler, "
                             "SamplerCustom); set gamma by hand with this guider.")

        def forward():      # one full forward of the target's cond rows at this step (each brentq probe)
            comfy.samplers.calc_cond_batch(run.guider.inner_model, [positive], x, timestep, model_options)

        effect.auto = solve_gamma(lambda g: effect.ratio_at(g, forward))
        effect.gamma = effect.auto[0]
        log.info("%s: auto gamma %.4f (text→target / text→source mass %.4f, target %.2f)", who, effect.auto[0],
                 effect.auto[1], AUTO_RATIO)

    def after_run():
        effect.maps, effect.count = None, 0
        effect.probe = None

    traj_mod.add_source_row(m, trajectory, effect.cache.clear, active, before_source, who=who, after_run=after_run,
                            after_source=after_source)
    router.install(m, effect, who)
    return m, effect


def _blend_mask(effect, settings, latent_hw, batch, who):
    if settings.user_mask is not None:
        mask = settings.user_mask
        if mask.shape[0] not in (1, batch):
            raise ValueError(f"{who}: the mask holds {mask.shape[0]} masks but the sampler makes {batch} images; "
                             "give one mask or one per image.")
        return mask.expand(batch, -1, -1, -1) if mask.shape[0] == 1 else mask
    maps = effect.take_mask_maps()
    if maps is None:
        return None
    if maps.shape[0] not in (1, batch):
        return None
    mask = attention_mask(maps, latent_hw, settings.dilation)
    return mask.expand(batch, -1, -1, -1) if mask.shape[0] == 1 else mask
