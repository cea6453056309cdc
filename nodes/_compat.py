"""The only module that imports comfy_api. Drops schema/input fields the running ComfyUI does not know,
so one pack loads on 0.3.75 and on the newest ComfyUI (0.3.75 raises TypeError on unknown kwargs)."""
import dataclasses
import inspect
import logging

from comfy_api.latest import ComfyExtension, io, ui  # noqa: F401  (re-exported for the node modules)

log = logging.getLogger("sleight")

_SCHEMA_FIELDS = {f.name for f in dataclasses.fields(io.Schema)}


def _known(callable_, kwargs):
    params = inspect.signature(callable_).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return kwargs
    dropped = sorted(set(kwargs) - set(params))
    if dropped:
        log.debug("sleight: this ComfyUI does not know %s of %s; dropped", dropped, getattr(callable_, "__qualname__", callable_))
    return {k: v for k, v in kwargs.items() if k in params}


def schema(**kwargs) -> io.Schema:
    dropped = sorted(set(kwargs) - _SCHEMA_FIELDS)
    if dropped:
        log.debug("sleight: this ComfyUI's io.Schema has no %s; dropped", dropped)
    return io.Schema(**{k: v for k, v in kwargs.items() if k in _SCHEMA_FIELDS})


def inp(kind, name: str, **kwargs):
    """`io.<Kind>.Input(name, **kwargs)` without the kwargs this ComfyUI's input class lacks (e.g. `advanced`)."""
    return kind.Input(name, **_known(kind.Input.__init__, kwargs))
