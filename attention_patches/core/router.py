"""The attention router: one `optimized_attention_override` per model clone, shared by every Sleight effect.

How it is wired (see ARCHITECTURE.md):
- `install(model, effect)` puts a plain closure into the clone's transformer_options (0.3.75 deep-copies
  model_options on clone, so no bound methods) and chains whatever override was there before: our calls go
  through `prev(func, …)` instead of `func(…)`. A second Sleight node builds a new router holding the old
  effects plus its own, so the upstream model never sees downstream effects.
- An OUTER_SAMPLE wrapper opens the run's `RunState` (runstate.py): the guider, whose conds map each
  conditioning's uuid to a role (positive → "cond", negative → "uncond", any other guider key → that key),
  and the effects' per-run caches.
- An APPLY_MODEL wrapper makes a `Forward` per model call: latent size ((h, w), or (t, h, w) for video), text
  length, sigma/step, rows by role, the run, and the family adapter's per-forward counters (SD3 sets no block ids).
- Each attention call gets a normalised `AttentionCall` (q, k, v as B,H,L,D) whose block, kind and token
  layout the model's family adapter gives (families/). Effects whose `applies(call)` is
  true run as a chain, in ascending `order`; if none applies the call goes to the backend untouched, so a
  router with nothing to do is bit-identical to no router.

Effect protocol: `order: int`, `applies(call) -> bool`, `run(call, attend) -> out (B,H,Lq,D)`, where
`attend(call)` runs the rest of the chain (ultimately SDPA through ComfyUI's backend, with `call.bias` as an
additive mask). Documented order: 10 prompt routing (K/V swap), 20 extended attention (K/V concat),
30 key masks (bias), 40 attention reweighting (bias / query split), 90 probes.
"""
import dataclasses
import logging
import math
from dataclasses import dataclass, field
from functools import cached_property
from typing import Optional

import torch

import comfy.patcher_extension as pe

from . import families, headsplit, hooks, runstate, schedule

log = logging.getLogger("sleight")

KEY = "sleight"                 # wrapper key and transformer_options key of the per-forward context
FAMILY_KEY = "sleight.family"   # transformer_options key of the model's family adapter, set at patch time
SOURCE_ROLE = "sleight.source"  # role of a source row run in lockstep (Add-it, DesignEdit's source)
ROUTE_ROLE = "sleight.route"    # role of the routed prompt's side rows (DiT prompt routing)


@dataclass
class AttentionCall:
    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    heads: int
    kind: str                       # "self" | "cross" | "joint"
    block: str                      # normalised block id, e.g. "output.2.1", "joint.10", "double.7"
    index: int                      # attention call number within this forward
    img: slice                      # image tokens among the query tokens
    txt: Optional[slice]            # text tokens among the key tokens (cross: all; joint: the text part)
    grid: tuple                     # token grid of the image tokens at this layer: (h, w), or (t, h, w) for video
    forward: "Forward"
    mask: Optional[torch.Tensor] = None   # the model's own additive/bool mask, if any
    bias: Optional[torch.Tensor] = None   # additive logit bias from effects, broadcastable to (B,H,Lq,Lk)
    batch_rows: Optional[list] = None     # forward rows this call holds, when an effect split the batch
    refs: Optional[slice] = None          # reference-image tokens among the query tokens (edit models)
    prompt: Optional[slice] = None        # the conditioning's own tokens among the keys (the adapter's, else txt):
                                          # where token finders' positions land

    @property
    def rows(self):
        """Role → indices into this call's batch."""
        if self.batch_rows is None:
            return self.forward.rows
        pos = {r: i for i, r in enumerate(self.batch_rows)}
        out = {}
        for role, idx in self.forward.rows.items():
            mine = [pos[r] for r in idx if r in pos]
            if mine:
                out[role] = mine
        return out

    def subset(self, rows, **changes) -> "AttentionCall":
        """The same call on some of its batch rows (q, k, v, mask sliced unless given in `changes`)."""
        held = self.batch_rows if self.batch_rows is not None else range(self.q.shape[0])
        sliced = {"q": take_rows(self.q, rows), "k": take_rows(self.k, rows), "v": take_rows(self.v, rows)}
        for name in ("mask", "bias"):
            t = getattr(self, name)
            if t is not None and t.ndim == 4 and t.shape[0] == self.q.shape[0]:
                sliced[name] = take_rows(t, rows)
        return self.replace(**{**sliced, **changes, "batch_rows": [held[r] for r in rows]})

    @property
    def family(self) -> families.Family:
        return self.forward.family

    @property
    def run(self) -> runstate.RunState:
        return self.forward.run

    def state(self, owner, factory=dict):
        """`owner`'s per-run state (see runstate)."""
        return self.forward.run.slot(owner, factory)

    @property
    def sigma(self):
        return self.forward.sigma

    @property
    def step(self):
        return self.forward.step

    @property
    def percent(self):
        return self.forward.percent

    def replace(self, **changes) -> "AttentionCall":
        return dataclasses.replace(self, **changes)

    def key_padding(self, who: str) -> Optional[torch.Tensor]:
        """The model's own mask as an additive bias over the keys, (B, 1, 1, Lk) in the query dtype, or None
        without one. Only a mask that marks keys (padding: the same for every query and head) has this form;
        another mask (e.g. a Redux attention bias) is refused, naming the node."""
        return key_bias(self.mask, self.q.shape[0], self.k.shape[2], self.q.dtype, who)


