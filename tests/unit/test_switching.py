"""Rare-to-Frequent schedule maths, the step tracker and the R2F prompt parser, without ComfyUI."""
import pytest
import torch

from sleight.attention_patches.core import schedule
from sleight.samplers import r2f, r2f_text


# ------------------------------------------------------------------ level → stop step

def test_level_maps_are_the_papers_at_50_steps():
    assert [r2f.level_stop(lv, 50, r2f.SD3_MAP) for lv in range(6)] == [0, 5, 10, 20, 30, 40]
    assert [r2f.level_stop(lv, 50, r2f.SDXL_MAP) for lv in range(6)] == [0, 3, 5, 10, 20, 30]


@pytest.mark.parametrize("steps, sd3, sdxl", [
    (20, [0, 2, 4, 8, 12, 16], [0, 1, 2, 4, 8, 12]),
    (28, [0, 3, 6, 11, 17, 22], [0, 2, 3, 6, 11, 17]),      # 2.8→3, 5.6→6, 11.2→11, 16.8→17, 22.4→22; 1.68→2, 2.8→3
    (4, [0, 1, 1, 2, 2, 3], [0, 1, 1, 1, 2, 2]),            # a level >= 1 keeps at least step 0
    (25, [0, 3, 5, 10, 15, 20], [0, 2, 3, 5, 10, 15]),      # 2.5 rounds half up (not to even), 1.5 → 2
])
def test_level_maps_scale_to_any_step_count(steps, sd3, sdxl):
    assert [r2f.level_stop(lv, steps, r2f.SD3_MAP) for lv in range(6)] == sd3
    assert [r2f.level_stop(lv, steps, r2f.SDXL_MAP) for lv in range(6)] == sdxl


def test_stops_override_interpolation_counts_and_monotone():
    assert r2f.r2f_stops([3], 20, stop_percent=0.25) == [5]
    assert r2f.r2f_stops([1, 5], 20, stop_percent=0.0) == [0, 0]
    assert r2f.r2f_stops([0, 1, 2, 3, 4, 5], 4, mode="interpolate") == [0, 1, 1, 1, 2, 2]
    assert r2f.r2f_stops([5, 3], 50) == [40, 40]                      # never ends before an earlier stage


# ------------------------------------------------------------------ per-step schedule

def test_alternate_schedule_one_prompt():
    # SD3 level 3 at 10 steps: stop 4 → frequent on steps 0 and 2 only
    sched = r2f.r2f_schedule(r2f.r2f_stops([3], 10), 10)
    assert sched == [(0, 1.0), None, (0, 1.0), None] + [None] * 6


def test_alternate_schedule_several_prompts_restore_in_order():
    # levels 2 and 4 at 50 steps (SD3): stage 0 until 10, stage 1 until 30, then rare only
    sched = r2f.r2f_schedule(r2f.r2f_stops([2, 4], 50), 50)
    assert [s[0] if s else None for s in sched[:12:2]] == [0, 0, 0, 0, 0, 1]
    assert all(s is None for s in sched[1::2])                       # odd steps: the rare prompt
    assert sched[28] == (1, 1.0) and sched[30] is None and all(s is None for s in sched[30:])
    # equal stops skip the middle prompt, as the official loop does
    assert {s[0] for s in r2f.r2f_schedule(r2f.r2f_stops([3, 3], 50), 50) if s} == {0}


def test_level_zero_never_switches():
    assert r2f.r2f_schedule(r2f.r2f_stops([0], 30), 30) == [None] * 30
    assert r2f.r2f_schedule(r2f.r2f_stops([0], 4, "interpolate"), 4, "interpolate", [0.3]) == [None] * 4


