"""Sleight · Rare-to-Frequent and Sleight · R2F prompt on real ComfyUI sampling with the tiny models.

The per-step prompt choice is observed where it matters: an APPLY_MODEL wrapper records the text context and the
pooled vector (`y`) of the positive rows of every model call, and the test names each one by comparing it with the
encodings of the rare and frequent prompts. Expected schedules are written out by hand from the paper's maps.
"""
import pytest
import torch

from sleight.nodes.prompt import LEVEL_KEY, STAGE_KEY, SleightR2FPrompt, SleightRareToFrequent
from sleight.attention_patches.core import runstate
from sleight.samplers import switching
from sleight.samplers.r2f import DEFAULT_ALPHAS
from tinyrun import encode, latent_for, load, sample

RARE, FREQ = "a hairy hamburger", "a hairy object"
DEFAULTS = dict(visual_detail_level=3, mode="alternate", stop_percent=-1.0, level_map="auto",
                alphas=DEFAULT_ALPHAS)


def r2f(model, rare, frequent, **kw):
    return SleightRareToFrequent.execute(model, rare, frequent, **{**DEFAULTS, **kw}).result[0]


class Recorder:
    """APPLY_MODEL wrapper: per positive row of every model call, (sigma, text context, pooled y)."""

    def __init__(self):
        self.calls = []

    def __call__(self, executor, x, t, c_concat=None, c_crossattn=None, control=None, transformer_options={}, **kw):
        cu = list(transformer_options.get("cond_or_uncond", []))
        per = x.shape[0] // max(len(cu), 1)
        y = kw.get("y")
        for j, idx in enumerate(cu):
            if idx == 0:
                rows = slice(j * per, (j + 1) * per)
                self.calls.append((float(t.max()), c_crossattn[rows].detach().cpu().clone(),
                                   None if y is None else y[rows].detach().cpu().clone()))
        return executor(x, t, c_concat, c_crossattn, control, transformer_options, **kw)

    def install(self, model):
        import comfy.patcher_extension as pe

        model.add_wrapper_with_key(pe.WrappersMP.APPLY_MODEL, "test.r2f.recorder", self)
        return model

    def names(self, **candidates):
        """Which candidate prompt each recorded positive row carries ('?' if none)."""
        out = []
        for _, ctx, _ in self.calls:
            hit = [n for n, c in candidates.items() if c[0][0].shape == ctx.shape and torch.equal(c[0][0].to(ctx), ctx)]
            out.append(hit[0] if hit else "?")
        return out


def setup(name):
    model, clip, _ = load(name)
    return model, clip, encode(clip, RARE), encode(clip, FREQ), encode(clip, "")


def record(model, pos, neg, **kw):
    rec = Recorder()
    m = model.clone()
    rec.install(m)
    out = sample(m, pos, neg, **kw)
    return out, rec


def model_calls(sampler, sigmas):
    """(sigma, sampler step) of every model call: heun evaluates step i at sigma_i and again at sigma_{i+1} (unless
    that is 0); euler and dpmpp_2m once per step, at sigma_i."""
    out = []
    for i in range(len(sigmas) - 1):
        out.append((sigmas[i], i))
        if sampler == "heun" and sigmas[i + 1] > 0:
            out.append((sigmas[i + 1], i))
    return out


# ------------------------------------------------------------------ bit-identity

def test_level_zero_and_stop_zero_are_bit_identical():
    model, clip, rare, freq, neg = setup("sd15")
    base = sample(model, rare, neg, steps=4)
    assert torch.equal(sample(r2f(model, rare, freq, visual_detail_level=0), rare, neg, steps=4), base)
    assert torch.equal(sample(r2f(model, rare, freq, visual_detail_level=5, stop_percent=0.0), rare, neg, steps=4), base)
    assert torch.equal(sample(r2f(model, rare, freq, mode="interpolate", visual_detail_level=0), rare, neg, steps=4), base)
    r, f, _ = SleightR2FPrompt.execute(clip, f"{FREQ} BREAK {RARE}\nVisual Detail Level: 0").result
    assert torch.equal(sample(r2f(model, r, f, visual_detail_level=5), r, neg, steps=4), base)
    changed = sample(r2f(model, rare, freq, visual_detail_level=5), rare, neg, steps=4)
    assert not torch.equal(changed, base)


