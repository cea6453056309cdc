"""A Rare-to-Frequent plan (Park et al., ICLR 2025) written by the language model of a text encoder.

The paper asks an LLM (GPT-4o; LLaMA-3.1-8B at temperature 0.6, top-p 0.9) with a chain-of-thought prompt and
few-shot examples (krafton-ai/Rare-to-Frequent, gpt/template/template_r2f_system.txt, template_r2f_user.txt and
template_r2f_user2.txt for several concepts, gpt/mllm.py). SYSTEM and STEPS below say the same in our own words;
the examples are the template's (its concepts, frequent replacements and levels), reasons reworded, the
multi-concept one with the template's slips corrected. The answer goes to the same parser as a hand-written plan.
"""
import logging
from dataclasses import dataclass

from . import r2f_text
from .text_generation import language_model

log = logging.getLogger("sleight")

NODE = "Sleight · R2F plan"
MAX_PROMPT_TOKENS = 1024      # an R2F plan is for one image prompt; longer text is not planned (fallback / error)
FAILURE_MODES = ["plain prompt", "raise"]

SYSTEM = (
    "You assist a text-to-image program. It draws what is common in the real world well, but it often fails when a "
    "prompt holds a rare concept: a combination that hardly ever occurs in reality. When the text holds such a "
    "concept, name a related concept that occurs far more often, such as a parent concept or an umbrella term, so "
    "that the program can start from the frequent concept and then draw the rare one."
)

STEPS = (
    "Find the rare concepts in the input text and pair each with a related, more frequent concept. Go step by step:\n"
    "a. List the rare concepts of the text. There may be several or none; they must not overlap.\n"
    "b. For each rare concept, split it into its main noun and its context, and swap the main noun for a more "
    "frequent noun that is likely in that context and keeps as much of the original noun's look as it can.\n"
    "c. Write the phrase with the frequent noun, then BREAK, then the rare phrase exactly as in the input.\n"
    "d. Rate how much local visual detail it takes to draw the rare concept, from 1 (hardly any) to 5 (fine local "
    "detail is essential), and say why.\n"
    "Finish with the levels of all concepts joined by ' AND ' and the final prompt sequence: every concept's "
    "'frequent BREAK rare' joined by ' AND '. Follow the format of these examples."
)

# (input, [(rare, noun, context, frequent noun, frequent phrase, why, level)]) — the template's concepts and levels
_EXAMPLES = [
    ("A hairy hamburger", [("A hairy hamburger", "hamburger", "hairy", "object", "A hairy object",
                            "Hair is drawn strand by strand, the finest local detail.", 5)]),
    ("A peach made of glass", [("A peach made of glass", "peach", "made of glass", "pink sphere",
                                "A pink sphere made of glass", "A glass surface needs much local detail.", 4)]),
    ("A horned frog", [("A horned frog", "frog", "horned", "animal", "A horned animal",
                        "Horns take a moderate amount of local detail.", 3)]),
    ("A swimming helicopter", [("A swimming helicopter", "helicopter", "swimming", "vehicle", "A swimming vehicle",
                                "Swimming is a pose of the whole body, little local detail.", 2)]),
    ("A banana shaped apple", [("A banana shaped apple", "apple", "banana shaped", "red object",
                                "A banana shaped red object", "Only the rough outline of a banana matters.", 1)]),
    ("A running dog", []),
    ("A horned lion and a hairy frog", [
        ("A horned lion", "lion", "horned", "animal", "A horned animal", "Horns take a moderate amount of local detail.", 3),
        ("a hairy frog", "frog", "hairy", "animal", "a hairy animal", "Hair is drawn strand by strand, the finest "
                                                                      "local detail.", 5)]),
]


def _answer(text, concepts):
    if not concepts:
        return f"No rare concept is in this text.\n### Visual Detail Level: 0\n### Final Prompt Sequence: {text}"
    parts = []
    for rare, noun, context, freq_noun, freq, why, level in concepts:
        parts.append(f"a. Rare concept: {rare}\n"
                     f"b. {rare[0].upper() + rare[1:]} hardly occurs in reality, {freq[0].lower() + freq[1:]} does. "
                     f"Main noun: {noun}, context: {context}, frequent noun: {freq_noun}\n"
                     f"c. {freq} BREAK {rare}\n"
                     f"d. {why} Visual Detail Level: {level}")
    levels = " AND ".join(str(c[6]) for c in concepts)
    sequence = " AND ".join(f"{c[4]} BREAK {c[0]}" for c in concepts)
    return "\nAND\n".join(parts) + f"\n### Visual Detail Level: {levels}\n### Final Prompt Sequence: {sequence}"