def test_interpolate_schedule_matches_official_flux_code():
    alphas = r2f.parse_alphas(r2f.DEFAULT_ALPHAS)
    lv3 = r2f.r2f_schedule(r2f.r2f_stops([3], 4, "interpolate"), 4, "interpolate", alphas)
    lv5 = r2f.r2f_schedule(r2f.r2f_stops([5], 4, "interpolate"), 4, "interpolate", alphas)
    assert lv3 == [(0, 0.3), None, None, None]
    assert lv5 == [(0, 0.3), (0, 0.15), None, None]
    two = r2f.r2f_schedule(r2f.r2f_stops([2, 4], 4, "interpolate"), 4, "interpolate", alphas)
    assert two == [(0, 0.3), (1, 0.15), None, None]                  # step 0: all-frequent, step 1: next prompt
    assert r2f.r2f_schedule([3], 4, "interpolate", [0.5, 0.0]) == [(0, 0.5), None, None, None]   # α 0 = rare
    assert r2f.r2f_schedule([6], 6, "interpolate", [0.9, 0.2])[5] == (0, 0.2)                  # last α repeats


def test_parse_alphas_errors():
    assert r2f.parse_alphas("0.3, 0.15;0.1") == [0.3, 0.15, 0.1]
    with pytest.raises(ValueError, match="Rare-to-Frequent: alphas must be numbers"):
        r2f.parse_alphas("0.3, high")
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        r2f.parse_alphas("1.5")
    with pytest.raises(ValueError, match="alphas is empty"):
        r2f.parse_alphas("  ")


# ------------------------------------------------------------------ step tracking

def _calls(sampler, sigmas):
    """Model evaluations (sigma, sampler step) of euler / heun on a schedule, as ComfyUI's k-diffusion runs them."""
    out = []
    for i in range(len(sigmas) - 1):
        out.append((sigmas[i], i))
        if sampler == "heun" and sigmas[i + 1] > 0:
            out.append((sigmas[i + 1], i))
        if sampler == "dpm_2" and sigmas[i + 1] > 0:
            out.append(((sigmas[i] * sigmas[i + 1]) ** 0.5, i))
    return out


@pytest.mark.parametrize("sampler", ["euler", "heun", "dpm_2"])
def test_step_tracker_counts_sampler_steps(sampler):
    sigmas = [14.6, 7.0, 3.1, 1.2, 0.4, 0.0]
    tracker = schedule.StepTracker(sigmas, lookahead=sampler == "heun")
    calls = _calls(sampler, sigmas)
    assert [tracker(torch.tensor([s, s])) for s, _ in calls] == [i for _, i in calls]


def test_step_tracker_without_lookahead_counts_heun_second_call_as_next_step():
    sigmas = [14.6, 7.0, 3.1, 0.0]
    tracker = schedule.StepTracker(sigmas, lookahead=False)
    assert [tracker(s) for s, _ in _calls("heun", sigmas)] == [0, 1, 1, 2, 2]   # why heun needs lookahead


# ------------------------------------------------------------------ interpolation

def test_lerp_ends_are_exact_and_pooled_is_blended():
    f = [torch.randn(1, 77, 8), {"pooled_output": torch.randn(1, 4), "guidance": 3.5}]
    r = [torch.randn(1, 77, 8), {"pooled_output": torch.randn(1, 4), "width": 64}]
    for how in ("repeat", "pad"):
        zero, one = r2f.lerp_entry(f, r, 0.0, how), r2f.lerp_entry(f, r, 1.0, how)
        assert torch.equal(zero[0], r[0]) and torch.equal(zero[1]["pooled_output"], r[1]["pooled_output"])
        assert torch.equal(one[0], f[0]) and torch.equal(one[1]["pooled_output"], f[1]["pooled_output"])
    half = r2f.lerp_entry(f, r, 0.3, "pad")
    torch.testing.assert_close(half[0], 0.3 * f[0] + 0.7 * r[0])
    torch.testing.assert_close(half[1]["pooled_output"], 0.3 * f[1]["pooled_output"] + 0.7 * r[1]["pooled_output"])
    assert half[1]["width"] == 64 and "guidance" not in half[1]            # settings come from the rare entry


