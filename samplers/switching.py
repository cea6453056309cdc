"""Per-step conditioning switching: one mechanism for Rare-to-Frequent and any later "prompt A on these steps" trick.

How a switch runs (comfyui-internals §3.5 option A, §4):
- `install(model, planner)` adds two wrappers to a model clone. At the start of every sampling run the
  OUTER_SAMPLE wrapper asks the planner for a `Plan` (which conditioning replaces the positive at each step of
  this run's schedule) and adds each of the plan's conditionings to `guider.conds` under its own key
  (`comfy.sampler_helpers.convert_cond`), so ComfyUI's own `process_conds` prepares them like the positive:
  pooled outputs, SDXL size embeddings, Flux guidance, areas, ControlNet. Keys and state are removed in
  `finally`, on interrupt too.
- The PREDICT_NOISE wrapper maps each model evaluation to its sampler step (`StepTracker`) and, for that
  call only, puts the chosen key's conds in `guider.conds["positive"]` (restored in `finally`). The negative
  is never touched. A plan that never switches adds nothing, so it is bit-identical to plain sampling.
- Entries added for the positive inherit from the sampler's first positive entry every setting they do not
  carry themselves (FluxGuidance, InpaintModelConditioning latents, ControlNet, SDXL size, hooks), but not its
  text, area, mask or timing (`NOT_INHERITED`).

The rest of the module is R2F-specific and pure (no ComfyUI import): embedding interpolation with token-length
matching, the level → stop-step maps and per-step schedule, and the parser of the R2F LLM / hand-written text.
"""
import json
import logging
import math
import re
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch

from . import schedule

log = logging.getLogger("sleight")

KEY = "sleight.switch"          # wrapper key and transformer_options key of the per-run state
# Samplers that evaluate the model again at a *later scheduled* sigma inside one step (heun: σ_{i+1},
# heunpp2: σ_{i+1} and σ_{i+2}). By sigma alone those evaluations look like the next step; they are counted
# by order instead (see StepTracker). Other multi-evaluation samplers (dpm_2, dpmpp_2s, sde) evaluate strictly
# between two scheduled sigmas, which schedule.step_index already maps to the earlier step.
LOOKAHEAD_SAMPLERS = frozenset({"sample_heun", "sample_heunpp2"})
# Marks the entries this module adds: they stand in for the positive, so rows built from them are "cond" rows
# (for the attention router's uuid → role map, which otherwise names them after their guider.conds key).
ROLE_KEY = "sleight_role"
NOT_INHERITED = frozenset({
    "cross_attn", "pooled_output", "model_conds", "uuid", "attention_mask", "gligen", "prompt_type",
    "area", "mask", "strength", "set_area_to_bounds", "mask_strength",
    "start_percent", "end_percent", "timestep_start", "timestep_end",
})


# ---------------------------------------------------------------------------------------------- switching

@dataclass(frozen=True)
class Plan:
    """What one sampling run does: per step the guider.conds key that replaces the positive (None: keep it)."""

    steps: tuple = ()
    conds: dict = field(default_factory=dict)    # key -> CONDITIONING ([[tensor, dict], ...]), raw

    def key(self, step: int) -> Optional[str]:
        return self.steps[step] if 0 <= step < len(self.steps) else None

    @property
    def active(self) -> bool:
        return any(k is not None for k in self.steps)


def sampler_name(sampler) -> str:
    fn = getattr(sampler, "sampler_function", None)
    return getattr(fn, "__name__", None) or getattr(getattr(fn, "func", None), "__name__", "") or ""


class StepTracker:
    """Maps each model evaluation of one run to the sampler step it belongs to.

    Default: schedule.step_index (largest i with sample_sigmas[i] >= sigma); exact for one-evaluation samplers
    and for samplers whose extra evaluations lie strictly between scheduled sigmas. Look-ahead samplers (heun):
    a step starts with an evaluation whose sigma does not go below the previous one; the later, lower
    evaluations belong to that step.
    """

    def __init__(self, sample_sigmas, lookahead: bool = False):
        self.sigmas = sample_sigmas
        self.lookahead = lookahead
        self.step = -1
        self.last = None

    def __call__(self, sigma) -> int:
        s = schedule.as_float(sigma)
        if not self.lookahead:
            return schedule.step_index(self.sigmas, s)
        if self.last is None or s >= self.last - 1e-6 * max(1.0, abs(self.last)):
            self.step = max(self.step + 1, schedule.step_index(self.sigmas, s)) if self.last is not None \
                else schedule.step_index(self.sigmas, s)
        self.last = s
        return self.step