@pytest.mark.parametrize("name", ["sd15", "sd3"])
def test_rare_equal_to_frequent_is_bit_identical(name):
    model, clip, rare, _, neg = setup(name)
    base = sample(model, rare, neg, steps=4)
    same = r2f(model, rare, encode(clip, RARE), visual_detail_level=5, stop_percent=1.0)
    assert torch.equal(sample(same, rare, neg, steps=4), base)


# ------------------------------------------------------------------ the schedule, observed per model call

@pytest.mark.parametrize("sampler", ["euler", "heun", "dpmpp_2m"])
def test_per_step_prompt_choice_matches_the_schedule(sampler):
    import comfy.samplers

    model, clip, rare, freq, neg = setup("sd15")
    # SD1.5 is a UNet → the SDXL map [0,3,5,10,20,30]/50; level 4 at 10 steps → stop 4: F on steps 0 and 2.
    expected_by_step = ["F", "R", "F", "R", "R", "R", "R", "R", "R", "R"]
    _, rec = record(r2f(model, rare, freq, visual_detail_level=4), rare, neg, steps=10, sampler=sampler)
    sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "normal", 10).tolist()
    calls = model_calls(sampler, sigmas)
    assert [round(s, 4) for s, _, _ in rec.calls] == [round(s, 4) for s, _ in calls]
    assert rec.names(R=rare, F=freq) == [expected_by_step[i] for _, i in calls]


def test_several_frequent_prompts_from_the_prompt_node_restore_in_level_order():
    model, clip, _, _, neg = setup("sd3")
    text = ("### Input: a hairy shark and two spotted clams\n### Visual Detail Level: 5 AND 2\n"
            "### Final Prompt Sequence: a hairy fish BREAK a hairy shark AND two spotted shellfish BREAK two spotted clams")
    rare, frequent, levels = SleightR2FPrompt.execute(clip, text).result
    assert levels == "2, 5"
    assert [(e[1][STAGE_KEY], e[1][LEVEL_KEY]) for e in frequent] == [(0, 2), (1, 5)]
    s0, s1 = encode(clip, "a hairy fish and two spotted shellfish"), encode(clip, "a hairy fish and two spotted clams")
    assert torch.equal(rare[0][0], encode(clip, "a hairy shark and two spotted clams")[0][0])
    assert torch.equal(frequent[0][0], s0[0][0]) and torch.equal(frequent[1][0], s1[0][0])
    # SD3 map at 10 steps: level 2 → stop 2, level 5 → stop 8
    _, rec = record(r2f(model, rare, frequent, visual_detail_level=1), rare, neg, steps=10)
    assert rec.names(R=rare, S0=s0, S1=s1) == ["S0", "R", "S1", "R", "S1", "R", "S1", "R", "R", "R"]


def test_interpolation_alpha_zero_one_and_between():
    model, clip, rare, freq, neg = setup("sd15")
    base = sample(model, rare, neg, steps=4)
    assert torch.equal(sample(r2f(model, rare, freq, mode="interpolate", visual_detail_level=5, alphas="0"),
                              rare, neg, steps=4), base)
    # α = 1 on step 0 is the frequent prompt on step 0 (alternate with a stop after step 0)
    interp = sample(r2f(model, rare, freq, mode="interpolate", visual_detail_level=1, alphas="1, 0"), rare, neg, steps=4)
    first = sample(r2f(model, rare, freq, stop_percent=0.25), rare, neg, steps=4)
    assert torch.equal(interp, first) and not torch.equal(first, base)
    # α = 0.3, 0.15 (level 5 → steps 0-1): the blended embedding reaches the model, the rare prompt after
    _, rec = record(r2f(model, rare, freq, mode="interpolate", visual_detail_level=5), rare, neg, steps=4)
    for (_, ctx, _), a in zip(rec.calls[:2], (0.3, 0.15)):
        torch.testing.assert_close(ctx, a * freq[0][0] + (1 - a) * rare[0][0])
    assert rec.names(R=rare, F=freq)[2:] == ["R", "R"]


def test_interpolation_matches_token_lengths():
    model, clip, rare, _, neg = setup("sd15")
    long_freq = encode(clip, "a hairy object " + "on a plate with fries " * 20)      # 154 tokens vs 77
    assert long_freq[0][0].shape[1] == 154 and rare[0][0].shape[1] == 77
    _, rec = record(r2f(model, rare, long_freq, mode="interpolate", visual_detail_level=1, alphas="0.5"),
                    rare, neg, steps=2)
    ctx = rec.calls[0][1]
    torch.testing.assert_close(ctx, 0.5 * long_freq[0][0] + 0.5 * rare[0][0].repeat(1, 2, 1))