def test_lerp_blends_other_per_token_text_states_and_keeps_masks():
    """HiDream's Llama layers (B, layers, L, D) travel beside the embedding: matched in length and blended like it;
    integer masks are settings of the rare entry."""
    f = [torch.randn(1, 5, 8), {"conditioning_llama3": torch.randn(1, 3, 5, 8), "attention_mask": torch.ones(1, 5)}]
    r = [torch.randn(1, 7, 8), {"conditioning_llama3": torch.randn(1, 3, 7, 8),
                                "attention_mask": torch.ones(1, 7, dtype=torch.long)}]
    half = r2f.lerp_entry(f, r, 0.3, "pad")
    fl = f[1]["conditioning_llama3"]
    fl = torch.cat([fl, fl[:, :, -1:].expand(1, 3, 2, 8)], dim=2)          # the shorter padded with its last token
    torch.testing.assert_close(half[1]["conditioning_llama3"], 0.3 * fl + 0.7 * r[1]["conditioning_llama3"])
    assert half[1]["attention_mask"] is r[1]["attention_mask"]


def test_fit_lengths_repeat_to_lcm_for_cross_attention():
    a, b = torch.randn(1, 77, 4), torch.randn(1, 154, 4)
    ra, rb = r2f.fit_lengths(a, b, "repeat")
    assert ra.shape[1] == rb.shape[1] == 154 and torch.equal(ra[:, 77:], a) and torch.equal(rb, b)
    ra, rb = r2f.fit_lengths(torch.randn(1, 154, 4), torch.randn(1, 231, 4), "repeat")
    assert ra.shape[1] == rb.shape[1] == 462
    # cross-attention over the repeated keys is the attention over the original ones
    q = torch.randn(1, 10, 4)
    att = torch.nn.functional.scaled_dot_product_attention
    torch.testing.assert_close(att(q, ra[:, :154], ra[:, :154]), att(q, ra, ra))


def test_fit_lengths_pad_with_final_token_for_dits():
    a, b = torch.randn(1, 5, 4), torch.randn(1, 8, 4)
    pa, pb = r2f.fit_lengths(a, b, "pad")
    assert pa.shape == pb.shape == (1, 8, 4) and torch.equal(pb, b) and torch.equal(pa[:, :5], a)
    assert all(torch.equal(pa[:, k], a[:, -1]) for k in range(5, 8))
    with pytest.raises(ValueError, match="different text encoders"):
        r2f.fit_lengths(torch.randn(1, 5, 4), torch.randn(1, 5, 6), "pad")


# ------------------------------------------------------------------ R2F prompt text

LLM_ONE = """### Num Rare Concepts: 1
a. Rare concept: A hairy hamburger
b. A hairy hamburger does not exist in reality, while a hairy object does. Main Noun Subject: hamburger
c. A hairy object BREAK A hairy hamburger
d. Extremely local visual details are needed to draw the hairs. Visual Detail Level: 5
### Visual Detail Level: 5
### Final Prompt Sequence: A hairy object BREAK A hairy hamburger"""


def test_llm_answer_single_concept():
    spec = r2f_text.parse_r2f_text(LLM_ONE)
    assert spec.original == "A hairy hamburger"
    assert spec.stages == ("A hairy object",) and spec.levels == (5,)


def test_single_concept_inside_a_longer_prompt():
    spec = r2f_text.parse_r2f_text("### Input: A hairy hamburger on a wooden table\n"
                             "### Final Prompt Sequence: A hairy object BREAK a hairy hamburger\n### Visual Detail Level: 4")
    assert spec.original == "A hairy hamburger on a wooden table"
    assert spec.stages == ("A hairy object on a wooden table",) and spec.levels == (4,)


def test_unsorted_llm_levels_restore_concepts_in_ascending_level():
    text = ("### Input: a hairy shark and two spotted clams\n"
            "### Visual Detail Level: 5 AND 3\n"
            "### Final Prompt Sequence: a hairy fish BREAK a hairy shark AND two spotted shellfish BREAK two spotted clams")
    spec = r2f_text.parse_r2f_text(text)
    assert spec.levels == (3, 5)
    assert spec.stages == ("a hairy fish and two spotted shellfish",      # everything frequent
                           "a hairy fish and two spotted clams")          # the level-3 concept restored first
    assert spec.original == "a hairy shark and two spotted clams"
    assert any("not ascending" in n for n in spec.notes)


