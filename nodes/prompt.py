"""Prompt nodes (sleight/prompt): Rare-to-Frequent (Park et al., ICLR 2025)."""
import logging

import torch

from ..attention_patches.core import families
from ..samplers import r2f, r2f_plan, r2f_text, switching
from ._compat import inp, io, schema, ui
from .base import SleightNode

log = logging.getLogger("sleight")

R2F = "Sleight · Rare-to-Frequent"
# How a frequent prompt's place in the R2F sequence travels: keys in each conditioning entry's dict (they survive
# ConditioningCombine and reach the guider untouched; models ignore unknown keys).
STAGE_KEY = "sleight_r2f_stage"   # 0 = the most frequent prompt; concepts are restored in ascending level
LEVEL_KEY = "sleight_r2f_level"   # visual detail level 0..5 of that stage, or None (use the node's widget)
MODES = ["alternate", "interpolate"]
LEVEL_MAP_CHOICES = ["auto", "sd3", "sdxl"]


def _check_conditioning(cond, name):
    ok = isinstance(cond, (list, tuple)) and len(cond) > 0 and all(
        isinstance(e, (list, tuple)) and len(e) >= 2 and torch.is_tensor(e[0]) and isinstance(e[1], dict) for e in cond)
    if not ok:
        raise ValueError(f"{R2F}: '{name}' is not a text conditioning (connect a CLIP Text Encode or "
                         "Sleight · R2F prompt output).")


def frequent_stages(frequent, default_level: int):
    """The frequent conditioning → [(conditioning, level)] in stage order.

    Entries tagged by Sleight · R2F prompt carry STAGE_KEY / LEVEL_KEY; an untagged conditioning is one stage at
    `default_level` (several untagged entries are one prompt, averaged by ComfyUI as usual).
    """
    tagged = [e for e in frequent if STAGE_KEY in e[1]]
    if not tagged:
        return [(list(frequent), default_level)]
    if len(tagged) != len(frequent):
        raise ValueError(f"{R2F}: 'frequent' mixes prompts from Sleight · R2F prompt with other conditionings. "
                         "Combine frequent prompts only from one Sleight · R2F prompt node, or use a plain prompt.")
    stages = {}
    for e in frequent:
        stages.setdefault(int(e[1][STAGE_KEY]), []).append(e)
    out = []
    for stage in sorted(stages):
        levels = {e[1].get(LEVEL_KEY) for e in stages[stage]}
        if len(levels) > 1:
            raise ValueError(f"{R2F}: the entries of frequent prompt {stage} disagree on the level ({sorted(levels, key=str)}).")
        level = levels.pop()
        level = default_level if level is None else int(level)
        if not 0 <= level <= r2f.MAX_LEVEL:
            raise ValueError(f"{R2F}: visual detail level {level} of frequent prompt {stage} is not in 0..5.")
        out.append((stages[stage], level))
    return out


class R2FPlanner:
    """Builds one run's Plan: which stage (or interpolation of it) replaces the positive at each step."""

    def __init__(self, rare, stages, mode, level_map, stop_percent, alphas, how):
        self.rare, self.stages, self.mode = rare, stages, mode
        self.level_map, self.stop_percent, self.alphas, self.how = level_map, stop_percent, alphas, how

    def stops(self, total_steps):
        return r2f.r2f_stops([lv for _, lv in self.stages], total_steps, self.mode, self.level_map,
                             self.stop_percent)

    def schedule(self, total_steps):
        alphas = self.alphas if self.mode == "interpolate" else (1.0,)
        return r2f.r2f_schedule(self.stops(total_steps), total_steps, self.mode, alphas)

    def interpolated(self, stage, alpha):
        freq = self.stages[stage][0]
        n = max(len(freq), len(self.rare))
        return [r2f.lerp_entry(freq[min(i, len(freq) - 1)], self.rare[min(i, len(self.rare) - 1)], alpha, self.how)
                for i in range(n)]

    def __call__(self, total_steps, positive):
        steps, conds = [], {}
        for choice in self.schedule(total_steps):
            if choice is None:
                steps.append(None)
                continue
            stage, alpha = choice
            if alpha >= 1.0:
                key = f"sleight_r2f_{stage}"
                if key not in conds:
                    conds[key] = self.stages[stage][0]
            else:
                key = f"sleight_r2f_{stage}_a{alpha!r}"
                if key not in conds:
                    conds[key] = self.interpolated(stage, alpha)
            steps.append(key)
        plan = switching.Plan(tuple(steps), conds)
        if plan.active and positive:
            pos = positive[0].get("cross_attn")
            if pos is not None and not _is_repeated(pos, self.rare[0][0]):
                log.warning("%s: the sampler's positive prompt is not the 'rare' conditioning of this node. Rare steps "
                            "use the sampler's positive; connect the same rare prompt to both.", R2F)
        return plan


