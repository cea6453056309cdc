"""DesignEdit key-masked self-attention (KMSA; Jia et al., AAAI 2025, `design-edit/DesignEdit`).

Paper: out = softmax(Q·((1−M)⊙K)ᵀ/√d)·V in every self-attention layer while the removed region is inpainted,
so no query can copy the object from its own keys. The official code multiplies the hidden states that feed
`to_k` by (1 − M) (bilinearly resized to the layer's grid) on the conditional rows of the background row for
steps 1–39 of 50 (the refine mask joins M for steps 1–25); Q and V keep the unmasked input. SD1.5/SDXL `to_k`
has no bias, so that equals multiplying the projected keys by (1 − M): masked logits become 0, not −∞.
We do exactly that after the projection ("zero" mode), which also defines KMSA on DiTs, whose key projection has
a bias and a QK-norm (there the input-side masking would not give zero keys). "exclude" mode instead adds
log(1 − M) to the logits (−∞ for fully masked keys): the masked keys get no attention at all.
DiTs: only the image keys of joint attention are masked; text keys stay untouched.
Cost: one elementwise product on K (or a (B,1,1,L) bias); no L×L matrix is formed.
"""
import math

import torch
import torch.nn.functional as F

from ..samplers import schedule

MODES = ("zero", "exclude")


class KeyMask:
    order = 30

    def __init__(self, mask, window: schedule.StepWindow, refine=None, refine_window=None, mode="zero",
                 roles=("cond",), who="Sleight · DesignEdit"):
        """`mask`, `refine`: (H, W) or (1, 1, H, W) floats in [0, 1] on the latent grid (1 = remove)."""
        if mode not in MODES:
            raise ValueError(f"{who}: key mask mode must be one of {MODES}, got {mode!r}")
        self.mask = _as_4d(mask)
        self.union = None if refine is None else torch.maximum(self.mask, _as_4d(refine))
        self.window = window
        self.refine_window = refine_window or schedule.StepWindow(0.0, 0.0)
        self.mode = mode
        self.roles = tuple(roles)
        self.who = who
        self.empty = not bool((self.mask > 0).any()) and (self.union is None or not bool((self.union > 0).any()))
        self._resized = {}
        self._per_key_cache = {}

    def _step(self, call):
        fwd = call.forward
        return fwd.step, schedule.total_steps(fwd.sample_sigmas)

    def applies(self, call) -> bool:
        if self.empty or call.kind not in ("self", "joint"):
            return False
        if not any(call.rows.get(role) for role in self.roles):
            return False
        step, total = self._step(call)
        if total <= 0:
            return False
        return self.window.contains_step(step, total)

    def mask_at(self, call) -> torch.Tensor:
        """M at this layer: (h·w,) in [0, 1], the refine union inside the refine window."""
        step, total = self._step(call)
        use_union = self.union is not None and self.refine_window.contains_step(step, total)
        key = (use_union, tuple(call.grid))
        m = self._resized.get(key)
        if m is None:
            src = self.union if use_union else self.mask
            h, w = call.grid
            if src.shape[-2:] != (h, w):
                src = F.interpolate(src, size=(h, w), mode="bilinear", align_corners=False)
            m = src.reshape(-1).clamp(0.0, 1.0)
            self._resized[key] = m
        return m

    def _per_key(self, call, rows, img):
        """(B,1,Lk,1) key scale (zero) or (B,1,1,Lk) logit bias (exclude), cached per layer shape and rows."""
        m = self.mask_at(call)
        b, lk = call.k.shape[0], call.k.shape[2]
        key = (id(m), rows, b, lk, img.start, img.stop, call.k.device, call.k.dtype)
        t = self._per_key_cache.get(key)
        if t is not None:
            return t
        if m.numel() != img.stop - img.start:
            raise ValueError(f"{self.who}: layer {call.block} has {img.stop - img.start} image keys but the mask "
                             f"grid {call.grid} gives {m.numel()}; this model's token layout is not supported.")
        keep = 1.0 - m
        if self.mode == "zero":
            t = torch.ones((b, 1, lk, 1), dtype=torch.float32)
            t[list(rows), 0, img, 0] = keep
            t = t.to(device=call.k.device, dtype=call.k.dtype)
        else:
            if call.kind == "self" and not bool((keep > 0).any()):
                raise ValueError(f"{self.who}: 'exclude' masks every key of layer {call.block}: nothing is left "
                                 "to attend to. Use a smaller mask or the 'zero' key mode.")
            t = torch.zeros((b, 1, 1, lk), dtype=torch.float32)
            t[list(rows), 0, 0, img] = torch.log(keep)      # log 0 = −∞: a fully masked key gets no attention
            t = t.to(device=call.k.device)
        if len(self._per_key_cache) > 256:
            self._per_key_cache.clear()
        self._per_key_cache[key] = t
        return t

    def run(self, call, attend):
        rows = tuple(sorted({r for role in self.roles for r in call.rows.get(role, [])}))
        img = call.img if call.kind == "joint" else slice(0, call.k.shape[2])
        t = self._per_key(call, rows, img)
        if self.mode == "zero":
            return attend(call.replace(k=call.k * t))   # rows outside `rows` and text keys are multiplied by 1
        bias = t if call.bias is None else call.bias.float() + t
        return attend(call.replace(bias=bias))


def _as_4d(mask) -> torch.Tensor:
    m = torch.as_tensor(mask).float().detach().cpu()
    while m.ndim < 4:
        m = m.unsqueeze(0)
    if m.shape[0] != 1 or m.shape[1] != 1:
        m = m.reshape(-1, *m.shape[-2:])[:1].unsqueeze(1)
    return m


def reference(q, k, v, m, rows, img, mode="zero"):
    """Direct formula on (B,H,L,D) tensors, with the L×L matrix: softmax(Q·((1−M)⊙K)ᵀ/√d)·V on `rows`
    (mode zero), or the softmax over unmasked keys weighted by (1 − M) (mode exclude). For tests."""
    scale = 1.0 / math.sqrt(q.shape[-1])
    out = torch.softmax(q @ k.transpose(-1, -2) * scale, dim=-1) @ v
    keep = torch.ones(k.shape[2], dtype=q.dtype)
    keep[img] = 1.0 - m.to(q.dtype)
    for r in rows:
        if mode == "zero":
            logits = q[r] @ (k[r] * keep[None, :, None]).transpose(-1, -2) * scale
            out[r] = torch.softmax(logits, dim=-1) @ v[r]
        else:
            w = torch.exp(q[r] @ k[r].transpose(-1, -2) * scale) * keep
            out[r] = (w / w.sum(-1, keepdim=True)) @ v[r]
    return out
