"""The text of a Rare-to-Frequent plan (Park et al., ICLR 2025) → the prompts of each stage and their levels:
the paper's LLM answer format, a released prompt-file entry (JSON) or hand-written lines. Pure (no ComfyUI).
"""
import json
import re
import unicodedata
from dataclasses import dataclass

from .r2f import MAX_LEVEL

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


MAX_TEXT = 20_000     # characters of plan text the node reads (an LLM answer is a few hundred)
MAX_STAGES = 16       # frequent prompts of one plan: each is encoded and switched in


def _split_word(text: str, word: str):
    r"""`text` split at every `word` standing between whitespace (' AND ', ' BREAK '), in linear time (a regex
    like \s+AND\s+ backtracks quadratically on long runs of spaces)."""
    pieces, start, i = [], 0, text.find(word)
    while i >= 0:
        j = i + len(word)
        if 0 < i and text[i - 1].isspace() and j < len(text) and text[j].isspace():
            pieces.append(text[start:i])
            start = j
        i = text.find(word, j)
    return pieces + [text[start:]]
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


def _blank(text: str) -> bool:
    """No visible character: empty, white space, or only invisible ones (zero-width space, joiners, BOM)."""
    return all(ch.isspace() or unicodedata.category(ch) in ("Cf", "Cc") for ch in text)


def _split_part(part: str, handwritten: bool):
    """One AND-part: ("pair", freq, rare) | ("chain", [p0..pn]) | ("plain", text)."""
    pieces = [p.strip() for p in _split_word(part.strip(), "BREAK")]
    if any(_blank(p) for p in pieces):
        raise _err(f"'{part.strip()}' has an empty side of BREAK. {FORMAT_HELP}")
    if len(pieces) == 2:
        return ("pair", pieces[0], pieces[1])
    if len(pieces) > 2:
        return ("chain", pieces)
    if handwritten and part.count(",") == 1:
        f, r = (p.strip() for p in part.split(","))
        if _blank(f) or _blank(r):
            raise _err(f"'{part.strip()}' has an empty side of the comma. {FORMAT_HELP}")
        return ("pair", f, r)
    return ("plain", part.strip())


def _from_json(text: str):
    try:
        data = json.loads(text)
    except RecursionError:
        raise _err("the JSON is nested too deeply to be an R2F prompt-file entry: give one entry, "
                   "{\"visual_detail_level\": ..., \"r2f_prompt\": [[...]]}.") from None
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


def plan_of_answer(original: str, answer: str) -> str:
    """A language model's R2F answer as plan text for `original`: a '### Input:' line with the original prompt
    first (the model's own Input lines dropped: it may echo the prompt inexactly), then the answer up to its
    '### Final Prompt Sequence' (a model that writes on starts a new example). ValueError without that line."""
    lines = [ln for ln in answer.strip().splitlines() if not _INPUT_LINE.match(ln)]
    for i, line in enumerate(lines):
        m = _SEQUENCE_LINE.match(line)
        if m:
            end = i + 1
            if not m.group(1).strip():                 # the sequence on the next non-empty line
                while end < len(lines) and not lines[end].strip():
                    end += 1
                end += 1
            return "\n".join([f"### Input: {original}", *lines[:end]]).strip()
    raise _err("the answer has no '### Final Prompt Sequence:' line.")


def parse_r2f_text(text: str) -> R2FSpec:
    """The R2F prompt text (LLM answer, released JSON entry or hand-written lines) → R2FSpec."""
    if len(text or "") > MAX_TEXT:
        raise _err(f"the text is {len(text)} characters long; an R2F plan is a few lines (at most {MAX_TEXT} "
                   f"characters). Paste only the LLM's answer for one prompt. {FORMAT_HELP}")
    spec = _parse((text or "").strip())
    if len(spec.stages) > MAX_STAGES:
        raise _err(f"the plan has {len(spec.stages)} frequent prompts; at most {MAX_STAGES} are switched in. "
                   "Name fewer rare concepts.")
    return spec


def _parse(text: str) -> R2FSpec:
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
        parts = [_split_part(p, handwritten=False) for p in _split_word(sequence.strip(), "AND") if p.strip()]
        where = "the final prompt sequence"
    else:
        parts = []
        for lineno, content in body:
            for p in _split_word(content, "AND"):
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
