"""Prompt routing by context swap: a second prompt reaches the image only through chosen cross-attention layers.

For families that route by context (`Family.route_by == "context"`: the UNets, SD1.5 / SDXL), cross-attention K
and V are projections of the prompt embedding alone (they do not depend on the image or the step), so swapping
the *pre-projection* context of a transformer block's attn2 is exactly the paper's K/V patching (Staniszewski et
al., ICLR 2025). We do it in an `attn2_patch` (a list hook, so other packs' patches still run; no attn2 replace is
taken) that, only
  - in the chosen block ids (`output.2.1`, …: ComfyUI's ("output", 2) block, transformer block 1),
  - in the chosen rows (the router's `Forward.rows`: cond, or cond and uncond),
  - inside the start/end percent window (`schedule.Window`, ComfyUI model-time percent),
replaces the context (and value) rows with the routed prompt's embedding. When the batch's context length L and
the routed length Lr differ, both are repeated to lcm(L, Lr) tokens: repeating every key/value token the same
number of times leaves softmax attention unchanged, which is how ComfyUI batches prompts of different lengths.

Families whose cross-attention has no attn2 patch (`route_by == "cross_kv"`: Wan) get the same swap one step later,
in the router: the chosen cross-attention calls attend, in the chosen rows, to the routed prompt's K/V, projected by
the layer's own weights (the family adapter's `context_kv`: for Wan k = norm_k(W_k·E(c)), v = W_v·E(c), E the text
embedding). They depend on the prompt alone, so they are made once per run: no extra forward, no side rows.
"""
import logging
import math

import torch

from .core import hooks, router, runstate, schedule
from .core.families import Family

log = logging.getLogger("sleight")


