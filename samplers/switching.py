"""Per-step conditioning switching: one mechanism for Rare-to-Frequent and any later "prompt A on these steps" trick.

How a switch runs (comfyui-internals §3.5 option A, §4):
- `install(model, planner)` adds two wrappers to a model clone. At the start of every sampling run the
  OUTER_SAMPLE wrapper asks the planner for a `Plan` (which conditioning replaces the positive at each step of
  this run's schedule) and adds each of the plan's conditionings to `guider.conds` under its own key
  (`comfy.sampler_helpers.convert_cond`), so ComfyUI's own `process_conds` prepares them like the positive:
  pooled outputs, SDXL size embeddings, Flux guidance, areas, ControlNet. Keys and state are removed when the
  run ends, on interrupt too (the state lives in the run's RunState).
- The PREDICT_NOISE wrapper maps each model evaluation to its sampler step (`schedule.StepTracker`) and, for
  that call only, puts the chosen key's conds in `guider.conds["positive"]` (restored in `finally`). The
  negative is never touched. A plan that never switches adds nothing, so it is bit-identical to plain sampling.
- Entries added for the positive inherit from the sampler's first positive entry every setting they do not
  carry themselves (FluxGuidance, InpaintModelConditioning latents, ControlNet, SDXL size, hooks), but not its
  text, area, mask or timing (`NOT_INHERITED`).
Rare-to-Frequent's own pieces: samplers/r2f.py (schedule, interpolation), samplers/r2f_text.py (its text).
"""
from dataclasses import dataclass, field
from typing import Callable, Optional

import comfy.sampler_helpers

from ..attention_patches.core import comfy_compat, hooks, runstate, schedule

KEY = "sleight.switch"          # wrapper key
# Marks the entries this module adds: they stand in for the positive, so rows built from them are "cond" rows
# (for the attention router's uuid → role map, which otherwise names them after their guider.conds key).
ROLE_KEY = "sleight_role"
NOT_INHERITED = frozenset({
    "cross_attn", "pooled_output", "model_conds", "uuid", "attention_mask", "gligen", "prompt_type",
    "area", "mask", "strength", "set_area_to_bounds", "mask_strength",
    "start_percent", "end_percent", "timestep_start", "timestep_end",
})


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


class SwitchRun:
    """Per-run state of one switch: its plan, step tracker and the guider keys it added."""

    def __init__(self, plan: Plan, tracker: schedule.StepTracker):
        self.plan = plan
        self.tracker = tracker
        self.added = []


def switch_entries(conditioning, positive_entries):
    """convert_cond(conditioning) with the settings of the sampler's positive that the entries lack."""
    entries = comfy.sampler_helpers.convert_cond(conditioning)
    base = positive_entries[0] if positive_entries else {}
    for e in entries:
        for k, v in base.items():
            if k not in e and k not in NOT_INHERITED:
                e[k] = v
        e.setdefault("prompt_type", "positive")
        e[ROLE_KEY] = "cond"
    return entries


def install(model, planner: Callable, who: str = "Sleight"):
    """Switch the positive per step on `model` (a clone the caller owns); replaces an earlier Sleight switch.

    planner(total_steps, positive_entries) -> Plan, called once per sampling run.
    """

    def start(run):
        conds = run.guider.conds
        plan = planner(schedule.total_steps(run.sigmas), conds.get("positive") or [])
        if not plan.active:
            return
        if "positive" not in conds:
            raise ValueError(f"{who}: this guider has no 'positive' conditioning to switch.")
        lookahead = comfy_compat.sampler_name(run.sampler) in schedule.LOOKAHEAD_SAMPLERS
        state = run.slot(planner, lambda: SwitchRun(plan, schedule.StepTracker(
            run.sigmas.detach().flatten().cpu().tolist(), lookahead)))
        for key, cond in plan.conds.items():
            if key in conds:
                raise ValueError(f"{who}: the guider already has conditioning '{key}'.")
            conds[key] = switch_entries(cond, conds["positive"])
            state.added.append(key)

    def end(run):
        state = run.peek(planner)
        for key in state.added if state is not None else ():
            run.guider.conds.pop(key, None)

    def predict_noise(executor, x, timestep, model_options={}, seed=None):
        run = runstate.of(model_options)
        state = run.peek(planner) if run is not None else None
        if state is None:
            return executor(x, timestep, model_options, seed)
        key = state.plan.key(state.tracker(timestep))
        guider = executor.class_obj
        if key is None or key not in guider.conds:
            return executor(x, timestep, model_options, seed)
        saved = guider.conds["positive"]
        guider.conds["positive"] = guider.conds[key]
        try:
            return executor(x, timestep, model_options, seed)
        finally:
            guider.conds["positive"] = saved

    hooks.on_run(model, KEY, start, end)
    hooks.replace_wrapper(model, hooks.WRAPPERS.PREDICT_NOISE, KEY, predict_noise)
    return model
