"""SleightAPG on real ComfyUI sampling: reference equivalences, windows, state, errors, every architecture."""
import pytest
import torch

from sleight.nodes.guidance import SleightAPG
from tinyrun import WITH_SD35, encode, load, sample

DEFAULTS = dict(eta=0.0, momentum=-0.5, norm_threshold=15.0, start_percent=0.0, end_percent=1.0,
                cfg_warmup_steps=0, cfg_warmup_scale=0.0, scale_threshold_by_latent_size=False)


def apg(model, **kw):
    return SleightAPG.execute(model, **{**DEFAULTS, **kw}).result[0]


def prompts(clip):
    return encode(clip, "a red circle at the top left on a blue background"), encode(clip, "a green square")


def test_matches_comfyui_builtin_apg_at_cfg_minus_one():
    """Sleight at cfg w == core APG(eta, norm_threshold=r, momentum=β) at cfg w−1 (core's CFG step uses w, not w−1)."""
    from comfy_extras.nodes_apg import APG

    model, clip, _ = load("sd15")
    pos, neg = prompts(clip)
    for eta, beta, r in [(0.0, -0.5, 15.0), (0.5, 0.3, 3.0)]:
        ours = sample(apg(model, eta=eta, momentum=beta, norm_threshold=r), pos, neg, cfg=6.0, steps=4)
        core = APG.execute(model, eta=eta, norm_threshold=r, momentum=beta).result[0]
        theirs = sample(core, pos, neg, cfg=5.0, steps=4)
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)


def test_eta1_no_momentum_no_clip_equals_plain_cfg():
    model, clip, _ = load("sd15")
    pos, neg = prompts(clip)
    plain = sample(model, pos, neg, cfg=7.0, steps=4)
    same = sample(apg(model, eta=1.0, momentum=0.0, norm_threshold=0.0), pos, neg, cfg=7.0, steps=4)
    torch.testing.assert_close(same, plain, rtol=1e-4, atol=1e-4)


def test_disabled_window_and_full_warmup_are_bit_identical_to_cfg():
    model, clip, _ = load("sd15")
    pos, neg = prompts(clip)
    plain = sample(model, pos, neg, cfg=9.0, steps=4)
    assert torch.equal(sample(apg(model, start_percent=1.0, end_percent=1.0), pos, neg, cfg=9.0, steps=4), plain)
    assert torch.equal(sample(apg(model, cfg_warmup_steps=4), pos, neg, cfg=9.0, steps=4), plain)
    changed = sample(apg(model), pos, neg, cfg=9.0, steps=4)
    assert not torch.allclose(changed, plain, atol=1e-3)


def test_window_changes_only_the_steps_inside_it():
    model, clip, _ = load("sd15")
    pos, neg = prompts(clip)

    def trace(m):
        xs = []
        sample(m, pos, neg, cfg=9.0, steps=6, callback=lambda step, x0, x, total: xs.append(x0.clone()))
        return xs

    plain, late = trace(model), trace(apg(model, start_percent=0.5, end_percent=1.0))
    first_changed = next(i for i, (a, b) in enumerate(zip(plain, late)) if not torch.equal(a, b))
    assert 1 <= first_changed <= 4            # early steps are plain CFG, bit for bit
    assert all(torch.equal(a, b) for a, b in zip(plain[:first_changed], late[:first_changed]))


def test_warmup_scale_is_plain_cfg_at_that_scale():
    model, clip, _ = load("sd15")
    pos, neg = prompts(clip)
    at35 = sample(model, pos, neg, cfg=3.5, steps=3)
    warm = sample(apg(model, cfg_warmup_steps=3, cfg_warmup_scale=3.5), pos, neg, cfg=10.0, steps=3)
    torch.testing.assert_close(warm, at35, rtol=1e-4, atol=1e-4)


def test_state_is_per_run_and_cleared_even_on_interrupt():
    import comfy.model_management as mm

    model, clip, _ = load("sd15")
    pos, neg = prompts(clip)
    m = apg(model)
    first = sample(m, pos, neg, cfg=8.0, steps=4)
    assert torch.equal(sample(m, pos, neg, cfg=8.0, steps=4), first)     # no momentum carried over

    def interrupt(step, x0, x, total):
        if step == 1:
            raise mm.InterruptProcessingException()

    with pytest.raises(mm.InterruptProcessingException):
        sample(m, pos, neg, cfg=8.0, steps=4, callback=interrupt)
    assert "sleight.apg" not in m.model_options.get("transformer_options", {})
    assert torch.equal(sample(m, pos, neg, cfg=8.0, steps=4), first)


def test_cfg_one_is_a_clear_error():
    model, clip, _ = load("sd15")
    pos, neg = prompts(clip)
    with pytest.raises(ValueError, match="Sleight · APG: the sampler's cfg is 1"):
        sample(apg(model), pos, neg, cfg=1.0, steps=2)


def test_cfg_zero_follows_the_formula():
    """At w = 0 ComfyUI's CFG step returns the uncond alone; APG's D̂ = D_c + (w − 1)(ΔD_⊥ + ηΔD_∥) still holds
    (no division by w: that gave an all-black image). With η = 1 and no momentum or clipping it is D_u, plain CFG."""
    model, clip, _ = load("sd15")
    pos, neg = prompts(clip)
    plain = sample(model, pos, neg, cfg=0.0, steps=3)
    same = sample(apg(model, eta=1.0, momentum=0.0, norm_threshold=0.0), pos, neg, cfg=0.0, steps=3)
    torch.testing.assert_close(same, plain, rtol=1e-4, atol=1e-4)
    guided = sample(apg(model), pos, neg, cfg=0.0, steps=3)
    assert torch.isfinite(guided).all() and not torch.allclose(guided, plain, atol=1e-3)
    warm = sample(apg(model, cfg_warmup_steps=3, cfg_warmup_scale=2.0), pos, neg, cfg=0.0, steps=3)
    torch.testing.assert_close(warm, sample(model, pos, neg, cfg=2.0, steps=3), rtol=1e-4, atol=1e-4)


def test_reversed_window_is_a_clear_error():
    model, _, _ = load("sd15")
    with pytest.raises(ValueError, match="Sleight · APG: .*start_percent"):
        apg(model, start_percent=0.8, end_percent=0.2)


def test_second_apg_node_replaces_the_first():
    model, clip, _ = load("sd15")
    pos, neg = prompts(clip)
    twice = apg(apg(model, eta=1.0), eta=0.3)
    assert len(twice.model_options["sampler_pre_cfg_function"]) == 1
    torch.testing.assert_close(sample(twice, pos, neg, cfg=6.0), sample(apg(model, eta=0.3), pos, neg, cfg=6.0))


@pytest.mark.parametrize("name", WITH_SD35)
def test_runs_on_every_architecture(name):
    model, clip, _ = load(name)
    pos, neg = prompts(clip)
    base_options = repr(model.model_options)
    plain = sample(model, pos, neg, cfg=6.0, steps=2)
    guided = sample(apg(model, scale_threshold_by_latent_size=True), pos, neg, cfg=6.0, steps=2)
    assert torch.isfinite(guided).all() and guided.shape == plain.shape
    assert not torch.allclose(guided, plain, atol=1e-4)
    assert repr(model.model_options) == base_options
    assert torch.equal(sample(model, pos, neg, cfg=6.0, steps=2), plain)