def test_full_llm_answer_with_two_concepts_and_header_values_on_next_line():
    text = """### Input:
A horned lion and a hairy frog
### Output:
### Num Rare Concepts: 2
a. Rare concept: A horned lion
c. A horned animal BREAK A horned lion
d. Moderate local visual details are needed to draw horns. Visual Detail Level: 3
AND
a. Rare concept: A hairy frog
c. A hairy animal BREAK A hairy frog
d. Extremely local visual details are needed to draw hairs. Visual Detail Level: 5
### Visual Detail Level
3 AND 5
### Final Prompt Sequence
A horned animal BREAK A horned lion AND A hairy animal BREAK A hairy frog"""
    spec = r2f_text.parse_r2f_text(text)
    assert spec.stages == ("A horned animal and a hairy animal", "A horned lion and a hairy animal")
    assert spec.levels == (3, 5)


def test_handwritten_lines_and_per_concept_levels():
    spec = r2f_text.parse_r2f_text("a hairy object, a hairy hamburger")
    assert (spec.original, spec.stages, spec.levels) == ("a hairy hamburger", ("a hairy object",), (None,))
    spec = r2f_text.parse_r2f_text("Input: a horned frog next to a swimming helicopter\n"
                             "a swimming vehicle, a swimming helicopter\nVisual Detail Level: 2\n"
                             "a horned animal BREAK a horned frog\nVisual Detail Level: 3\n")
    assert spec.levels == (2, 3)
    assert spec.stages == ("a horned animal next to a swimming vehicle", "a horned animal next to a swimming helicopter")


def test_same_frequent_word_twice_is_replaced_by_position():
    spec = r2f_text.parse_r2f_text("### Input: a rabbit in medieval armor and a raccoon in pajamas\n"
                             "### Visual Detail Level: 3 AND 1\n"
                             "### Final Prompt Sequence: an animal in medieval armor BREAK a rabbit in medieval armor AND "
                             "an animal in pajamas BREAK a raccoon in pajamas")
    assert spec.stages == ("an animal in medieval armor and an animal in pajamas",
                           "an animal in medieval armor and a raccoon in pajamas")
    assert spec.levels == (1, 3)


def test_no_rare_concept_and_level_zero():
    spec = r2f_text.parse_r2f_text("### Visual Detail Level: 0\n### Final Prompt Sequence: A running dog")
    assert spec.original == "A running dog" and spec.stages == ()
    spec = r2f_text.parse_r2f_text("### Input: a dog and a hairy frog\n### Visual Detail Level: 0 AND 4\n"
                             "### Final Prompt Sequence: a dog BREAK a dog AND a hairy animal BREAK a hairy frog")
    assert spec.stages == ("a dog and a hairy animal",) and spec.levels == (4,)
    assert r2f_text.parse_r2f_text("a running dog\nVisual Detail Level: 0").stages == ()


def test_released_json_entry_with_unsorted_levels():
    entry = ('{"a hairy shark and two spotted clams": {"visual_detail_level": ["5", "3"], "r2f_prompt": [['
             '"a hairy fish and two spotted shellfish", "a hairy shark and two spotted shellfish", '
             '"a hairy shark and two spotted clams"]]}}')
    spec = r2f_text.parse_r2f_text(entry)
    assert spec.original == "a hairy shark and two spotted clams" and len(spec.stages) == 2
    assert spec.levels == (5, 5)                    # no prompt ends before an earlier one
    assert r2f.r2f_stops(list(spec.levels), 50) == [40, 40]
    single = r2f_text.parse_r2f_text('{"visual_detail_level": "4", "r2f_prompt": [["A hairy sea animal", "A hairy octopus"]]}')
    assert single.stages == ("A hairy sea animal",) and single.levels == (4,)


def test_chain_sequence():
    spec = r2f_text.parse_r2f_text("P zero BREAK P one BREAK P final\nVisual Detail Level: 2 AND 4")
    assert spec.original == "P final" and spec.stages == ("P zero", "P one") and spec.levels == (2, 4)


