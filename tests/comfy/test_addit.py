"""Add-it: extended attention math, the mask pipeline, latent surgery and the lockstep source row, on real ComfyUI."""
import functools

import pytest
import torch
import torch.nn.functional as F

import comfy.sample
from sleight.attention_patches import extended
from sleight.attention_patches.core import masks, router, runstate
from sleight.nodes.insertion import SleightAddIt, SleightAddItMask
from sleight.nodes.inversion import SleightSourceTrajectory
from sleight.samplers import addit as addit_run
from sleight.samplers.trajectory import SOURCE_ROLE
from tinyrun import ARCH_MODELS, Probe, encode, load, sample

SRC, TGT, SUBJECT = "a red circle on a blue background", "a red circle and a cat on a blue background", "cat"


def reference_extended(q, k_src, v_src, k_tgt, v_tgt, gamma):
    """Direct formula: softmax(q·[k_src ; γ·k_tgt]ᵀ/√d)·[v_src ; v_tgt] with the full matrix."""
    k = torch.cat([k_src.expand(q.shape[0], -1, -1, -1), gamma * k_tgt], 2)
    v = torch.cat([v_src.expand(q.shape[0], -1, -1, -1), v_tgt], 2)
    w = torch.softmax(q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5, -1)
    return w @ v


@pytest.mark.parametrize("gamma", [1.0, 1.1])
def test_extended_attention_equals_the_direct_formula(gamma):
    g = torch.Generator().manual_seed(0)
    q, k_t, v_t = (torch.randn(2, 3, 10, 8, generator=g, dtype=torch.float64) for _ in range(3))
    k_s, v_s = (torch.randn(1, 3, 6, 8, generator=g, dtype=torch.float64) for _ in range(2))
    got = extended.extended_attention(F.scaled_dot_product_attention, q, k_s, v_s, k_t, v_t, gamma)
    assert torch.allclose(got, reference_extended(q, k_s, v_s, k_t, v_t, gamma), atol=1e-10)


def test_key_mass_equals_the_softmax_columns():
    g = torch.Generator().manual_seed(1)
    q, k = torch.randn(2, 4, 9, 8, generator=g, dtype=torch.float64), torch.randn(2, 4, 12, 8, generator=g, dtype=torch.float64)
    w = torch.zeros(12, dtype=torch.float64)
    w[[3, 5]] = 0.5
    probs = torch.softmax(q @ k.transpose(-1, -2) / 8 ** 0.5, -1)
    assert torch.allclose(extended.key_mass(q, k, w), probs[..., [3, 5]].mean(-1), atol=1e-10)


def auto_case():
    """Random text queries whose text→target / text→source ratio crosses 1.05 inside [1, 1.2] (target image keys
    = source image keys, so the ratio is exactly 1 at γ = 1 and grows with γ)."""
    g = torch.Generator().manual_seed(0)
    q = torch.randn(1, 2, 5, 16, generator=g, dtype=torch.float64)
    k_src = torch.randn(1, 2, 12, 16, generator=g, dtype=torch.float64) + 0.5 * q.mean(2, keepdim=True)
    k_tgt = torch.cat([torch.randn(1, 2, 5, 16, generator=g, dtype=torch.float64), k_src], 2)   # [text ; image]
    return q, k_src, k_tgt, slice(5, 17)


def reference_ratio(q, k_src, k_tgt, img, gamma):
    """Official store_attention_ratios ('text'): full softmax, mean over heads, sums over the text queries."""
    k = torch.cat([k_src, gamma * k_tgt], 2)
    p = torch.softmax(q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5, -1).mean(1).sum((0, 1))
    n = k_src.shape[2]
    return float(p[n + img.start:n + img.stop].sum() / p[:n].sum())