def user_message(prompt: str) -> str:
    """STEPS, the examples, and the prompt to plan (the official user turn ends the same way)."""
    examples = "\n\n".join(f"### Input: {text}\n### Output:\n{_answer(text, concepts)}" for text, concepts in _EXAMPLES)
    return f"{STEPS}\n\nExamples:\n\n{examples}\n\n### Input: {prompt}\n### Output:\n"


@dataclass(frozen=True)
class Plan:
    """What the node outputs: the parsed spec, the plan text (a valid R2F prompt text), and a warning (or '')."""

    spec: r2f_text.R2FSpec
    text: str
    warning: str = ""


def one_line(prompt: str) -> str:
    """The prompt as one line (the plan format holds it on its '### Input:' line)."""
    return " ".join((prompt or "").split())


def plain(prompt: str, warning: str) -> Plan:
    """The plain prompt as the plan: no frequent stage, so Rare-to-Frequent leaves sampling unchanged."""
    lines = [f"# {ln}" for ln in warning.splitlines()] + [f"### Input: {prompt}", "### Visual Detail Level: 0"]
    return Plan(r2f_text.R2FSpec(prompt), "\n".join(lines), warning)


def _reason(err: Exception) -> str:
    return str(err).removeprefix(f"{r2f_text.PROMPT_NODE}: ")


def _failure(prompt, on_failure, why, answer=""):
    if on_failure == "raise":
        raise ValueError(f"{NODE}: {why}" + (f" The answer was: {answer[:600]!r}" if answer else ""))
    warning = f"{NODE}: {why} The plain prompt is used (no frequent stage)."
    log.warning("%s", warning)
    return plain(prompt, warning + (f"\nThe answer was:\n{answer}" if answer else ""))


def plan_from_answer(prompt: str, answer: str, on_failure: str = "plain prompt", cut_at=None) -> Plan:
    """The plan in a language model's answer; `cut_at` = the max_new_tokens it hit without stopping, if it did."""
    try:
        text = r2f_text.plan_of_answer(prompt, answer)
        spec = r2f_text.parse_r2f_text(text)
    except ValueError as e:
        cut = f" It stopped at max_new_tokens = {cut_at}; raise it if the answer was cut." if cut_at else ""
        return _failure(prompt, on_failure, f"the language model's answer did not parse: {_reason(e)}{cut}", answer)
    for note in spec.notes:
        log.warning("%s: %s", NODE, note)
    return Plan(spec, text)


def write_plan(clip, prompt: str, max_new_tokens: int, seed=None, on_failure: str = "plain prompt") -> Plan:
    """Ask the CLIP's language model for the R2F plan of `prompt` (greedy, or sampled from `seed`) and parse it. An
    answer that does not parse gives the plain prompt with a warning (on_failure 'plain prompt') or a ValueError
    naming the node ('raise'); an encoder that cannot write is an error either way."""
    if on_failure not in FAILURE_MODES:
        raise ValueError(f"{NODE}: on_failure must be one of {FAILURE_MODES}, got '{on_failure}'.")
    lm = language_model(clip, NODE)
    prompt = one_line(prompt)
    if not prompt:
        return plain(prompt, f"{NODE}: the prompt is empty; there is nothing to plan.")
    n = lm.count(prompt)
    if n > MAX_PROMPT_TOKENS:
        return _failure(prompt, on_failure, f"the prompt is {n} tokens long; plans are written for prompts of at "
                                            f"most {MAX_PROMPT_TOKENS} tokens.")
    new = lm.generate(lm.chat_ids(SYSTEM, user_message(prompt)), max_new_tokens, seed)
    stopped = bool(new) and new[-1] in lm.stop_ids
    return plan_from_answer(prompt, lm.decode(new).strip(), on_failure, None if stopped else max_new_tokens)
