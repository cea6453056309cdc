"""Attention work one group of heads at a time, when an effect's full-size temporaries would cost memory.

An effect that hands the backend tensors of its own (keys scaled per key, [K_src ; γ·K_tgt], gathered queries)
builds them for one group of heads at a time and writes each group's output into one tensor, so only one
group's temporaries are alive at once and the call needs about what plain SDPA needs. Heads are independent, so
the result is the same. Only at the tail of the router's chain (`attend` is the backend, marked by the router):
an effect after it may read the call as a whole (PAIntA's head-averaged relevance, a test probe).
"""
import math

import torch

SPLITTABLE = "sleight_splittable"   # attribute the router sets on its backend `attend`
SHARE = 1 / 64                      # one group's temporaries: at most this share of the call's q, k, v and output
MIN_ROWS = {"cpu": 1 << 12}         # query rows (batch × heads × queries) a group keeps at least; a GPU needs
MIN_ROWS_OTHER = 1 << 15            # a couple of waves of query tiles in flight, so it splits only large calls


def nbytes(t) -> int:
    return t.numel() * t.element_size() if t is not None else 0


def mark_backend(attend):
    """Mark the router's base attention: nothing after it reads the call as a whole."""
    setattr(attend, SPLITTABLE, True)
    return attend


def groups(call, attend, temp_bytes: int):
    """Head slices for `call` whose temporaries (`temp_bytes` for the whole call) fit the budget, or None (one
    piece: the call is small, has one head, `attend` is not the backend, or splitting would save nothing)."""
    b, h, lq, _ = call.q.shape
    if h < 2 or not getattr(attend, SPLITTABLE, False):
        return None
    out = b * h * lq * call.v.shape[-1] * call.q.element_size()
    own = nbytes(call.q) + nbytes(call.k) + nbytes(call.v) + out
    min_heads = max(1, math.ceil(MIN_ROWS.get(call.q.device.type, MIN_ROWS_OTHER) / max(b * lq, 1)))
    n = min(h // min_heads, math.ceil((temp_bytes + out) / (own * SHARE)))
    if n < 2 or (temp_bytes + out) / n >= temp_bytes:   # each group's output is one more copy
        return None
    size = math.ceil(h / n)
    return [slice(i, min(i + size, h)) for i in range(0, h, size)]


def of_heads(call, hs: slice):
    """`call` on the heads `hs` (q, k, v and any per-head bias or mask sliced)."""
    h = call.q.shape[1]
    changes = {"q": call.q[:, hs], "k": call.k[:, hs], "v": call.v[:, hs], "heads": len(range(*hs.indices(h)))}
    for name in ("bias", "mask"):
        t = getattr(call, name, None)
        if t is not None and t.ndim == 4 and t.shape[1] == h:
            changes[name] = t[:, hs]
    return call.replace(**changes)


def output(b, h, lq, dv, like: torch.Tensor) -> torch.Tensor:
    """An empty attention output (B, H, Lq, Dv) laid out as (B, Lq, H, Dv) in memory, as SDPA lays out its own:
    the router's final reshape to (B, Lq, H·Dv) is then a view, not a copy."""
    return torch.empty(b, lq, h, dv, dtype=like.dtype, device=like.device).transpose(1, 2)


def by_heads(call, attend, temp_bytes: int, run):
    """`run(part, hs)` -> (B, h, Lq', Dv) for each group of heads `hs` (a slice; `part`: the call on them); the
    outputs side by side. `temp_bytes`: what the effect's temporaries would take for the whole call."""
    parts = groups(call, attend, temp_bytes)
    if parts is None:
        return run(call, slice(None))
    out = None
    for hs in parts:
        o = run(of_heads(call, hs), hs)
        if out is None:
            out = output(o.shape[0], call.q.shape[1], o.shape[2], o.shape[3], o)
        out[:, hs] = o
        del o
    return out
