"""The block picker's server side. Layer-spec inputs carry the option `sleight_layers` (which layer kinds they
take); web/js/block_picker.js adds a button next to each that lists the connected model's block ids from
GET /sleight/layers and writes the chosen ones into the input. The input stays a plain string.

    GET /sleight/layers?folder=checkpoints&file=<name>&kinds=text|self[&width=&height=][&spec=<current value>]
    -> {"label", "width", "height", "layers": [{"block", "kind", "heads", "head_dim", "image_tokens", "grid"}],
        "eligible": [block ids the input accepts], "selected": [what `spec` selects], "spec_error": str | null,
        "table": what Sleight · Inspect attention layers prints}; 400 {"error"} on bad input.

The layers come from the model file's structure, never its weights (attention_patches/core/outline.py).
"""
import asyncio
import dataclasses
import logging

from aiohttp import web

import folder_paths

from ..attention_patches.core import families, layerspec, outline

log = logging.getLogger("sleight")

WHO = "Sleight · block picker"
ROUTE = "/sleight/layers"
FOLDERS = ("checkpoints", "diffusion_models", "unet")
MAX_SIZE = 16384


def kinds_of(kinds: str, family):
    """The layer kinds a layer-spec input takes: "text" (where a prompt reaches the image) or "self"."""
    if kinds == "text":
        return layerspec.TEXT_KINDS
    if kinds == "self":
        return (family.self_kind,)
    raise ValueError(f"kinds must be 'text' or 'self', not {kinds!r}")


def describe(folder: str, name: str, kinds: str, width: int = 0, height: int = 0, spec: str = "") -> dict:
    if folder not in FOLDERS:
        raise ValueError(f"folder must be one of {', '.join(FOLDERS)}, not {folder!r}")
    path = folder_paths.get_full_path(folder, name)
    if path is None:
        raise ValueError(f"no model file {name!r} in {folder}")
    base = outline.outline(path)
    family = families.detect(base, WHO)
    width, height = width or family.default_size(), height or family.default_size()
    found = families.layers(base, width, height, family)
    wanted = kinds_of(kinds, family)
    selected, spec_error = [], None
    if spec.strip():
        try:
            selected = layerspec.select(found, spec, family.label, wanted, WHO)
        except layerspec.LayerSpecError as e:
            spec_error = str(e)
    lines = families.format_layers(base, width, height).splitlines()
    return {"label": family.label, "file": name, "width": width, "height": height,
            "layers": [dataclasses.asdict(layer) for layer in found],
            "eligible": layerspec.block_ids(found, wanted), "selected": selected, "spec_error": spec_error,
            "table": "\n".join(lines)}


def _size(query, key):
    value = query.get(key, "0") or "0"
    if not value.isdigit() or int(value) > MAX_SIZE:
        raise ValueError(f"{key} must be a whole number of pixels up to {MAX_SIZE}, not {value!r}")
    return int(value)


async def layers(request):
    q = request.rel_url.query
    try:
        args = (q.get("folder", "checkpoints"), q.get("file", ""), q.get("kinds", "text"), _size(q, "width"),
                _size(q, "height"), q.get("spec", ""))
        body = await asyncio.get_running_loop().run_in_executor(None, describe, *args)
    except (ValueError, OSError) as e:       # bad query, unknown or unreadable file, unsupported model
        log.info("%s: %s", WHO, e)
        return web.json_response({"error": f"{WHO}: {e}"}, status=400)
    return web.json_response(body)


def register(routes):
    """Add the route to ComfyUI's PromptServer routes (called once, when ComfyUI loads the pack)."""
    routes.get(ROUTE)(layers)