class SwitchRun:
    """Per-run state, put into the run's transformer_options by the OUTER_SAMPLE wrapper."""

    def __init__(self, plan: Plan, tracker: StepTracker):
        self.plan = plan
        self.tracker = tracker
        self.uuids = set()


def switch_entries(conditioning, positive_entries):
    """convert_cond(conditioning) with the settings of the sampler's positive that the entries lack."""
    import comfy.sampler_helpers

    entries = comfy.sampler_helpers.convert_cond(conditioning)
    base = positive_entries[0] if positive_entries else {}
    for e in entries:
        for k, v in base.items():
            if k not in e and k not in NOT_INHERITED:
                e[k] = v
        e.setdefault("prompt_type", "positive")
        e[ROLE_KEY] = "cond"
    return entries


def _outer_sample_wrapper(planner: Callable, who: str):
    def sleight_switch_outer_sample(executor, *args, **kwargs):
        guider = executor.class_obj
        sampler = args[2] if len(args) > 2 else kwargs.get("sampler")
        sigmas = args[3] if len(args) > 3 else kwargs.get("sigmas")
        conds = guider.conds
        plan = planner(schedule.total_steps(sigmas), conds.get("positive") or [])
        if not plan.active:
            return executor(*args, **kwargs)
        if "positive" not in conds:
            raise ValueError(f"{who}: this guider has no 'positive' conditioning to switch.")
        run = SwitchRun(plan, StepTracker(sigmas.detach().flatten().cpu().tolist(),
                                          sampler_name(sampler) in LOOKAHEAD_SAMPLERS))
        added = []
        to = guider.model_options.setdefault("transformer_options", {})
        try:
            for key, cond in plan.conds.items():
                if key in conds:
                    raise ValueError(f"{who}: the guider already has conditioning '{key}'.")
                conds[key] = switch_entries(cond, conds["positive"])
                added.append(key)
                run.uuids.update(e["uuid"] for e in conds[key])
            to[KEY] = run
            return executor(*args, **kwargs)
        finally:
            to.pop(KEY, None)
            live = getattr(guider, "conds", None)   # outer_sample reassigns nothing, but be safe
            for d in (conds, live):
                if isinstance(d, dict):
                    for key in added:
                        d.pop(key, None)

    return sleight_switch_outer_sample


def _predict_noise_wrapper(executor, x, timestep, model_options={}, seed=None):
    to = model_options.get("transformer_options", {})
    run = to.get(KEY)
    if run is None:
        return executor(x, timestep, model_options, seed)
    key = run.plan.key(run.tracker(timestep))
    guider = executor.class_obj
    if key is None or key not in guider.conds:
        return executor(x, timestep, model_options, seed)
    saved = guider.conds["positive"]
    guider.conds["positive"] = guider.conds[key]
    try:
        return executor(x, timestep, model_options, seed)
    finally:
        guider.conds["positive"] = saved


def install(model, planner: Callable, who: str = "Sleight"):
    """Switch the positive per step on `model` (a clone the caller owns); replaces an earlier Sleight switch.

    planner(total_steps, positive_entries) -> Plan, called once per sampling run.
    """
    import comfy.patcher_extension as pe

    model.remove_wrappers_with_key(pe.WrappersMP.OUTER_SAMPLE, KEY)
    model.remove_wrappers_with_key(pe.WrappersMP.PREDICT_NOISE, KEY)
    model.add_wrapper_with_key(pe.WrappersMP.OUTER_SAMPLE, KEY, _outer_sample_wrapper(planner, who))
    model.add_wrapper_with_key(pe.WrappersMP.PREDICT_NOISE, KEY, _predict_noise_wrapper)
    return model


# ---------------------------------------------------------------------------------------------- interpolation