@pytest.mark.parametrize("text, match", [
    ("", "R2F prompt: the prompt text is empty"),
    ("   \n ", "the prompt text is empty"),
    ("a cat, photo, 4k", "no 'frequent BREAK rare'"),
    ("a hairy object BREAK a hairy hamburger\nVisual Detail Level: 7", "levels must be 0..5"),
    ("a hairy object BREAK a hairy hamburger\nVisual Detail Level: 3 AND 4", "1 concepts need 1 visual detail levels"),
    ("### Final Prompt Sequence: a horned animal BREAK a horned lion AND a hairy animal BREAK a hairy frog",
     "need the original prompt.*### Input"),
    ("### Input: a lion\n### Final Prompt Sequence: a horned animal BREAK a horned lion", "does not occur in the original"),
    ("a hairy object BREAK ", "R2F prompt"),
    ("{not json", "not valid JSON"),
    ('{"a": 1, "b": 2}', "one entry of a released R2F prompt file"),
    ("a hairy object, a hairy hamburger\nthis line is a note", "neither 'frequent BREAK rare' nor 'frequent, rare'"),
    ("a hairy object BREAK BREAK a hairy hamburger", "empty side of BREAK"),
    ("a hairy object BREAK \u200b\u200d", "empty side of BREAK"),
    ("\ufeff, a hairy hamburger", "empty side of the comma"),
    ("a BREAK b " * 3000, "at most 20000 characters"),
    ('{"r2f_prompt": ' + "[" * 5000 + "]" * 5000 + "}", "nested too deeply"),
    ("### Input: " + " and ".join(f"rare thing {i}" for i in range(17)) + "\n### Final Prompt Sequence: "
     + " AND ".join(f"thing {i} BREAK rare thing {i}" for i in range(17)) + "\nVisual Detail Level: " + "3 AND " * 16 + "3",
     "at most 16 are switched in"),
])
def test_parse_errors_name_the_node_and_the_format(text, match):
    with pytest.raises(ValueError, match=match) as e:
        r2f_text.parse_r2f_text(text)
    assert str(e.value).startswith("Sleight · R2F prompt: ")


def test_long_whitespace_runs_parse_in_linear_time():
    """The AND / BREAK split once backtracked quadratically: 100k spaces held the prompt worker 20 s."""
    import time

    for text in ["a" + " " * 19_990 + "AND b", "a BREAK" + " " * 19_980 + "b", "x " * 9_999]:
        t0 = time.perf_counter()
        try:
            r2f_text.parse_r2f_text(text)
        except ValueError as e:
            assert str(e).startswith("Sleight · R2F prompt: ")
        assert time.perf_counter() - t0 < 0.5


# ------------------------------------------------------------------ a language model's answer as plan text

def test_answer_becomes_plan_text_with_our_input_line_and_nothing_after_the_final_sequence():
    answer = ("### Input: a hairy burger\n" + LLM_ONE.replace("A hairy hamburger", "a hairy hamburger") +
              "\n\n### Input: A swimming helicopter\n### Output:\nc. A swimming vehicle BREAK A swimming helicopter")
    text = r2f_text.plan_of_answer("A hairy hamburger on a wooden table", answer)
    assert text.splitlines()[0] == "### Input: A hairy hamburger on a wooden table"
    assert "a hairy burger" not in text and "helicopter" not in text       # the echo and the next example dropped
    assert text.splitlines()[-1] == "### Final Prompt Sequence: A hairy object BREAK a hairy hamburger"
    spec = r2f_text.parse_r2f_text(text)
    assert spec.stages == ("A hairy object on a wooden table",) and spec.levels == (5,)


def test_answer_with_the_sequence_on_the_next_line_and_without_one():
    text = r2f_text.plan_of_answer("a horned frog", "### Visual Detail Level: 3\n### Final Prompt Sequence:\n\n"
                                   "a horned animal BREAK a horned frog\n### Input: more")
    assert r2f_text.parse_r2f_text(text).stages == ("a horned animal",)
    assert "more" not in text
    with pytest.raises(ValueError, match="R2F prompt: the answer has no '### Final Prompt Sequence:' line"):
        r2f_text.plan_of_answer("a horned frog", "c. a horned animal BREAK a horned frog\nd. Visual Detail Level: 3")
