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
Cost: one elementwise product on K, one group of heads at a time when the copy would cost memory (core/headsplit),
or a (B,1,1,L) bias; no L×L matrix is formed.
"""
import math

import torch

from .core import headsplit, masks, schedule

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

    def applies(self, call) -> bool:
        if self.empty or call.kind not in ("self", "joint"):
            return False
        if not any(call.rows.get(role) for role in self.roles):
            return False
        fwd = call.forward
        if fwd.total_steps <= 0:
            return False
        return self.window.contains_step(fwd.step, fwd.total_steps)

    def mask_at(self, call) -> torch.Tensor:
        """M at this layer: (h·w,) in [0, 1], the refine union inside the refine window."""
        fwd = call.forward
        use_union = self.union is not None and self.refine_window.contains_step(fwd.step, fwd.total_steps)
        src = self.union if use_union else self.mask
        return call.run.memo(self, (use_union, tuple(call.grid)),
                             lambda: masks.to_grid(src, call.grid).reshape(-1).clamp(0.0, 1.0))

    def _per_key(self, call, rows, img):
        """(B,1,Lk,1) key scale (zero) or (B,1,1,Lk) logit bias (exclude), made once per run and layer shape."""
        m = self.mask_at(call)
        b, lk = call.k.shape[0], call.k.shape[2]
        key = (id(m), rows, b, lk, img.start, img.stop, call.k.device, call.k.dtype)
        return call.run.memo(self, key, lambda: self._make_per_key(call, m, rows, img, b, lk))

    def _make_per_key(self, call, m, rows, img, b, lk):
        if m.numel() != img.stop - img.start:
            raise ValueError(f"{self.who}: layer {call.block} has {img.stop - img.start} image keys but the mask "
                             f"grid {call.grid} gives {m.numel()}; this model's token layout is not supported.")
        keep = 1.0 - m
        if self.mode == "zero":
            t = torch.ones((b, 1, lk, 1), dtype=torch.float32)
            t[list(rows), 0, img, 0] = keep
            return t.to(device=call.k.device, dtype=call.k.dtype)
        if call.kind == "self" and not bool((keep > 0).any()):
            raise ValueError(f"{self.who}: 'exclude' masks every key of layer {call.block}: nothing is left "
                             "to attend to. Use a smaller mask or the 'zero' key mode.")
        t = torch.zeros((b, 1, 1, lk), dtype=torch.float32)
        t[list(rows), 0, 0, img] = torch.log(keep)      # log 0 = −∞: a fully masked key gets no attention
        return t.to(device=call.k.device)

    def run(self, call, attend):
        rows = tuple(sorted({r for role in self.roles for r in call.rows.get(role, [])}))
        t = self._per_key(call, rows, call.img)      # self / joint: keys share the queries' positions
        if self.mode == "zero":     # rows outside `rows` and text keys are multiplied by 1
            return headsplit.by_heads(call, attend, headsplit.nbytes(call.k),
                                      lambda part, _: attend(part.replace(k=part.k * t)))
        bias = t if call.bias is None else call.bias.float() + t
        return attend(call.replace(bias=bias))


def _as_4d(mask) -> torch.Tensor:
    m = masks.as_4d(torch.as_tensor(mask).detach().cpu())
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
