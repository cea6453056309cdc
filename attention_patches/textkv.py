"""Prompt routing on DiTs: the text K/V of chosen joint blocks come from a routed prompt.

In a joint-attention DiT the text stream is rewritten by every block and modulated by the timestep, so the
routed prompt's text K/V at block b exist only inside a forward of that prompt. Following the paper's
activation patching (Staniszewski et al., 2025: only the context stream's K/V are patched), a side pass of the
routed prompt runs in lockstep at every step inside the window, as extra rows of the main forward
(samplers/routing.py, through samplers/trajectory.add_batched_side); this effect records its text K/V at the
chosen blocks and attends the routed rows' queries to their own keys with the text part replaced by the routed
prompt's, in the call's own token order (per group of heads when the swapped copies would cost memory). Image
K/V and every query stay the model's own. Padding masks the model passes travel with their keys: the routed text
keys bring the side rows' mask, the rest keep the routed rows' own.
"""
import torch

from .core import headsplit, router

ROUTE_KEY = router.ROUTE_ROLE
WHO = "Sleight · Route prompt"


class TextKVRun:
    """Routing's state for one sampling run."""

    def __init__(self):
        self.cache = {}          # block -> (sigma, k_txt, v_txt, padding bias of the text keys or None) of the
                                 # routed side rows
        self.expected = False    # the side rows run at this step
        self.missed = False      # routed rows came before the side rows' data (a batch split): redo them


class TextKVSwap:
    order = 10   # first: later effects see the swapped keys

    def __init__(self, blocks, window, roles=("cond",)):
        self.blocks = frozenset(blocks)
        self.window = window     # schedule.Window in which the side rows run (samplers/routing.py)
        self.roles = tuple(roles)

    def state(self, run) -> TextKVRun:
        return run.slot(self, TextKVRun)

    def applies(self, call):
        if call.block not in self.blocks or call.kind != "joint":
            return False
        rows = call.rows
        return ROUTE_KEY in rows or any(r in rows for r in self.roles)

    def run(self, call, attend):
        rows, st = call.rows, self.state(call.run)
        if ROUTE_KEY in rows:           # side rows: remember the routed prompt's text keys and values
            idx = rows[ROUTE_KEY]
            pad = call.key_padding(WHO)
            st.cache[call.block] = (call.sigma, call.k[idx][:, :, call.txt], call.v[idx][:, :, call.txt],
                                    None if pad is None else pad[idx][..., call.txt])
        routed = [r for role in self.roles for r in rows.get(role, [])]
        if not routed:
            return attend(call)
        entry = st.cache.get(call.block)
        if entry is None or entry[0] != call.sigma:   # no side rows at this step (outside the window), or not yet
            st.missed = st.missed or st.expected
            return attend(call)
        _, k_txt, v_txt, pad_txt = entry
        keep = [r for r in range(call.q.shape[0]) if r not in set(routed)]
        out = headsplit.output(*call.q.shape[:3], call.v.shape[-1], call.q) if keep else None
        if keep:
            out[keep] = attend(call.subset(keep))
        per = k_txt.shape[0]                       # side rows ↔ each chunk of routed rows, in order
        src = torch.tensor([i % per for i in range(len(routed))], device=k_txt.device)
        k_txt, v_txt = k_txt[src].to(call.k), v_txt[src].to(call.v)
        pad = call.key_padding(WHO)                # padding masks travel with their keys
        mask = None
        if pad is not None or pad_txt is not None:
            own = (router.take_rows(pad, routed) if pad is not None
                   else call.q.new_zeros(len(routed), 1, 1, call.k.shape[2]))
            routed_pad = pad_txt[src] if pad_txt is not None else own.new_zeros(len(routed), 1, 1, k_txt.shape[2])
            mask = _swap_text(own, routed_pad.to(own), call.txt, dim=3)
        sub = call.subset(routed, mask=mask)

        def swapped(part, hs):
            return attend(part.replace(k=_swap_text(part.k, k_txt[:, hs], call.txt),
                                       v=_swap_text(part.v, v_txt[:, hs], call.txt)))

        result = headsplit.by_heads(sub, attend, headsplit.nbytes(sub.k) + headsplit.nbytes(sub.v), swapped)
        if out is None and routed == sorted(routed):      # the rows already in the batch's order
            return result
        if out is None:
            out = headsplit.output(*call.q.shape[:3], call.v.shape[-1], call.q)
        out[routed] = result
        return out


def _swap_text(t, routed, txt: slice, dim: int = 2):
    """The key (or value, or key mask) sequence along `dim` with its text part replaced by the routed prompt's
    (any length)."""
    return torch.cat([t.narrow(dim, 0, txt.start), routed, t.narrow(dim, txt.stop, t.shape[dim] - txt.stop)], dim)


def reference(q, k, v, k_txt, v_txt, txt: slice):
    """The direct formula with the full matrix (benchmarks): softmax(q·k'ᵀ/√d)·v' with the text part of k and v
    replaced by the routed prompt's."""
    k, v = _swap_text(k, k_txt.to(k), txt), _swap_text(v, v_txt.to(v), txt)
    return torch.softmax(q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5, -1) @ v