def fit_lengths(a: torch.Tensor, b: torch.Tensor, how: str):
    """Bring two (B, L, D) text embeddings to one length L.

    "repeat" (UNet cross-attention; CLIP gives 77·n tokens, each 77-chunk encoded on its own): repeat both to the
    LCM length, so chunk k of one meets chunk k mod n of the other. Repeating keys and values does not change
    cross-attention, so the ends of an interpolation (α = 0 or 1) are exactly the plain prompts.
    "pad" (DiT joint attention, where repeating text tokens would change attention mass): pad the shorter with
    copies of its final token (usually a padding token, as if it had been encoded with a longer minimum length).
    """
    la, lb = a.shape[1], b.shape[1]
    if a.shape[-1] != b.shape[-1]:
        raise ValueError(f"embedding sizes differ ({a.shape[-1]} and {b.shape[-1]}): the two prompts come from "
                         "different text encoders")
    if la == lb:
        return a, b
    if how == "repeat":
        n = math.lcm(la, lb)
        return a.repeat(1, n // la, 1), b.repeat(1, n // lb, 1)
    n = max(la, lb)

    def pad(t):
        return t if t.shape[1] == n else torch.cat([t, t[:, -1:].expand(t.shape[0], n - t.shape[1], t.shape[2])], 1)

    return pad(a), pad(b)


def lerp_entry(freq, rare, alpha: float, how: str):
    """One conditioning entry e = α·e_freq + (1−α)·e_rare on the text embedding and the pooled output.

    The other settings come from the rare entry. α = 0 / 1 give the rare / frequent tensors bit for bit when the
    lengths already match.
    """
    f, r = fit_lengths(freq[0], rare[0], how)
    out = dict(rare[1])
    fp, rp = freq[1].get("pooled_output"), rare[1].get("pooled_output")
    if fp is not None and rp is not None:
        out["pooled_output"] = alpha * fp + (1.0 - alpha) * rp
    return [alpha * f + (1.0 - alpha) * r, out]


# ---------------------------------------------------------------------------------------------- R2F schedule

# Rare-to-Frequent (Park et al., ICLR 2025), krafton-ai/Rare-to-Frequent: visual detail level 0..5 → the step at
# which the frequent prompt stops, out of 50 steps. Alternation: frequent prompt on even steps, the rare
# (original) prompt on odd steps, until the stop; then the rare prompt only. Interpolation (FLUX.1-schnell):
# e = α_i·e_freq + (1−α_i)·e_rare on steps 0 (levels 1–3) or 0–1 (levels 4–5), α = 0.3, 0.15, 0.15, 0.15.
SD3_MAP = (0, 5, 10, 20, 30, 40)       # SD3 / DiTs
SDXL_MAP = (0, 3, 5, 10, 20, 30)       # SDXL / UNets
MAP_STEPS = 50
LEVEL_MAPS = {"sd3": SD3_MAP, "sdxl": SDXL_MAP}
DEFAULT_ALPHAS = "0.3,0.15,0.15,0.15"
MAX_LEVEL = 5


def round_half_up(x: float) -> int:
    return int(math.floor(x + 0.5))


def level_stop(level: int, total_steps: int, level_map=SD3_MAP) -> int:
    """Stop step for a level as the same fraction of any step count; a level ≥ 1 keeps at least step 0."""
    if level <= 0 or total_steps <= 0:
        return 0
    return min(total_steps, max(1, round_half_up(level_map[level] / MAP_STEPS * total_steps)))


def interpolation_steps(level: int) -> int:
    """Steps with interpolated embeddings (official Flux code): 0 for level 0, 1 for levels 1–3, 2 for 4–5."""
    return 0 if level <= 0 else (1 if level <= 3 else 2)


def r2f_stops(levels, total_steps: int, mode: str = "alternate", level_map=SD3_MAP, stop_percent: float = -1.0):
    """Stop step of every stage, made non-decreasing (a stage never ends before the one before it)."""
    if stop_percent is not None and stop_percent >= 0:
        stops = [min(total_steps, round_half_up(stop_percent * total_steps))] * len(levels)
    elif mode == "interpolate":
        stops = [min(total_steps, interpolation_steps(lv)) for lv in levels]
    else:
        stops = [level_stop(lv, total_steps, level_map) for lv in levels]
    out, top = [], 0
    for s in stops:
        top = max(top, s)
        out.append(top)
    return out


def r2f_schedule(stops, total_steps: int, mode: str = "alternate", alphas=(1.0,)):
    """Per step: None (the rare prompt) or (stage, α). Stage at step i = how many stops are <= i.

    alternate: (stage, 1.0) on even steps before the stage's stop, None on odd steps and after the last stop.
    interpolate: (stage, α_i) on every step before the stop (α list indexed by step, its last value repeated);
    α = 0 is None.
    """
    out = []
    for i in range(total_steps):
        stage = sum(1 for s in stops if s <= i)
        if stage >= len(stops):
            out.append(None)
        elif mode == "interpolate":
            a = float(alphas[min(i, len(alphas) - 1)])
            out.append(None if a <= 0.0 else (stage, min(a, 1.0)))
        else:
            out.append((stage, 1.0) if i % 2 == 0 else None)
    return out


def parse_alphas(text: str, who: str = "Sleight · Rare-to-Frequent"):
    parts = [p for p in re.split(r"[\s,;]+", (text or "").strip()) if p]
    if not parts:
        raise ValueError(f"{who}: alphas is empty. Write one interpolation weight per step, e.g. '{DEFAULT_ALPHAS}'.")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise ValueError(f"{who}: alphas must be numbers separated by commas, e.g. '{DEFAULT_ALPHAS}'; "
                         f"got '{text}'.") from None
    bad = [v for v in values if not 0.0 <= v <= 1.0]
    if bad:
        raise ValueError(f"{who}: every alpha must lie in [0, 1] (0 = rare prompt, 1 = frequent prompt); got {bad}.")
    return values


# ---------------------------------------------------------------------------------------------- R2F text

PROMPT_NODE = "Sleight · R2F prompt"
FORMAT_HELP = (
    "Expected the Rare-to-Frequent LLM answer ('### Final Prompt Sequence: A hairy object BREAK A hairy hamburger' "
    "with '### Visual Detail Level: 5'; several concepts joined with ' AND ', one level per concept, and the "
    "original prompt on a line '### Input: ...'), or hand-written lines 'frequent BREAK rare' or 'frequent, rare'."
)


@dataclass(frozen=True)
class R2FSpec:
    """The prompts of one R2F generation: stages[0] is the most frequent, then concepts are restored in ascending
    level; the original (rare) prompt comes last and is not a stage. levels[j] (or None) belongs to stages[j]."""

    original: str
    stages: tuple = ()
    levels: tuple = ()
    notes: tuple = ()


def _err(msg: str):
    return ValueError(f"{PROMPT_NODE}: {msg}")


_AND = re.compile(r"\s+AND\s+")
_BREAK = re.compile(r"\s+BREAK\s+")
_LEVEL_LINE = re.compile(r"^\s*(?:#+\s*)?visual\s+detail\s+levels?\b\s*:?\s*(.*)$", re.I)
_LEVEL_INLINE = re.compile(r"visual\s+detail\s+level\s*:\s*(\d+)", re.I)
_INPUT_LINE = re.compile(r"^\s*(?:#+\s*)?input\s*:\s*(.*)$", re.I)
_SEQUENCE_LINE = re.compile(r"^\s*(?:#+\s*)?final\s+prompt\s+sequence\b\s*:?\s*(.*)$", re.I)
_STEP_LINE = re.compile(r"^\s*([a-d])\.\s+(.*)$")


def _levels_of(text: str):
    values = [int(v) for v in re.findall(r"-?\d+", text)]
    bad = [v for v in values if not 0 <= v <= MAX_LEVEL]
    if bad:
        raise _err(f"visual detail levels must be 0..{MAX_LEVEL}; got {bad} in '{text.strip()}'.")
    return values


def _value_after(lines, i, rest):
    """A header's value: the rest of its line, or else the next non-empty line (consumed)."""
    if rest.strip():
        return rest.strip(), i
    j = i + 1
    while j < len(lines) and not lines[j].strip():
        j += 1
    if j < len(lines):
        return lines[j].strip(), j
    return "", i


def _split_part(part: str, handwritten: bool):
    """One AND-part: ("pair", freq, rare) | ("chain", [p0..pn]) | ("plain", text)."""
    pieces = [p.strip() for p in _BREAK.split(part.strip())]
    if any(not p for p in pieces):
        raise _err(f"'{part.strip()}' has an empty side of BREAK. {FORMAT_HELP}")
    if len(pieces) == 2:
        return ("pair", pieces[0], pieces[1])
    if len(pieces) > 2:
        return ("chain", pieces)
    if handwritten and part.count(",") == 1:
        f, r = (p.strip() for p in part.split(","))
        if not f or not r:
            raise _err(f"'{part.strip()}' has an empty side of the comma. {FORMAT_HELP}")
        return ("pair", f, r)
    return ("plain", part.strip())


def _from_json(text: str):
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise _err(f"the text starts with '{{' but is not valid JSON ({e.msg}, line {e.lineno}). "
                   "Paste one entry of a released prompt file: {\"visual_detail_level\": ..., \"r2f_prompt\": [[...]]}.") from None
    if isinstance(data, dict) and "r2f_prompt" not in data and len(data) == 1:
        data = next(iter(data.values()))
    if not isinstance(data, dict) or "r2f_prompt" not in data:
        raise _err("the JSON must be one entry of a released R2F prompt file: "
                   "{\"visual_detail_level\": [\"3\"], \"r2f_prompt\": [[\"frequent prompt\", ..., \"original prompt\"]]} "
                   "(or {\"<prompt>\": {...}} with exactly one prompt).")
    seq = data["r2f_prompt"]
    if isinstance(seq, list) and seq and isinstance(seq[0], list):
        seq = seq[0]
    if not isinstance(seq, list) or not seq or not all(isinstance(p, str) and p.strip() for p in seq):
        raise _err("r2f_prompt must be a non-empty list of prompts.")
    lv = data.get("visual_detail_level", [])
    levels = _levels_of(" ".join(lv) if isinstance(lv, list) else str(lv))
    return [p.strip() for p in seq], levels


def _chain_spec(seq, levels, notes):
    """A full prompt sequence P0 … Pn (Pn = original). levels: one per transition (n), one for all, or none."""
    n = len(seq) - 1
    if n == 0:
        return R2FSpec(seq[0], (), (), tuple(notes))
    if levels and len(levels) not in (1, n):
        raise _err(f"{n + 1} prompts in the sequence need {n} visual detail levels (one per transition), got "
                   f"{len(levels)}: {levels}.")
    if not levels:
        lv = [None] * n
    elif len(levels) == 1:
        lv = levels * n
    else:
        lv, top = [], 0
        for v in levels:
            top = max(top, v)
            lv.append(top)
        if lv != levels:
            notes.append(f"levels {levels} of the prompt sequence are not ascending; used {lv} so that no prompt "
                         "ends before an earlier one (a full sequence cannot be reordered)")
    return R2FSpec(seq[-1], tuple(seq[:-1]), tuple(lv), tuple(notes))


def _find_spans(original: str, concepts):
    """Non-overlapping position of every concept's rare phrase in the original prompt (case-insensitive)."""
    taken, spans = [], []
    low = original.lower()
    for freq, rare, _ in concepts:
        needle, start, found = rare.lower(), 0, None
        while True:
            i = low.find(needle, start)
            if i < 0:
                break
            if all(i + len(needle) <= a or i >= b for a, b in taken):
                found = (i, i + len(needle))
                break
            start = i + 1
        if found is None:
            raise _err(f"the rare concept '{rare}' does not occur in the original prompt '{original}'. The rare side "
                       "of each 'frequent BREAK rare' must be a phrase of the prompt on the '### Input:' line.")
        taken.append(found)
        spans.append(found)
    return spans


def _case_like(phrase: str, replaced: str) -> str:
    """The frequent phrase with the first-letter case of the text it replaces ('A hairy animal' → 'a hairy …')."""
    if phrase and replaced and phrase[0].isalpha() and replaced[0].isalpha():
        return (phrase[0].upper() if replaced[0].isupper() else phrase[0].lower()) + phrase[1:]
    return phrase


def _concept_spec(original, concepts, notes):
    """Pairs (freq, rare, level): sort by level (stable), stage j keeps concepts j.. in their frequent form."""
    concepts = [c for c in concepts if c[2] is None or c[2] > 0]       # level 0: no rare concept, stays as is
    if not concepts:
        return R2FSpec(original, (), (), tuple(notes))
    given = [c[2] for c in concepts]
    if given[0] is not None and given != sorted(given):
        notes.append("levels " + ", ".join(str(c[2]) for c in concepts) + " were not ascending; concepts are "
                     "restored in ascending level")
    spans = _find_spans(original, concepts)
    order = sorted(range(len(concepts)), key=lambda k: (concepts[k][2] if concepts[k][2] is not None else 0, k))
    stages = []
    for j in range(len(order)):
        frequent_now = sorted(order[j:], key=lambda k: spans[k][0])
        text, pos = [], 0
        for k in frequent_now:
            a, b = spans[k]
            text += [original[pos:a], _case_like(concepts[k][0], original[a:b])]
            pos = b
        stages.append("".join(text + [original[pos:]]))
    return R2FSpec(original, tuple(stages), tuple(concepts[k][2] for k in order), tuple(notes))


def parse_r2f_text(text: str) -> R2FSpec:
    """The R2F prompt text (LLM answer, released JSON entry or hand-written lines) → R2FSpec."""
    text = (text or "").strip()
    if not text:
        raise _err(f"the prompt text is empty. {FORMAT_HELP}")
    notes = []
    if text.startswith("{"):
        seq, levels = _from_json(text)
        return _chain_spec(seq, levels, notes)

    lines = text.splitlines()
    original, sequence, summary_levels, inline_levels, body = None, None, None, [], []
    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        m_in, m_seq, m_lv = _INPUT_LINE.match(line), _SEQUENCE_LINE.match(line), _LEVEL_LINE.match(line)
        if m_in:
            original, i = _value_after(lines, i, m_in.group(1))
        elif m_seq:
            sequence, i = _value_after(lines, i, m_seq.group(1))
        elif m_lv:
            value, i = _value_after(lines, i, m_lv.group(1))
            summary_levels = (summary_levels or []) + _levels_of(value)
        elif not stripped or stripped == "AND" or stripped.startswith("#"):
            pass
        else:
            step = _STEP_LINE.match(line)
            inline = _LEVEL_INLINE.search(line)
            if inline:
                inline_levels += _levels_of(inline.group(1))
            if step and step.group(1) in "abd":
                pass                                  # the LLM's reasoning lines a., b., d.
            elif not inline:
                body.append((i + 1, step.group(2) if step else stripped))
        i += 1
    levels = summary_levels if summary_levels is not None else inline_levels

    if sequence is not None:
        parts = [_split_part(p, handwritten=False) for p in _AND.split(sequence.strip()) if p.strip()]
        where = "the final prompt sequence"
    else:
        parts = []
        for lineno, content in body:
            for p in _AND.split(content):
                if p.strip():
                    part = _split_part(p, handwritten=True)
                    if part[0] == "plain" and (len(body) > 1 or original is not None):
                        raise _err(f"line {lineno} '{p.strip()}' is neither 'frequent BREAK rare' nor 'frequent, rare'"
                                   " (exactly one comma; use BREAK when the prompts contain commas). Put the original "
                                   "prompt on a line '### Input: ...'.")
                    parts.append(part)
        where = "the text"
    if original is not None and not original.strip():
        raise _err("the '### Input:' line is empty; write the original prompt after it.")
    if not parts:
        if original:
            return R2FSpec(original.strip(), (), (), tuple(notes))
        raise _err(f"no prompt found in {where}. {FORMAT_HELP}")

    chains = [p for p in parts if p[0] == "chain"]
    if chains:
        if len(parts) > 1:
            raise _err("a sequence with several BREAKs ('P0 BREAK P1 BREAK original') must be the only prompt; "
                       "do not combine it with ' AND '.")
        return _chain_spec(chains[0][1], levels, notes)

    pairs = [p for p in parts if p[0] == "pair"]
    if not pairs:                                      # e.g. "A running dog", level 0: no rare concept
        if sequence is None and levels != [0]:
            raise _err(f"no 'frequent BREAK rare' (or 'frequent, rare') found in '{parts[0][1]}'. {FORMAT_HELP} "
                       "A prompt without a rare concept needs 'Visual Detail Level: 0'.")
        if len(parts) > 1:
            raise _err(f"{where} has {len(parts)} prompts joined with AND but no 'frequent BREAK rare'. {FORMAT_HELP}")
        return R2FSpec(original.strip() if original else parts[0][1], (), (), tuple(notes))
    if levels and len(levels) == len(parts):
        concept_levels = [lv for p, lv in zip(parts, levels) if p[0] == "pair"]
    elif levels and len(levels) == len(pairs):
        concept_levels = list(levels)
    elif levels and len(levels) == 1:
        concept_levels = levels * len(pairs)
    elif levels:
        raise _err(f"{len(pairs)} concepts need {len(pairs)} visual detail levels (one per concept, e.g. "
                   f"'### Visual Detail Level: {' AND '.join(['3'] * len(pairs))}'), got {len(levels)}: {levels}.")
    else:
        concept_levels = [None] * len(pairs)
    concepts = [(p[1], p[2], lv) for p, lv in zip(pairs, concept_levels)]
    if original is None:
        if len(concepts) > 1:
            rares = ", ".join(f"'{c[1]}'" for c in concepts)
            raise _err(f"{len(concepts)} concepts ({rares}) need the original prompt to build the prompt sequence: "
                       "add a line '### Input: <the original prompt>'.")
        original = concepts[0][1]
    return _concept_spec(original.strip(), concepts, notes)