@dataclass
class Forward:
    """What is known about one model call (one batch through the diffusion model)."""

    family: families.Family
    latent_size: tuple                # the latent after batch and channels: (h, w), or (t, h, w) for video
    txt_len: int
    batch: int
    sigma: float
    sample_sigmas: Optional[torch.Tensor]
    model_sampling: object
    cond_or_uncond: list
    uuids: list
    run: runstate.RunState            # the sampling run this call belongs to
    calls: int = 0
    counters: dict = field(default_factory=dict)   # the family adapter's per-forward call counting

    @cached_property
    def rows(self) -> dict:
        """Batch rows of each role: chunk i of the batch belongs to cond_or_uncond[i] (CFGGuider: 0 pos, 1 neg)."""
        roles = uuid_roles(self.run.conds)
        out = {}
        n = max(len(self.cond_or_uncond), 1)
        per = self.batch // n
        for i, idx in enumerate(self.cond_or_uncond):
            uid = self.uuids[i] if i < len(self.uuids) else None
            role = roles.get(uid) or {0: "cond", 1: "uncond"}.get(idx, "extra")
            out.setdefault(role, []).extend(range(i * per, (i + 1) * per))
        return out

    @cached_property
    def step(self) -> int:
        return schedule.step_index(self.sample_sigmas, self.sigma)

    @cached_property
    def total_steps(self) -> int:
        return schedule.total_steps(self.sample_sigmas)

    @cached_property
    def percent(self) -> float:
        return schedule.sigma_to_percent(self.model_sampling, self.sigma)

    @property
    def latent_hw(self) -> tuple:
        return self.latent_size[-2:]

    @cached_property
    def image_tokens(self) -> int:
        return math.prod(self.family.image_grid(self.latent_size))

    @property
    def per_chunk(self) -> int:
        """Rows per conditioning chunk of the batch."""
        return self.batch // max(len(self.cond_or_uncond), 1)


def take_rows(t: torch.Tensor, rows) -> torch.Tensor:
    """t[rows] along the batch: a view when the rows are consecutive (no copy of q, k, v), else a gather."""
    rows = list(rows)
    if rows and rows == list(range(rows[0], rows[0] + len(rows))):
        return t[rows[0]:rows[0] + len(rows)]
    return t[rows]


def as_4d_mask(mask):
    """A mask as ComfyUI's SDPA backend reads it, (B, H, Lq, Lk) with broadcast dims of 1: a 2-D mask (·, Lk)
    gains a batch dim, a 3-D one (B, Lq, Lk) a head dim (attention_pytorch's rules)."""
    if mask is None:
        return None
    if mask.ndim == 1:
        return mask.reshape(1, 1, 1, -1)
    if mask.ndim == 2:
        mask = mask.unsqueeze(0)
    return mask.unsqueeze(1) if mask.ndim == 3 else mask


