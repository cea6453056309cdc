"""The attention router: one `optimized_attention_override` per model clone, shared by every Sleight effect.

How it is wired (see ARCHITECTURE.md):
- `install(model, effect)` puts a plain closure into the clone's transformer_options (0.3.75 deep-copies
  model_options on clone, so no bound methods) and chains whatever override was there before: our calls go
  through `prev(func, …)` instead of `func(…)`. A second Sleight node builds a new router holding the old
  effects plus its own, so the upstream model never sees downstream effects.
- An OUTER_SAMPLE wrapper maps each conditioning's uuid to a role (positive → "cond", negative → "uncond",
  any other guider key → that key) once per run.
- An APPLY_MODEL wrapper makes a `Forward` per model call: latent size, text length, sigma/step, rows by role,
  and the attention-call counter (SD3 sets no block ids).
- Each attention call gets a normalised `AttentionCall` (q, k, v as B,H,L,D). Effects whose `applies(call)` is
  true run as a chain, in ascending `order`; if none applies the call goes to the backend untouched, so a
  router with nothing to do is bit-identical to no router.

Effect protocol: `order: int`, `applies(call) -> bool`, `run(call, attend) -> out (B,H,Lq,D)`, where
`attend(call)` runs the rest of the chain (ultimately SDPA through ComfyUI's backend, with `call.bias` as an
additive mask). Documented order: 10 prompt routing (K/V swap), 20 extended attention (K/V concat),
30 key masks (bias), 40 attention reweighting (bias / query split), 90 probes.
"""
import dataclasses
import logging
from dataclasses import dataclass, field
from functools import cached_property
from typing import Optional

import torch

from ..samplers import schedule
from . import arch as arch_mod

log = logging.getLogger("sleight")

KEY = "sleight"                 # wrapper key and transformer_options key of the per-forward context
ROLES_KEY = "sleight.conds"     # transformer_options key of the running guider's conds dict (per run)
ARCH_KEY = "sleight.arch"       # transformer_options key of the model's Arch, set at patch time


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
    grid: tuple                     # (h, w) of the image tokens at this layer
    forward: "Forward"
    mask: Optional[torch.Tensor] = None   # the model's own additive/bool mask, if any
    bias: Optional[torch.Tensor] = None   # additive logit bias from effects, broadcastable to (B,H,Lq,Lk)
    batch_rows: Optional[list] = None     # forward rows this call holds, when an effect split the batch

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
        sliced = {"q": self.q[rows], "k": self.k[rows], "v": self.v[rows]}
        for name in ("mask", "bias"):
            t = getattr(self, name)
            if t is not None and t.ndim == 4 and t.shape[0] == self.q.shape[0]:
                sliced[name] = t[rows]
        return self.replace(**{**sliced, **changes, "batch_rows": [held[r] for r in rows]})

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


@dataclass
class Forward:
    """What is known about one model call (one batch through the diffusion model)."""

    arch: arch_mod.Arch
    latent_hw: tuple
    txt_len: int
    batch: int
    sigma: float
    sample_sigmas: Optional[torch.Tensor]
    model_sampling: object
    cond_or_uncond: list
    uuids: list
    conds: dict                     # the guider's conds (live: side conds added by other wrappers count too)
    calls: int = 0
    _unet_seen: dict = field(default_factory=dict)
    _joint_seen: int = 0

    @cached_property
    def rows(self) -> dict:
        """Batch rows of each role: chunk i of the batch belongs to cond_or_uncond[i] (CFGGuider: 0 pos, 1 neg)."""
        roles = uuid_roles(self.conds)
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
    def percent(self) -> float:
        return schedule.sigma_to_percent(self.model_sampling, self.sigma)

    @cached_property
    def image_tokens(self) -> int:
        gh, gw = self.arch.image_grid(self.latent_hw)
        return gh * gw

    def identify(self, to: dict, q_len: int, k_len: int):
        """(block id, kind, index) of the attention call being made now; must be called once per call."""
        index = self.calls
        self.calls += 1
        name = self.arch.name
        if name == "unet":
            block = to.get("block") or ("unknown", 0)
            bid = f"{block[0]}.{block[1]}.{to.get('block_index', 0)}"
            n = self._unet_seen.get(bid, 0)   # every transformer block calls attn1 (self) then attn2 (cross)
            self._unet_seen[bid] = n + 1
            kind = "self" if n % 2 == 0 and q_len == k_len else "cross"
            return bid, kind, index
        if name == "mmdit":
            if q_len == self.image_tokens:    # SD3.5's image-only attention belongs to the joint block before it
                return f"joint.{self._joint_seen - 1}", "self", index
            self._joint_seen += 1
            return f"joint.{self._joint_seen - 1}", "joint", index
        return f"{to.get('block_type', 'double')}.{to.get('block_index', 0)}", "joint", index


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
        block, kind, index = fwd.identify(to, q_len, k_len)
        n_img = fwd.image_tokens
        if kind == "joint":
            start = q_len - n_img if fwd.arch.name == "mmdit" else fwd.txt_len
            img, txt = slice(start, start + n_img), slice(0, start)
        elif kind == "cross":
            img, txt = slice(0, q_len), slice(0, k_len)
        else:
            img, txt = slice(0, q_len), None
        grid = fwd.arch.image_grid(fwd.latent_hw) if fwd.arch.name != "unet" else _unet_grid(to, fwd)
        return AttentionCall(q=_to_bhld(q, heads, skip), k=_to_bhld(k, heads, skip), v=_to_bhld(v, heads, skip), heads=heads, kind=kind, block=block, index=index, img=img, txt=txt,
                             grid=grid, forward=fwd, mask=kwargs.get("mask", args[4] if len(args) > 4 else None))

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

        def chain(i):
            if i == len(active):
                return attend_base
            return lambda c: active[i].run(c, chain(i + 1))

        out = chain(0)(call)
        if kwargs.get("skip_output_reshape", False):
            return out
        b, h, n, d = out.shape
        return out.transpose(1, 2).reshape(b, n, h * d)