# ------------------------------------------------------------------ every architecture, pooled outputs

@pytest.mark.parametrize("name, mode", [("sd15", "alternate"), ("sdxl", "alternate"), ("sd3", "alternate"),
                                        ("flux_schnell_narrow", "alternate"), ("flux_schnell_narrow", "interpolate")])
def test_runs_on_every_architecture_and_pooled_output_switches(name, mode):
    model, clip, rare, freq, neg = setup(name)
    base_options, base_wrappers = repr(model.model_options), repr(model.wrappers)
    cfg = 1.0 if name.startswith("flux") else 3.0
    steps = 2 if name == "sdxl" else 4                   # the tiny SDXL is the slow one on CPU
    base, base_rec = record(model, rare, neg, cfg=cfg, steps=steps)
    patched = r2f(model, rare, freq, mode=mode, visual_detail_level=5, stop_percent=1.0 if mode == "alternate" else -1.0)
    out, rec = record(patched, rare, neg, cfg=cfg, steps=steps)
    assert out.shape == base.shape and torch.isfinite(out).all() and not torch.equal(out, base)
    names = rec.names(R=rare, F=freq)
    if mode == "alternate":
        assert names == ["F", "R", "F", "R"][:steps]
    else:                                        # level 5: steps 0-1 blended (0.3, 0.15), then the rare prompt
        assert names[2:] == ["R", "R"]
        torch.testing.assert_close(rec.calls[0][1], 0.3 * freq[0][0] + 0.7 * rare[0][0])
    ys = [y for _, _, y in rec.calls]
    if name != "sd15":                           # SDXL (adm), SD3 and Flux take the pooled output as y
        assert all(y is not None for y in ys)
        assert not torch.equal(ys[0], ys[2 if mode == "interpolate" else 1]), "pooled output did not switch"
        for k in range(1 if mode == "alternate" else 2, steps, 1 if mode == "interpolate" else 2):
            assert torch.equal(ys[k], base_rec.calls[k][2])        # rare steps: exactly the plain run's y
        if name == "sd3":
            assert torch.equal(ys[0], freq[0][1]["pooled_output"])
    assert repr(model.model_options) == base_options and repr(model.wrappers) == base_wrappers
    assert torch.equal(sample(model, rare, neg, cfg=cfg, steps=steps), base)


def test_flux_guidance_and_other_positive_settings_are_inherited():
    import node_helpers

    model, clip, rare, freq, neg = setup("flux_dev_narrow")
    guided = node_helpers.conditioning_set_values(rare, {"guidance": 7.0})
    seen = []

    def rec(executor, x, t, c_concat=None, c_crossattn=None, control=None, transformer_options={}, **kw):
        seen.append(float(kw["guidance"].flatten()[0]))
        return executor(x, t, c_concat, c_crossattn, control, transformer_options, **kw)

    import comfy.patcher_extension as pe

    m = r2f(model, guided, freq, visual_detail_level=5, stop_percent=1.0)
    m.add_wrapper_with_key(pe.WrappersMP.APPLY_MODEL, "test.r2f.guidance", rec)
    sample(m, guided, neg, cfg=1.0, steps=2)
    assert seen == [7.0, 7.0]                  # the frequent step too, though 'freq' carries no guidance


# ------------------------------------------------------------------ state, interrupt, errors

