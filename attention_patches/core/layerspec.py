"""Layer specs: which attention layers a Sleight node acts on, written with the router's block ids.

Pure (no ComfyUI imports). The caller passes the model's layers in forward order as `(block, kind)` pairs
(from `arch.list_layers`) and the model family; everything here is string and list work.

Grammar (items separated by commas, semicolons, spaces or new lines):
    output.2.1        one block id, as `SleightInspectAttention` prints it
    output.2.1-3      a range (inclusive) in any numeric part: output.2.1, output.2.2, output.2.3
    output.2          a prefix: every transformer block of ComfyUI block ("output", 2) (= output.2.*)
    output.*.0, double.*, *
                      wildcards; `*` alone is every layer
Every item must match at least one layer, the result is in forward order without repeats, and an empty
spec is an error: a spec never silently selects nothing.

Presets are paper findings (each family adapter lists its own), given as indices into the forward-order list
of *text* attention layers (UNet cross-attention, MMDiT joint attention), counted the way the official code
counts them, and mapped to block ids by counting this model's layers. They refuse a model other than the one
the paper measured, or one whose layer count differs, since the indices would then point at other layers.
"""
import re
from dataclasses import dataclass

from .families import PRESETS

TEXT_KINDS = ("cross", "joint")      # kinds through which a prompt reaches the image


class LayerSpecError(ValueError):
    pass


_ITEM_SPLIT = re.compile(r"[,;\s]+")
_PART = re.compile(r"^(\*|[A-Za-z_][A-Za-z_0-9]*|\d+|\d+-\d+)$")


def _pairs(layers):
    out = []
    for layer in layers:
        if isinstance(layer, tuple):
            out.append((str(layer[0]), str(layer[1])))
        else:
            out.append((str(layer.block), str(layer.kind)))
    return out


def block_ids(layers, kinds=None):
    """Distinct block ids in forward order, optionally only those having a layer of one of `kinds`."""
    seen, out = set(), []
    for block, kind in _pairs(layers):
        if (kinds is None or kind in kinds) and block not in seen:
            seen.add(block)
            out.append(block)
    return out


# ------------------------------------------------------------------ compact formatting

def _split_id(bid):
    parts = bid.split(".")
    head, last = ".".join(parts[:-1]), parts[-1]
    return (head, int(last)) if last.isdigit() and head else (bid, None)


def compact(ids):
    """`output.2.1, output.2.2, output.2.3, joint.4` -> `output.2.1-3, joint.4` (order kept, runs merged)."""
    out = []
    run_head, run_lo, run_hi = None, None, None

    def flush():
        if run_head is None:
            return
        if run_lo == run_hi:
            out.append(f"{run_head}.{run_lo}")
        else:
            out.append(f"{run_head}.{run_lo}-{run_hi}")

    for bid in ids:
        head, num = _split_id(bid)
        if num is not None and head == run_head and num == run_hi + 1:
            run_hi = num
            continue
        flush()
        if num is None:
            out.append(bid)
            run_head = run_lo = run_hi = None
        else:
            run_head, run_lo, run_hi = head, num, num
    flush()
    return ", ".join(out)


def describe_valid(ids, limit: int = 400) -> str:
    """The valid ids for an error message: grouped ranges, cut at about `limit` characters."""
    text = compact(ids)
    if len(text) > limit:
        text = text[:limit].rsplit(", ", 1)[0] + ", …"
    return text


# ------------------------------------------------------------------ parsing

@dataclass(frozen=True)
class Item:
    text: str
    parts: tuple         # each: "*", a name, (lo, hi) for numbers

    def matches(self, bid: str) -> bool:
        if self.parts == ("*",):
            return True
        segs = bid.split(".")
        if len(self.parts) > len(segs):
            return False
        for pat, seg in zip(self.parts, segs):   # fewer parts than the id: a prefix
            if pat == "*":
                continue
            if isinstance(pat, tuple):
                if not seg.isdigit() or not pat[0] <= int(seg) <= pat[1]:
                    return False
            elif pat.lower() != seg.lower():
                return False
        return True


MAX_SPEC = 10_000     # characters: a spec names a few of at most a few hundred layers


def parse(spec: str, who: str = "Sleight"):
    """The items of a spec string; raises LayerSpecError naming the node `who` on syntax errors (not on unknown ids)."""
    if len(spec or "") > MAX_SPEC:
        raise LayerSpecError(f"{who}: the layer spec is {len(spec)} characters long (at most {MAX_SPEC}); name the "
                             "layers with ranges, prefixes or wildcards (output.2.1-3, output.2, double.*).")
    items = []
    for raw in _ITEM_SPLIT.split(spec or ""):
        raw = raw.strip()
        if not raw:
            continue
        parts = []
        for seg in raw.split("."):
            if not _PART.match(seg):
                raise LayerSpecError(
                    f"{who}: cannot read {raw[:80]!r} in the layer spec: write block ids like output.2.1, ranges like "
                    f"output.2.1-3, prefixes like output.2, wildcards like double.* (items separated by commas)")
            if seg.isdigit():
                parts.append((int(seg), int(seg)))
            elif "-" in seg:
                lo, hi = (int(x) for x in seg.split("-"))
                if lo > hi:
                    raise LayerSpecError(f"{who}: the range {seg!r} in {raw[:80]!r} runs backwards; write {hi}-{lo}")
                parts.append((lo, hi))
            else:
                parts.append(seg)
        items.append(Item(raw, tuple(parts)))
    return items


def resolve(spec: str, valid_ids, who: str = "Sleight"):
    """Block ids selected by a spec string among `valid_ids` (forward order); every item must match."""
    valid_ids = list(valid_ids)
    items = parse(spec, who)
    if not items:
        raise LayerSpecError(f"{who}: the layer spec is empty. Valid block ids: {describe_valid(valid_ids)}.")
    chosen = set()
    for item in items:
        hit = [b for b in valid_ids if item.matches(b)]
        if not hit:
            raise LayerSpecError(f"{who}: {item.text[:80]!r} matches no layer of this model. "
                                 f"Valid block ids: {describe_valid(valid_ids)}.")
        chosen.update(hit)
    return [b for b in valid_ids if b in chosen]


def preset_blocks(name: str, layers, label: str, who: str = "Sleight"):
    """The block ids of a preset on a model of family label `label`, counted from its layers in forward order."""
    preset = PRESETS.get(name)
    if preset is None:
        raise LayerSpecError(f"{who}: unknown preset {name!r}; presets: {', '.join(PRESETS)}.")
    ordered = [block for block, kind in _pairs(layers) if kind == preset.kind]
    if label != preset.label or len(ordered) != preset.count:
        raise LayerSpecError(
            f"{who}: the preset {preset.name!r} is the paper's finding for {preset.label} "
            f"({preset.count} {preset.kind}-attention layers); this model is {label or 'unknown'} with "
            f"{len(ordered)} {preset.kind}-attention layers, so the indices would point at other layers. "
            f"Write the layers yourself (custom), or find them with Sleight · Find text layers. "
            f"Valid block ids: {describe_valid(block_ids(layers, TEXT_KINDS))}.")
    return [ordered[i] for i in preset.indices]


def select(layers, spec: str, label: str = "", kinds=TEXT_KINDS, who: str = "Sleight"):
    """Block ids for a preset name or a spec string, restricted to blocks with a layer of `kinds`."""
    name = (spec or "").strip()
    if name in PRESETS:
        return preset_blocks(name, layers, label, who)
    return resolve(spec, block_ids(layers, kinds), who)