def key_bias(mask, batch: int, k_len: int, dtype, who: str) -> Optional[torch.Tensor]:
    """See AttentionCall.key_padding."""
    if mask is None:
        return None
    m = as_4d_mask(mask)
    if m.shape[-1] != k_len or m.shape[0] not in (1, batch) or not torch.equal(m, m[:, :1, :1].expand_as(m)):
        raise ValueError(f"{who}: this model passes an attention mask that does not only mark padding keys (it "
                         "differs between queries or heads); remove the node that adds it (e.g. a Redux attention "
                         "bias) to use this trick.")
    m = m[:, :1, :1]
    if m.dtype == torch.bool:
        m = torch.zeros(m.shape, dtype=dtype, device=m.device).masked_fill(~m, float("-inf"))
    return m.to(dtype).expand(batch, 1, 1, k_len)


def _heads_of(args, kwargs):
    if len(args) > 3:
        return int(args[3])
    return int(kwargs["heads"])


def _to_bhld(t: torch.Tensor, heads: int, skip_reshape: bool) -> torch.Tensor:
    if skip_reshape:
        return t
    # (B, L, H*D); SD3 hands v over as (B, L, H, D)
    return t.reshape(t.shape[0], t.shape[1], heads, -1).transpose(1, 2)


class Router:
    """Immutable: a set of effects plus the override that was there before it."""

    def __init__(self, effects=(), prev=None):
        self.effects = tuple(sorted(effects, key=lambda e: e.order))
        self.prev = prev

    def with_effect(self, effect) -> "Router":
        return Router(self.effects + (effect,), self.prev)

    def _backend(self, func, *args, **kwargs):
        if self.prev is not None:
            return self.prev(func, *args, **kwargs)
        return func(*args, **kwargs)

    def describe(self, fwd: Forward, args, kwargs) -> AttentionCall:
        q, k, v = args[0], args[1], args[2]
        heads = _heads_of(args, kwargs)
        skip = kwargs.get("skip_reshape", False)
        q_len, k_len = (q.shape[2], k.shape[2]) if skip else (q.shape[1], k.shape[1])
        to = kwargs.get("transformer_options") or {}
        index = fwd.calls
        fwd.calls += 1
        where = fwd.family.describe(fwd, to, q_len, k_len)
        return AttentionCall(q=_to_bhld(q, heads, skip), k=_to_bhld(k, heads, skip), v=_to_bhld(v, heads, skip),
                             heads=heads, kind=where.kind, block=where.block, index=index, img=where.img,
                             txt=where.txt, grid=where.grid, forward=fwd, refs=where.refs,
                             prompt=where.prompt if where.prompt is not None else where.txt,
                             mask=as_4d_mask(kwargs.get("mask", args[4] if len(args) > 4 else None)))

    def __call__(self, func, *args, **kwargs):
        to = kwargs.get("transformer_options")
        fwd = to.get(KEY) if to is not None else None
        if fwd is None:
            return self._backend(func, *args, **kwargs)
        call = self.describe(fwd, args, kwargs)
        active = [e for e in self.effects if e.applies(call)]
        if not active:
            return self._backend(func, *args, **kwargs)

        base_kwargs = {k: v for k, v in kwargs.items() if k not in ("heads", "mask", "skip_reshape", "skip_output_reshape")}

        def attend_base(c: AttentionCall) -> torch.Tensor:
            mask = c.mask
            if c.bias is not None:
                if mask is not None and mask.dtype == torch.bool:
                    mask = torch.zeros(mask.shape, dtype=c.q.dtype, device=c.q.device).masked_fill(~mask, float("-inf"))
                mask = c.bias.to(c.q.dtype) if mask is None else mask + c.bias.to(c.q.dtype)
            return self._backend(func, c.q, c.k, c.v, c.heads, mask=mask, skip_reshape=True,
                                 skip_output_reshape=True, **base_kwargs)

        headsplit.mark_backend(attend_base)     # effects just before it may split the call by heads

        def chain(i):
            if i == len(active):
                return attend_base
            return lambda c: active[i].run(c, chain(i + 1))

        out = chain(0)(call)
        if kwargs.get("skip_output_reshape", False):
            return out
        b, h, n, d = out.shape
        return out.transpose(1, 2).reshape(b, n, h * d)