class ContextRoute:
    """What one routing patch does; shared by every clone (no tensors are copied on clone)."""

    def __init__(self, emb: torch.Tensor, blocks, window: schedule.Window, roles, family: Family):
        self.emb = emb.detach()
        self.blocks = frozenset(blocks)
        self.window = window
        self.roles = tuple(roles)
        self.family = family

    def __deepcopy__(self, memo):
        return self

    def routed(self, run, device, dtype, length):
        """The routed embedding on this device and dtype, repeated to `length` tokens (once per run)."""
        def make():
            t = self.emb.to(device=device, dtype=dtype)
            return t.repeat(1, length // t.shape[1], 1) if length != t.shape[1] else t

        return run.memo(self, (device, dtype, length), make)

    def active_rows(self, extra_options):
        """Rows to route in this call, or None. Block first: it is the cheap test most calls fail."""
        if self.family.patch_block(extra_options) not in self.blocks:
            return None
        fwd = extra_options.get(router.KEY)
        if fwd is None:
            run = runstate.of(extra_options)
            warned = run.slot(self, dict) if run is not None else {}
            if not warned.get("missing"):
                warned["missing"] = True
                log.warning("Sleight · Route prompt: the router's per-call context is missing (a node removed the "
                            "Sleight wrappers?); the prompt is not routed.")
            return None
        if not self.window.contains(fwd.model_sampling, fwd.sigma):
            return None
        rows = [r for role in self.roles for r in fwd.rows.get(role, ())]
        if not rows:
            return None
        return rows, max(fwd.per_chunk, 1), fwd.run

    def swap(self, t: torch.Tensor, rows, per: int, run) -> torch.Tensor:
        b, length = t.shape[0], t.shape[1]
        rows = [r for r in rows if r < b]
        n = math.lcm(length, self.emb.shape[1])
        out = t.repeat(1, n // length, 1) if n != length else t.clone()
        src = self.routed(run, t.device, t.dtype, n)
        if src.shape[0] == 1:
            out[rows] = src.expand(len(rows), -1, -1)
        else:                      # a batched routed prompt: row i of every chunk takes entry i
            out[rows] = src[[(r % per) % src.shape[0] for r in rows]]
        return out


def make_patch(route: ContextRoute):
    def sleight_prompt_route(n, context, value, extra_options):
        active = route.active_rows(extra_options)
        if active is None or context is None:
            return n, context, value
        rows, per, run = active
        new_context = route.swap(context, rows, per, run)
        new_value = new_context if value is None or value is context else route.swap(value, rows, per, run)
        return n, new_context, new_value

    sleight_prompt_route.sleight_route = route
    return sleight_prompt_route


def install(model, emb, blocks, window, roles, family: Family, who: str = "Sleight"):
    """Route `emb` into `blocks` of a clone `model` the caller owns, by swapping their cross-attention context."""
    dim = family.context_dim(model.model.diffusion_model)
    if dim is not None and emb.shape[-1] != dim:
        raise ValueError(f"{who}: the routed prompt is {emb.shape[-1]}-wide but this model's cross-attention "
                         f"takes {dim}; encode it with this model's CLIP.")
    router.install(model, who=who)          # no effect: only the per-call Forward (rows, sigma) is needed
    model.set_model_attn2_patch(make_patch(ContextRoute(emb, blocks, window, roles, family)))
    return model


class CrossKVRoute:
    """Router effect of prompt routing on `cross_kv` families: the routed prompt's K/V in chosen cross-attention
    calls (configuration only; the K/V of a run live in its RunState)."""

    order = 10   # first: later effects see the routed keys

    def __init__(self, emb: torch.Tensor, blocks, window: schedule.Window, roles, family: Family, dm):
        self.emb = emb.detach()
        self.blocks = frozenset(blocks)
        self.window = window
        self.roles = tuple(roles)
        self.family = family
        self.dm = dm               # the diffusion model whose layers project the routed prompt

    def __deepcopy__(self, memo):
        return self

    def skip(self, run) -> dict:
        """This run's flags: {"same": the routed prompt is the one its rows already use (set when the run starts)}."""
        return run.slot(self, dict)

    def applies(self, call):
        if call.kind != "cross" or call.block not in self.blocks or self.skip(call.run).get("same"):
            return False
        if not self.window.contains(call.forward.model_sampling, call.sigma):
            return False
        rows = call.rows
        return any(role in rows for role in self.roles)

    def routed_kv(self, call):
        """{block: (k, v)} of the routed prompt as (B_r, H, L_r, D), made once per run, device and dtype."""
        def make():
            ctx = self.emb.to(device=call.k.device, dtype=call.k.dtype)
            kv = self.family.context_kv(self.dm, sorted(self.blocks), ctx)
            heads = call.heads
            return {b: tuple(t.reshape(t.shape[0], t.shape[1], heads, -1).transpose(1, 2).to(call.k.dtype)
                             for t in pair) for b, pair in kv.items()}

        return call.run.memo(self, (str(call.k.device), call.k.dtype), make)

    def run(self, call, attend):
        k_r, v_r = self.routed_kv(call)[call.block]
        rows = [r for role in self.roles for r in call.rows.get(role, [])]
        per = max(call.forward.per_chunk, 1)
        src = [(r % per) % k_r.shape[0] for r in rows]     # a batched routed prompt: entry i to row i of a chunk
        if k_r.shape[2] == call.k.shape[2]:
            k, v = call.k.clone(), call.v.clone()
            k[rows], v[rows] = k_r[src], v_r[src]
            return attend(call.replace(k=k, v=v))
        out = torch.empty_like(call.q)                       # another text length: the routed rows on their own
        keep = [r for r in range(call.q.shape[0]) if r not in set(rows)]
        if keep:
            out[keep] = attend(call.subset(keep))
        out[rows] = attend(call.subset(rows, k=k_r[src], v=v_r[src]))
        return out


def install_cross_kv(model, emb, blocks, window, roles, family: Family, same_prompt, who: str = "Sleight"):
    """Route `emb` into the cross-attention `blocks` of a clone `model` the caller owns (route_by "cross_kv");
    `same_prompt(run)` says whether the rows already use it (then nothing is swapped: the baseline exactly)."""
    dm = model.model.diffusion_model
    effect = CrossKVRoute(emb, blocks, window, roles, family, dm)
    dim = family.context_dim(dm)
    if dim is not None and emb.shape[-1] != dim:
        raise ValueError(f"{who}: the routed prompt is {emb.shape[-1]}-wide but this model's text input takes {dim}; "
                         "encode it with this model's text encoder.")
    router.install(model, effect, who)
    hooks.on_run(model, f"{router.KEY}.route.{id(effect)}",
                 start=lambda run: effect.skip(run).update(same=bool(same_prompt(run))))
    return effect