def _is_repeated(batch, row):
    """`batch` is `row`, possibly repeated along the batch (one copy per image, as a batched prompt list gives)."""
    if batch.shape[1:] != row.shape[1:] or batch.shape[0] % row.shape[0]:
        return False
    return torch.equal(batch.cpu(), row.cpu().repeat(batch.shape[0] // row.shape[0], *[1] * (row.dim() - 1)))


class SleightRareToFrequent(SleightNode):
    @classmethod
    def define_schema(cls):
        return schema(
            node_id="SleightRareToFrequent",
            display_name=R2F,
            category="sleight/prompt",
            description=(
                "Rare-to-Frequent (Park et al., ICLR 2025): draw rare concepts ('a hairy hamburger') by guiding the "
                "first steps with a frequent one ('a hairy object'). alternate: frequent prompt on even steps, the "
                "rare prompt on odd steps, until a stop step set by the visual detail level (paper maps of 50 steps: "
                "SD3 0/5/10/20/30/40, SDXL 0/3/5/10/20/30 for levels 0-5, scaled to your step count); then the rare "
                "prompt only. interpolate (few-step models, e.g. Flux schnell): e = a*e_freq + (1-a)*e_rare on steps "
                "0 (levels 1-3) or 0-1 (levels 4-5). Pooled outputs switch too. The sampler's positive is used on rare "
                "steps; connect the same rare prompt there. The negative is untouched."
            ),
            inputs=[
                inp(io.Model, "model", tooltip="The model to patch. A patched copy is returned; the input model is unchanged."),
                inp(io.Conditioning, "rare",
                    tooltip="The original prompt with the rare concept (e.g. 'a hairy hamburger'). Connect the same "
                            "conditioning to the sampler's positive: rare steps use the sampler's positive."),
                inp(io.Conditioning, "frequent",
                    tooltip="The frequent prompt (e.g. 'a hairy object'), or the frequent output of Sleight · R2F prompt, "
                            "which carries several frequent prompts and their visual detail levels."),
                inp(io.Int, "visual_detail_level", default=3, min=0, max=5,
                    tooltip="How much local detail the rare concept needs, 1 (shape) to 5 (hair, texture); higher keeps "
                            "the frequent prompt longer. Used when 'frequent' carries no level. 0 = off."),
                inp(io.Combo, "mode", options=MODES, default="alternate",
                    tooltip="alternate (paper, SD3/SDXL): frequent on even steps, rare on odd steps, until the stop step. "
                            "interpolate (paper, Flux schnell and other few-step models): blend the two embeddings on the "
                            "first step(s) with the alphas below."),
                inp(io.Float, "stop_percent", default=-1.0, min=-1.0, max=1.0, step=0.01,
                    tooltip="Override: fraction of the steps during which the frequent prompt is used (alternate) or "
                            "interpolated (interpolate), for every frequent prompt. -1 = from the visual detail level. "
                            "0 = off."),
                inp(io.Combo, "level_map", options=LEVEL_MAP_CHOICES, default="auto",
                    tooltip="Level -> stop step map (of 50 steps, scaled to yours). sd3: 0,5,10,20,30,40. "
                            "sdxl: 0,3,5,10,20,30. auto: sdxl for UNet models (SD1.5, SDXL), sd3 for SD3, Flux and other DiTs."),
                inp(io.String, "alphas", default=r2f.DEFAULT_ALPHAS,
                    tooltip="interpolate mode: weight of the frequent prompt at steps 0, 1, 2, ... (the last value "
                            "repeats). Paper (Flux schnell): 0.3,0.15,0.15,0.15."),
            ],
            outputs=[io.Model.Output(tooltip="The model with Rare-to-Frequent prompt switching; connect it to the sampler.")],
        )

    @classmethod
    def execute(cls, model, rare, frequent, visual_detail_level, mode, stop_percent, level_map, alphas):
        _check_conditioning(rare, "rare")
        _check_conditioning(frequent, "frequent")
        if mode not in MODES:
            raise ValueError(f"{R2F}: mode must be one of {MODES}, got '{mode}'.")
        if level_map not in LEVEL_MAP_CHOICES:
            raise ValueError(f"{R2F}: level_map must be one of {LEVEL_MAP_CHOICES}, got '{level_map}'.")
        if not -1.0 <= stop_percent <= 1.0 or (stop_percent < 0 and stop_percent != -1.0):
            raise ValueError(f"{R2F}: stop_percent must be -1 (use the level) or in [0, 1], got {stop_percent}.")
        if not 0 <= visual_detail_level <= r2f.MAX_LEVEL:
            raise ValueError(f"{R2F}: visual_detail_level must be 0..5, got {visual_detail_level}.")
        alpha_values = r2f.parse_alphas(alphas, R2F)
        stages = frequent_stages(frequent, int(visual_detail_level))
        family = families.require(model, "r2f", R2F)
        if level_map == "auto":
            level_map = family.r2f_level_map
        if mode == "interpolate":
            for freq, _ in stages:
                if len(freq) != len(rare) and 1 not in (len(freq), len(rare)):
                    raise ValueError(f"{R2F}: interpolate needs one entry per prompt (or equally many); 'rare' has "
                                     f"{len(rare)} and a frequent prompt {len(freq)}. Do not combine conditionings here.")
                for f in freq:
                    if f[0].shape[-1] != rare[0][0].shape[-1]:
                        raise ValueError(f"{R2F}: 'rare' and 'frequent' come from different text encoders "
                                         f"(embedding size {rare[0][0].shape[-1]} and {f[0].shape[-1]}); encode both "
                                         "with the model's CLIP.")
        planner = R2FPlanner(list(rare), stages, mode, r2f.LEVEL_MAPS[level_map],
                             float(stop_percent), alpha_values, family.embedding_fit)
        m = model.clone()
        switching.install(m, planner, R2F)
        return io.NodeOutput(m)


def _encode(clip, text):
    """CLIPTextEncode."""
    return clip.encode_from_tokens_scheduled(clip.tokenize(text))


def _tagged(conditioning, stage, level):
    return [[e[0], {**e[1], STAGE_KEY: stage, LEVEL_KEY: level}] for e in conditioning]


class SleightR2FPrompt(SleightNode):
    @classmethod
    def define_schema(cls):
        return schema(
            node_id="SleightR2FPrompt",
            display_name=r2f_text.PROMPT_NODE,
            category="sleight/prompt",
            description=(
                "Encodes a Rare-to-Frequent prompt for Sleight · Rare-to-Frequent. Paste the R2F LLM answer "
                "('### Final Prompt Sequence: A hairy object BREAK A hairy hamburger' + '### Visual Detail Level: 5'; "
                "several concepts joined with ' AND ', one level each, the original prompt on '### Input: ...'), a "
                "released prompt-file entry (JSON), or write lines 'frequent BREAK rare' / 'frequent, rare'. Concepts "
                "are restored one at a time in ascending level (levels are sorted, so unsorted LLM output is safe)."
            ),
            inputs=[
                inp(io.Clip, "clip", tooltip="The text encoder of your model (the CLIP output of the checkpoint loader)."),
                inp(io.String, "text", multiline=True,
                    default="### Input: A hairy hamburger\n### Final Prompt Sequence: A hairy object BREAK A hairy hamburger\n"
                            "### Visual Detail Level: 5",
                    tooltip="R2F prompt: the LLM answer format of the paper (frequent BREAK rare per concept, ' AND ' "
                            "between concepts, 'Visual Detail Level: 3' or '### Visual Detail Level: 3 AND 5', "
                            "'### Input: original prompt'), or hand-written lines 'frequent, rare'. Without a level the "
                            "Rare-to-Frequent node's visual_detail_level is used."),
            ],
            outputs=[
                io.Conditioning.Output(
                    display_name="rare",
                    tooltip="The original prompt: connect it to the sampler's positive and to the Rare-to-Frequent "
                            "node's 'rare'."),
                io.Conditioning.Output(
                    display_name="frequent",
                    tooltip="The frequent prompts in restoring order, each tagged with its visual detail level; "
                            "connect it to the Rare-to-Frequent node's 'frequent'."),
                io.String.Output(
                    display_name="levels",
                    tooltip="The visual detail levels in stage order, e.g. '3, 5' (empty when the text gives none)."),
            ],
        )

    @classmethod
    def execute(cls, clip, text):
        if clip is None:
            raise RuntimeError(f"{r2f_text.PROMPT_NODE}: the clip input is empty; your checkpoint has no text encoder. "
                               "Load one with a CLIP loader.")
        spec = r2f_text.parse_r2f_text(text)
        for note in spec.notes:
            log.warning("%s: %s", r2f_text.PROMPT_NODE, note)
        rare, frequent, levels, summary = _conditionings(clip, spec)
        return io.NodeOutput(rare, frequent, levels, ui=ui.PreviewText(summary))


def _conditionings(clip, spec):
    """R2FSpec → (rare, frequent tagged with stage and level, levels text, summary): what Sleight · Rare-to-Frequent
    takes, however the plan was written."""
    cache = {}

    def encode(t):
        if t not in cache:
            cache[t] = _encode(clip, t)
        return cache[t]

    rare = encode(spec.original)
    if spec.stages:
        frequent = []
        for j, (prompt, level) in enumerate(zip(spec.stages, spec.levels)):
            frequent += _tagged(encode(prompt), j, level)
    else:
        frequent = _tagged(rare, 0, 0)
    levels = ", ".join(str(lv) for lv in spec.levels if lv is not None)
    lines = [f"{j}: {p}" + (f"   (level {lv})" if lv is not None else "") for j, (p, lv) in enumerate(zip(spec.stages, spec.levels))]
    summary = "\n".join(lines + [f"rare: {spec.original}"] + [f"note: {n}" for n in spec.notes])
    return rare, frequent, levels, summary


class SleightR2FPlan(SleightNode):
    @classmethod
    def define_schema(cls):
        return schema(
            node_id="SleightR2FPlan",
            display_name=r2f_plan.NODE,
            category="sleight/prompt",
            description=(
                "Writes the Rare-to-Frequent plan of a prompt with the language model of your text encoder: no outside "
                "LLM, no network. The paper's instruction and examples ask it for each rare concept's frequent "
                "stand-in ('a hairy hamburger' -> 'a hairy object') and visual detail level; the answer is parsed "
                "like a hand-written plan and encoded for Sleight · Rare-to-Frequent. Planning encoders: Qwen3-4B "
                "(Z-Image) and Qwen2.5-VL-3B (OmniGen2); on a newer ComfyUI that generates text, its Qwen encoders "
                "too. An answer that does not parse falls back to the plain prompt with a warning in the plan text."
            ),
            inputs=[
                inp(io.Clip, "clip",
                    tooltip="The text encoder that writes the plan: a Qwen language model, e.g. Z-Image's Qwen3-4B "
                            "(CLIPLoader type lumina2). It also encodes the prompts unless encode_clip is connected."),
                inp(io.String, "prompt", multiline=True, default="A hairy hamburger on a wooden table",
                    tooltip="Your prompt, with the rare concept(s). Line breaks become spaces."),
                inp(io.Combo, "decoding", options=["greedy", "sample"], default="greedy",
                    tooltip="greedy: the most likely answer, the same every time. sample: temperature 0.6, top-p 0.9 "
                            "(the paper's LLaMA-3 setting) from the seed below."),
                inp(io.Int, "seed", default=0, min=0, max=0xffffffffffffffff, control_after_generate=False,
                    tooltip="Seed of the sampled answer (decoding 'sample'); the same seed gives the same plan. It "
                            "stays fixed between runs: a new seed would write a new plan each time."),
                inp(io.Int, "max_new_tokens", default=400, min=16, max=2048,
                    tooltip="Upper bound on the answer's length. One concept takes about 100 tokens with the reasoning "
                            "lines, two about 200; the model stops by itself when done."),
                inp(io.Combo, "on_failure", options=r2f_plan.FAILURE_MODES, default="plain prompt",
                    tooltip="When the answer does not parse: plain prompt (the run goes on with the plain prompt and "
                            "the plan text says why) or raise (stop with an error)."),
                inp(io.Clip, "encode_clip", optional=True,
                    tooltip="Optional: your model's text encoder when it is not the planning one (e.g. plan with "
                            "Qwen3-4B, sample SDXL). Empty: the clip above encodes the prompts."),
            ],
            outputs=[
                io.Conditioning.Output(
                    display_name="rare",
                    tooltip="The prompt: connect it to the sampler's positive and to the Rare-to-Frequent node's 'rare'."),
                io.Conditioning.Output(
                    display_name="frequent",
                    tooltip="The frequent prompts of the plan in restoring order, each tagged with its visual detail "
                            "level; connect it to the Rare-to-Frequent node's 'frequent'."),
                io.String.Output(
                    display_name="levels",
                    tooltip="The visual detail levels in stage order, e.g. '3, 5' (empty without a rare concept)."),
                io.String.Output(
                    display_name="plan",
                    tooltip="The plan as text, in the format Sleight · R2F prompt reads: connect a Preview Any node to "
                            "read it, or paste it into Sleight · R2F prompt to edit it."),
            ],
        )

    @classmethod
    def execute(cls, clip, prompt, decoding, seed, max_new_tokens, on_failure, encode_clip=None):
        if decoding not in ("greedy", "sample"):
            raise ValueError(f"{r2f_plan.NODE}: decoding must be 'greedy' or 'sample', got '{decoding}'.")
        plan = r2f_plan.write_plan(clip, prompt, int(max_new_tokens), None if decoding == "greedy" else int(seed),
                                   on_failure)
        rare, frequent, levels, summary = _conditionings(encode_clip if encode_clip is not None else clip, plan.spec)
        return io.NodeOutput(rare, frequent, levels, plan.text, ui=ui.PreviewText(f"{plan.text}\n\n{summary}"))


NODES = [SleightRareToFrequent, SleightR2FPrompt, SleightR2FPlan]
