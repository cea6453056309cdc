"""Prompt routing on DiTs (SD3, Flux): the text K/V of chosen joint blocks come from a routed prompt.

In a joint-attention DiT the text stream is rewritten by every block and modulated by the timestep, so the
routed prompt's text K/V at block b exist only inside a forward of that prompt. Following the paper's
activation patching (Staniszewski et al., 2025: only the context stream's K/V are patched), a side pass of the
routed prompt runs in lockstep at every step inside the window, as extra rows of the main forward
(samplers/trajectory.add_batched_side); this effect records its text K/V at the chosen blocks and attends the
routed rows' queries to [routed text K/V | their own image K/V]. Image K/V and every query stay the model's own.
"""
import torch

from ..samplers import schedule, trajectory
from . import router

ROUTE_KEY = "sleight.route"


class TextKVSwap:
    order = 10   # first: later effects see the swapped keys

    def __init__(self, blocks, window: schedule.Window, roles=("cond",)):
        self.blocks = frozenset(blocks)
        self.window = window
        self.roles = tuple(roles)
        self.cache = {}          # block -> (sigma, k_txt, v_txt) recorded from the routed side rows
        self.expected = False    # the side rows run at this step
        self.missed = False      # routed rows came before the side rows' data (a batch split): redo them

    def applies(self, call):
        if call.block not in self.blocks or call.kind != "joint":
            return False
        rows = call.rows
        return ROUTE_KEY in rows or any(r in rows for r in self.roles)

    def run(self, call, attend):
        rows = call.rows
        if ROUTE_KEY in rows:           # side rows: remember the routed prompt's text keys and values
            idx = rows[ROUTE_KEY]
            self.cache[call.block] = (call.sigma, call.k[idx][:, :, call.txt], call.v[idx][:, :, call.txt])
        routed = [r for role in self.roles for r in rows.get(role, [])]
        if not routed:
            return attend(call)
        entry = self.cache.get(call.block)
        if entry is None or entry[0] != call.sigma:   # no side rows at this step (outside the window), or not yet
            self.missed = self.missed or self.expected
            return attend(call)
        _, k_txt, v_txt = entry
        if call.mask is not None:
            raise ValueError("Sleight · Route prompt: this model passes an attention mask in joint attention; "
                             "routing its text keys is not supported on it yet.")
        out = torch.empty_like(call.q)
        keep = [r for r in range(call.q.shape[0]) if r not in set(routed)]
        if keep:
            out[keep] = attend(call.subset(keep))
        per = k_txt.shape[0]                       # side rows ↔ each chunk of routed rows, in order
        src = torch.tensor([i % per for i in range(len(routed))], device=k_txt.device)
        img = slice(call.txt.stop, call.k.shape[2]) if call.txt.start == 0 else None
        if img is None:
            raise ValueError("Sleight · Route prompt: text tokens must come first in joint attention")
        k = torch.cat([k_txt[src].to(call.k), call.k[routed][:, :, img]], dim=2)
        v = torch.cat([v_txt[src].to(call.v), call.v[routed][:, :, img]], dim=2)
        out[routed] = attend(call.subset(routed, k=k, v=v))
        return out


def _same_prompt(conditioning, guider, roles) -> bool:
    """Routing a prompt into rows that already use it changes nothing: skip the side pass (exactly baseline)."""
    keys = {"cond": "positive", "uncond": "negative"}
    for role in roles:
        entries = guider.original_conds.get(keys.get(role, role), [])
        if len(entries) != len(conditioning):
            return False
        for (emb, extra), c in zip(conditioning, entries):
            if not torch.equal(emb, c["cross_attn"]):
                return False
            pooled, theirs = extra.get("pooled_output"), c.get("pooled_output")
            if (pooled is None) != (theirs is None) or (pooled is not None and not torch.equal(pooled, theirs)):
                return False
    return True


def install_dit(model, conditioning, blocks, window: schedule.Window, roles=("cond",), who="Sleight · Route prompt"):
    """Route `conditioning`'s text K/V into `blocks` of a DiT clone `model` (owned by the caller)."""
    effect = TextKVSwap(blocks, window, roles)

    def wanted(guider, timestep):
        effect.cache.clear()
        effect.expected = (trajectory.in_window(guider, window, timestep)
                           and not _same_prompt(conditioning, guider, roles))
        return effect.expected

    def missed():
        was, effect.missed = effect.missed, False
        return was

    def cleanup():
        effect.cache.clear()
        effect.expected = effect.missed = False

    router.install(model, effect, who)
    trajectory.add_batched_side(model, ROUTE_KEY, conditioning, wanted, missed, cleanup)
    return effect