def _unet_grid(to, fwd: Forward):
    shape = to.get("activations_shape")
    if shape is not None and len(shape) >= 4:
        return tuple(shape[-2:])
    return fwd.latent_hw


def apply_model_wrapper(executor, x, t, c_concat=None, c_crossattn=None, control=None, transformer_options={}, **kwargs):
    """APPLY_MODEL wrapper: one `Forward` per model call, visible to the override through transformer_options."""
    base = executor.class_obj
    to = dict(transformer_options)
    to[KEY] = Forward(
        arch=to.get(ARCH_KEY) or arch_mod.detect(base),
        latent_hw=tuple(x.shape[-2:]),
        txt_len=c_crossattn.shape[1] if c_crossattn is not None else 0,
        batch=x.shape[0],
        sigma=schedule.as_float(t),
        sample_sigmas=to.get("sample_sigmas"),
        model_sampling=base.model_sampling,
        cond_or_uncond=list(to.get("cond_or_uncond", [])),
        uuids=list(to.get("uuids", [])),
        conds=to.get(ROLES_KEY) or {},
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


def outer_sample_wrapper(executor, *args, **kwargs):
    """OUTER_SAMPLE wrapper: lets every forward of this run map its uuids to roles (conds keep their uuids)."""
    guider = executor.class_obj
    to = guider.model_options.setdefault("transformer_options", {})
    to[ROLES_KEY] = guider.conds
    try:
        return executor(*args, **kwargs)
    finally:
        to.pop(ROLES_KEY, None)


def _make_override(router: Router):
    def sleight_attention_override(func, *args, **kwargs):
        return router(func, *args, **kwargs)

    sleight_attention_override.sleight_router = router
    return sleight_attention_override


def current_router(model) -> Optional[Router]:
    to = model.model_options.get("transformer_options", {})
    return getattr(to.get("optimized_attention_override"), "sleight_router", None)


def install(model, effect=None, who: str = "Sleight"):
    """Route attention of `model` (a clone the caller owns) through Sleight, adding `effect` if given.

    Fails here, at patch time, on an architecture the router does not understand.
    """
    import comfy.patcher_extension as pe

    arch = arch_mod.detect(model, who)
    to = model.model_options.setdefault("transformer_options", {})
    existing = to.get("optimized_attention_override")
    router = getattr(existing, "sleight_router", None) or Router((), existing)
    if effect is not None:
        router = router.with_effect(effect)
    to["optimized_attention_override"] = _make_override(router)
    to[ARCH_KEY] = arch
    if not model.get_wrappers(pe.WrappersMP.APPLY_MODEL, KEY):
        model.add_wrapper_with_key(pe.WrappersMP.APPLY_MODEL, KEY, apply_model_wrapper)
    if not model.get_wrappers(pe.WrappersMP.OUTER_SAMPLE, KEY):
        model.add_wrapper_with_key(pe.WrappersMP.OUTER_SAMPLE, KEY, outer_sample_wrapper)
    return router