def test_state_is_cleared_after_interrupt_and_runs_repeat():
    import comfy.model_management as mm
    import comfy.patcher_extension as pe
    import comfy.sample
    import comfy.samplers

    model, clip, rare, freq, neg = setup("sd15")
    m = r2f(model, rare, freq, visual_detail_level=5, stop_percent=1.0)
    first = sample(m, rare, neg, steps=4)
    assert torch.equal(sample(m, rare, neg, steps=4), first)

    latent = latent_for(m)
    sigmas = comfy.samplers.calculate_sigmas(m.get_model_object("model_sampling"), "normal", 4)
    seen = []

    def interrupt_in_step_2(executor, x, t, *args, **kw):    # step 2 uses the frequent prompt: inside the swap
        seen.append(sorted(guider.conds))
        if len(seen) == 3:
            assert switching.ROLE_KEY in guider.conds["positive"][0]
            raise mm.InterruptProcessingException()
        return executor(x, t, *args, **kw)

    hurt = m.clone()
    hurt.add_wrapper_with_key(pe.WrappersMP.APPLY_MODEL, "test.r2f.interrupt", interrupt_in_step_2)
    guider = comfy.samplers.CFGGuider(hurt)
    guider.set_conds(rare, neg)
    guider.set_cfg(3.0)
    with pytest.raises(mm.InterruptProcessingException):
        guider.sample(comfy.sample.prepare_noise(latent, 7), latent, comfy.samplers.sampler_object("euler"), sigmas,
                      disable_pbar=True, seed=7)
    assert "sleight_r2f_0" in seen[0]                                   # added during the run …
    assert sorted(guider.conds) == ["negative", "positive"]             # … removed on interrupt,
    assert switching.ROLE_KEY not in guider.conds["positive"][0]        # the swap undone
    assert switching.KEY not in guider.model_options.get("transformer_options", {})
    assert switching.KEY not in m.model_options.get("transformer_options", {})
    assert runstate.RUN_KEY not in guider.model_options.get("transformer_options", {})   # the run's state too
    assert torch.equal(sample(m, rare, neg, steps=4), first)


def test_warns_only_when_the_samplers_positive_is_not_the_rare_prompt(caplog):
    model, clip, rare, freq, neg = setup("sd15")
    m = r2f(model, rare, freq, visual_detail_level=5, stop_percent=1.0)
    batched = [[rare[0][0].repeat(2, 1, 1), {**rare[0][1], "pooled_output": rare[0][1]["pooled_output"].repeat(2, 1)}]]
    with caplog.at_level("WARNING", logger="sleight"):
        sample(m, rare, neg, steps=2)
        sample(m, batched, encode(clip, ""), steps=2, batch=2)   # one copy per image: the same prompt
    assert "is not the 'rare' conditioning" not in caplog.text
    with caplog.at_level("WARNING", logger="sleight"):
        sample(m, freq, neg, steps=2)
    assert "Rare-to-Frequent: the sampler's positive prompt is not the 'rare' conditioning" in caplog.text


def test_bad_inputs_give_clear_errors():
    model, clip, rare, freq, neg = setup("sd15")
    with pytest.raises(ValueError, match="Rare-to-Frequent: alphas must be numbers"):
        r2f(model, rare, freq, mode="interpolate", alphas="0.3, lots")
    with pytest.raises(ValueError, match="Rare-to-Frequent: stop_percent must be -1"):
        r2f(model, rare, freq, stop_percent=-0.5)
    with pytest.raises(ValueError, match="Rare-to-Frequent: 'frequent' is not a text conditioning"):
        r2f(model, rare, [], visual_detail_level=3)
    _, tagged, _ = SleightR2FPrompt.execute(clip, f"{FREQ} BREAK {RARE}\nVisual Detail Level: 4").result
    with pytest.raises(ValueError, match="mixes prompts from Sleight · R2F prompt with other"):
        r2f(model, rare, tagged + freq)
    _, sd3_clip, _ = load("sd3")
    with pytest.raises(ValueError, match="different text encoders"):
        r2f(model, rare, encode(sd3_clip, FREQ), mode="interpolate")
    with pytest.raises(ValueError, match="R2F prompt: the prompt text is empty"):
        SleightR2FPrompt.execute(clip, "  ")
    with pytest.raises(ValueError, match="R2F prompt: .*need the original prompt"):
        SleightR2FPrompt.execute(clip, "a horned animal BREAK a horned lion AND a hairy animal BREAK a hairy frog")
    with pytest.raises(RuntimeError, match="R2F prompt: the clip input is empty"):
        SleightR2FPrompt.execute(None, f"{FREQ} BREAK {RARE}")


def test_prompt_node_outputs_and_hand_written_lines():
    _, clip, rare, freq, _ = setup("sd15")
    r, f, levels = SleightR2FPrompt.execute(clip, f"{FREQ}, {RARE}").result
    assert torch.equal(r[0][0], rare[0][0]) and torch.equal(f[0][0], freq[0][0])
    assert levels == "" and f[0][1][LEVEL_KEY] is None and f[0][1][STAGE_KEY] == 0
    assert torch.equal(f[0][1]["pooled_output"], freq[0][1]["pooled_output"])


def test_plan_keys():
    plan = switching.Plan(("a", None, "a"), {"a": []})
    assert plan.active and plan.key(0) == "a" and plan.key(1) is None and plan.key(7) is None and plan.key(-1) is None
    assert not switching.Plan((None, None)).active