def test_auto_gamma_solves_the_official_ratio_on_random_tensors():
    q, k_src, k_tgt, img = auto_case()

    def ratio(gamma):
        k = torch.cat([k_src, gamma * k_tgt], 2)
        src, tgt = extended.source_target_mass(q, k, k_src.shape[2], img)
        assert abs(tgt / src - reference_ratio(q, k_src, k_tgt, img, gamma)) < 1e-6   # SDPA masses == softmax (float sums)
        return tgt / src

    gamma, got, probes = extended.solve_gamma(ratio)
    lo, hi = 1.0, 1.2                                     # the exact root by bisection, for comparison
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if reference_ratio(q, k_src, k_tgt, img, mid) < 1.05 else (lo, mid)
    assert 1.0 <= gamma <= 1.2 and abs(gamma - lo) <= 0.01 and abs(got - 1.05) < 0.015
    assert len(probes) <= 8                               # brentq: a handful of forwards, not a sweep
    # no root in the bracket: the closer end, never outside [1, 1.2]
    assert extended.solve_gamma(lambda g: g - 0.5)[0] == 1.2 and extended.solve_gamma(lambda g: 5 * g)[0] == 1.0


def test_blur_otsu_dilate_pipeline():
    blob = torch.zeros(1, 1, 8, 8)
    blob[..., 2:4, 4:6] = 1.0
    def blur(x):                                   # Add-it's blur: kernel 3, OpenCV's sigma, reflect padding
        return masks.gaussian_blur(x, masks.cv2_sigma(3), 1, pad="reflect")

    blurred = blur(torch.ones(1, 1, 5, 5))
    assert torch.allclose(blurred, torch.ones(1, 1, 5, 5))                     # normalised kernel
    assert torch.isclose(blur(blob).sum(), blob.sum(), atol=0.2)
    values = torch.cat([torch.full((50,), 0.1), torch.full((30,), 0.9)])
    assert 0.1 < masks.otsu_threshold(values) <= 0.9
    one = torch.zeros(1, 1, 5, 5)
    one[..., 2, 2] = 1
    assert masks.dilate(one, 1).sum() == 9 and torch.equal(masks.dilate(one, 0), one)
    noisy = blob * 0.8 + 0.05 * torch.rand(1, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    mask = extended.attention_mask(noisy, (16, 16), dilation=0)
    assert mask.shape == (1, 1, 16, 16) and mask[0, 0, 4:8, 8:12].all() and mask[0, 0, 10:, :6].sum() == 0


# Shared samples: one source and one plain baseline per model, 3 steps, 64 px; the Add-it runs are what differ.
STEPS = 3
ARCH_ORDER = ["sdxl", "flux_dev_narrow", "sd3", "sd15"]     # leaves sd15/sd3/flux_dev loaded for the next tests and files
assert sorted(ARCH_ORDER) == sorted(ARCH_MODELS)


@functools.lru_cache(maxsize=8)
def prompts(name):
    _, clip, _ = load(name)
    return encode(clip, TGT), encode(clip, "")


@functools.lru_cache(maxsize=4)
def source(name, seed=3):
    model, clip, _ = load(name)
    clean = sample(model, encode(clip, SRC), prompts(name)[1], steps=2, seed=11)
    return SleightSourceTrajectory.execute(model, {"samples": clean}, encode(clip, SRC), seed).result[0]


@functools.lru_cache(maxsize=4)
def baseline(name):
    return sample(load(name)[0], *prompts(name), steps=STEPS)


def addit(name, traj, **kw):
    model, clip, _ = load(name)
    args = dict(gamma=0.0, structure_transfer=-1.0, blend_at=-1.0, double_stream_end=10 / 30, single_stream_end=20 / 30)
    args.update(kw)
    return SleightAddIt.execute(model, clip, traj, TGT, SUBJECT, **args).result


def run_state(model, pos, neg, steps=STEPS):
    """Sample `model` and return (output, the RunState of that run), caught by a probe that changes nothing."""
    probe = Probe(where=lambda call: False)
    m = model.clone()
    router.install(m, probe)
    out = sample(m, pos, neg, steps=steps)
    return out, probe.calls[-1].run


def trace(model, pos, neg, steps=STEPS):
    xs = []
    out = sample(model, pos, neg, steps=steps, callback=lambda i, x0, x, total: xs.append(x.clone()))
    return out, xs


def test_everything_off_is_plain_sampling_bit_for_bit_and_the_model_is_left_alone():
    model, clip, _ = load("sd15")
    pos, neg = prompts("sd15")
    before = repr(model.model_options)
    base = baseline("sd15")
    off, _ = addit("sd15", source("sd15"), structure_transfer=1.0, blend_at=1.0, double_stream_end=0.0, single_stream_end=0.0)
    assert torch.equal(sample(off, pos, neg, steps=STEPS), base)
    on, _ = addit("sd15", source("sd15"))
    out = sample(on, pos, neg, steps=STEPS)
    assert not torch.equal(out, base)
    assert repr(model.model_options) == before and torch.equal(sample(model, pos, neg, steps=STEPS), base)
    effect = router.current_router(on).effects[0]
    assert runstate.RUN_KEY not in on.model_options["transformer_options"], "per-step K/V and maps live for one run"
    assert not {"cache", "maps", "last_mask"} & set(vars(effect)), "no per-run state on the long-lived effect"


def test_source_row_runs_first_with_its_role_only_inside_the_window():
    traj = source("sd15")
    on, pos = addit("sd15", traj, double_stream_end=0.25, single_stream_end=1 / 3, structure_transfer=1.0, blend_at=1.0)
    probe = Probe()
    router.install(on, probe)
    sample(on, pos, prompts("sd15")[1], steps=3)
    roles = [tuple(sorted(f[0].rows)) for f in probe.forwards()]
    # 3 steps, windows through step round(0.75) = 1 and round(1) = 1 (ends included, as the official code): the
    # source row runs before the target at steps 0, 1 only
    assert roles == [(SOURCE_ROLE,), ("cond", "uncond"), (SOURCE_ROLE,), ("cond", "uncond"), ("cond", "uncond")]


def test_structure_transfer_replaces_the_latent_with_the_renoised_source():
    model, clip, _ = load("sd15")
    traj = source("sd15")
    on, pos = addit("sd15", traj, structure_transfer=1 / 3, blend_at=1.0)        # step 1 of 3
    _, xs = trace(on, pos, prompts("sd15")[1])
    latent = comfy.sample.fix_empty_latent_channels(model, torch.zeros(1, 4, 8, 8))
    noise = comfy.sample.prepare_noise(latent, 7)                              # tinyrun.sample's seed
    sigmas = comfy.samplers.calculate_sigmas(model.model.model_sampling, "normal", STEPS)
    want = model.model.model_sampling.noise_scaling(sigmas[1:2], noise, traj.clean)
    assert torch.allclose(xs[1], want, atol=1e-5)


def test_blending_with_a_user_mask_keeps_the_source_outside_and_reports_the_mask():
    model, clip, _ = load("sd15")
    traj = source("sd15")
    mask = torch.zeros(1, 64, 64)
    mask[:, :, 32:] = 1.0                                                        # right half may change
    on, pos = addit("sd15", traj, blend_at=1 / 3, mask=mask, structure_transfer=1.0)   # blend before step 2 of 3
    out, xs = trace(on, pos, prompts("sd15")[1])
    sigmas = comfy.samplers.calculate_sigmas(model.model.model_sampling, "normal", STEPS)
    src = traj.at(model.model.model_sampling, sigmas[2])
    assert torch.allclose(xs[2][..., :4], src[..., :4], atol=1e-6)
    assert not torch.allclose(xs[2][..., 4:], src[..., 4:], atol=1e-3)
    got = SleightAddItMask.execute(on, {"samples": out}).result[0]
    assert torch.equal(got, mask)


def test_bad_inputs_name_the_node_and_the_fix():
    model, clip, _ = load("sd15")
    traj = source("sd15")
    neg = prompts("sd15")[1]
    with pytest.raises(ValueError, match="Sleight · Add-it.*does not appear in the prompt"):
        SleightAddIt.execute(model, clip, traj, TGT, "giraffe", 0.0, -1.0, -1.0, 0.3, 0.6)
    with pytest.raises(ValueError, match="Sleight · Add-it.*resize the mask"):
        addit("sd15", traj, mask=torch.ones(1, 40, 64))
    with pytest.raises(ValueError, match="Sleight · Add-it.*after the extended attention ends"):
        addit("sd15", traj, gamma=-1.0, double_stream_end=0.1, single_stream_end=0.1, auto_gamma_at=0.2)
    on, pos = addit("sd15", traj, mask=torch.ones(3, 64, 64), blend_at=0.0)     # blend before step 1
    with pytest.raises(ValueError, match="Sleight · Add-it.*one mask or one per image"):
        sample(on, pos, neg, steps=STEPS, batch=2)
    on, pos = addit("sd15", traj)
    with pytest.raises(ValueError, match="Sleight · Add-it.*size of the source"):
        sample(on, pos, neg, steps=2, size=96)
    assert runstate.RUN_KEY not in on.model_options["transformer_options"]       # the failed run left nothing
    with pytest.raises(ValueError, match="Sleight · Add-it mask.*MODEL output"):
        SleightAddItMask.execute(model, {"samples": torch.zeros(1, 4, 8, 8)})


@pytest.mark.parametrize("name", ARCH_ORDER)
def test_runs_on_every_architecture_with_an_attention_mask(name):
    traj = source(name)
    on, pos = addit(name, traj, blend_at=1 / 3)        # record steps 0-1, blend before step 2 of 3
    out = sample(on, pos, prompts(name)[1], steps=STEPS)
    assert torch.isfinite(out).all() and not torch.equal(out, baseline(name))
    record = getattr(out, addit_run.MASK_ATTR)
    assert record["mask"] is not None, "the subject maps were recorded and the latents blended"
    mask = SleightAddItMask.execute(on, {"samples": out}).result[0]
    assert mask.shape == (1, 64, 64) and 0 < mask.mean() <= 1


@pytest.mark.parametrize("name", ["sd3", "sd15"])     # text queries (MM-DiT); image queries (UNet self-attention)
def test_auto_gamma_on_a_real_model_is_solved_in_range_and_then_used(name):
    traj = source(name)
    pos, neg = prompts(name)
    auto, _ = addit(name, traj, gamma=-1.0, blend_at=1.0, auto_gamma_at=0.0)    # solved at step 0, used at every step
    out, run = run_state(auto, pos, neg, steps=STEPS)
    st = router.current_router(auto).effects[0].state(run)
    gamma, ratio, probes = st.auto
    assert 1.0 <= gamma <= 1.2 and st.gamma == gamma and st.probe is None
    ratios = [probes[g] for g in sorted(probes)]
    if 1.0 < gamma < 1.2:               # a root was bracketed: brentq's answer to its xtol (0.01 in gamma)
        below = max(g for g in probes if probes[g] <= 1.05 and g <= gamma + 0.01)
        above = min(g for g in probes if probes[g] >= 1.05 and g >= gamma - 0.01)
        assert abs(above - below) <= 0.02 + 1e-9 or abs(ratio - 1.05) < 1e-3
    else:                               # no root in [1, 1.2]: the end closest to 1.05
        assert abs(ratio - 1.05) == min(abs(r - 1.05) for r in (ratios[0], ratios[-1]))
    # the probes leave nothing behind: the same run with that gamma fixed is identical bit for bit
    fixed, _ = addit(name, traj, gamma=gamma, blend_at=1.0)
    assert torch.equal(sample(fixed, pos, neg, steps=STEPS), out)
