"""The only module that imports comfy_api. One pack for ComfyUI 0.3.75 and newer: schema and input fields that
only newer ComfyUI knows (NEWER_*) are passed where the running ComfyUI takes them and dropped where it does not
(0.3.75 raises TypeError on unknown kwargs). Any other unknown field is a mistake and raises.

DynamicCombo (a combo that reveals other inputs) is deliberately not used: it stores the revealed inputs under
dotted ids ("mode.branches") and hands the node a dict, so API prompts and saved workflows would differ between
ComfyUI versions; Sleight keeps one flat API format everywhere (docs/COMPATIBILITY.md)."""
import dataclasses
import inspect
import logging

from comfy_api.latest import ComfyExtension, io, ui  # noqa: F401  (re-exported for the node modules)

log = logging.getLogger("sleight")

# field -> the first ComfyUI release known to have it (read in newer comfy_api/latest/_io.py; see ../shared
# design notes, comfyui-internals.md §5)
NEWER_SCHEMA_FIELDS = {"search_aliases": "0.11.0", "accept_all_inputs": "0.11.0", "essentials_category": "0.15.0",
                       "is_dev_only": "after 0.3.75", "price_badge": "after 0.3.75",
                       "has_intermediate_output": "after 0.3.75"}
NEWER_INPUT_FIELDS = {"advanced": "0.10.0", "raw_link": "0.8.0"}

_SCHEMA_FIELDS = {f.name for f in dataclasses.fields(io.Schema)}


def _keep(known, kwargs, newer, what):
    unknown = [] if known is None else sorted(set(kwargs) - set(known))
    mistakes = [k for k in unknown if k not in newer]
    if mistakes:
        raise TypeError(f"sleight: {what} has no field {mistakes} in any ComfyUI Sleight knows (a typo?)")
    if unknown:
        log.debug("sleight: this ComfyUI's %s does not know %s; dropped", what, unknown)
    return {k: v for k, v in kwargs.items() if k not in unknown}


def input_fields(kind):
    """The keyword arguments `kind.Input` takes in the running ComfyUI (None: any, it has **kwargs)."""
    params = inspect.signature(kind.Input.__init__).parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    return {p.name for p in params} - {"self"}


def schema(**kwargs) -> io.Schema:
    return io.Schema(**_keep(_SCHEMA_FIELDS, kwargs, NEWER_SCHEMA_FIELDS, "io.Schema"))


def with_options(input_, **options):
    """`input_` with extra entries in its /object_info options (read by web/js). Set after construction:
    0.3.75's String.Input does not take `extra_dict`; every version merges the attribute into its options."""
    input_.extra_dict = {**(input_.extra_dict or {}), **options}
    return input_


def inp(kind, name: str, **kwargs):
    """`io.<Kind>.Input(name, **kwargs)`, without the newer fields this ComfyUI's input class lacks."""
    return kind.Input(name, **_keep(input_fields(kind), kwargs, NEWER_INPUT_FIELDS, f"io.{kind.__name__}.Input"))