def apply_model_wrapper(executor, x, t, c_concat=None, c_crossattn=None, control=None, transformer_options={}, **kwargs):
    """APPLY_MODEL wrapper: one `Forward` per model call, visible to the override through transformer_options."""
    base = executor.class_obj
    to = dict(transformer_options)
    family = to.get(FAMILY_KEY) or families.detect(base)
    to[KEY] = Forward(
        family=family,
        latent_size=tuple(x.shape[2:]),
        txt_len=family.text_length(c_crossattn, kwargs),
        batch=x.shape[0],
        sigma=schedule.as_float(t),
        sample_sigmas=to.get("sample_sigmas"),
        model_sampling=base.model_sampling,
        cond_or_uncond=list(to.get("cond_or_uncond", [])),
        uuids=list(to.get("uuids", [])),
        run=runstate.of(to) or runstate.RunState(None),
    )
    return executor(x, t, c_concat, c_crossattn, control, to, **kwargs)


def uuid_roles(conds: dict) -> dict:
    """uuid → role: positive → "cond", negative → "uncond", any other guider key → that key.

    An entry may name its role (`"sleight_role"`); otherwise the first key listing it wins, so a side prompt
    swapped in as the positive for one call (Rare-to-Frequent) counts as "cond" there.
    """
    roles = {}
    for key, entries in conds.items():
        default = {"positive": "cond", "negative": "uncond"}.get(key, key)
        for c in entries or []:
            if isinstance(c, dict) and "uuid" in c:
                if c.get("sleight_role"):
                    roles[c["uuid"]] = c["sleight_role"]
                else:
                    roles.setdefault(c["uuid"], default)
    return roles


def _make_override(router: Router):
    def sleight_attention_override(func, *args, **kwargs):
        return router(func, *args, **kwargs)

    sleight_attention_override.sleight_router = router
    return sleight_attention_override


def current_router(model) -> Optional[Router]:
    return router_in(model.model_options)


def router_in(model_options) -> Optional[Router]:
    to = model_options.get("transformer_options", {})
    return getattr(to.get("optimized_attention_override"), "sleight_router", None)


def install_into(model_options: dict, family: families.Family, effect=None) -> Router:
    """Route attention of a model_options dict through Sleight, adding `effect` if given: the public way to
    add an effect to one sampling run's options (a KSAMPLER's extra_args["model_options"], RASG's recorder),
    where no ModelPatcher is at hand. Chains whatever override was there before."""
    to = model_options.setdefault("transformer_options", {})
    existing = to.get("optimized_attention_override")
    router = getattr(existing, "sleight_router", None) or Router((), existing)
    if effect is not None:
        router = router.with_effect(effect)
    to["optimized_attention_override"] = _make_override(router)
    to.setdefault(FAMILY_KEY, family)
    if not pe.get_wrappers_with_key(pe.WrappersMP.APPLY_MODEL, KEY, model_options, is_model_options=True):
        pe.add_wrapper_with_key(pe.WrappersMP.APPLY_MODEL, KEY, apply_model_wrapper, model_options,
                                is_model_options=True)
    return router


def install(model, effect=None, who: str = "Sleight"):
    """Route attention of `model` (a clone the caller owns) through Sleight, adding `effect` if given.

    Fails here, at patch time, on a model no family adapter understands.
    """
    family = families.detect(model, who)
    router = install_into(model.model_options, family, effect)
    if not model.get_wrappers(pe.WrappersMP.OUTER_SAMPLE, KEY):
        hooks.on_run(model, KEY)           # every run gets its RunState, even with no other Sleight wrapper
    return router
