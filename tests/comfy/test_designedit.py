"""DesignEdit on real ComfyUI with the tiny models: key-masked self-attention, the removal / layer nodes."""
import pytest
import torch

from sleight.attention_patches import keymask
from sleight.attention_patches.core import masks, router, schedule
from sleight.nodes.designedit import (SleightDesignEditLayer, SleightDesignEditLayers, SleightDesignEditPan,
                                      SleightDesignEditRemove, SleightDesignEditZoomOut)
from sleight.samplers import designedit, fusion
from sleight.samplers.trajectory import SourceTrajectory
from tinyrun import ARCH_MODELS, Probe, encode, latent_for, load, sample

PROMPT = ""            # DesignEdit removes with the empty prompt as positive and negative (paper)
STEPS = 4


def half_mask(grid=8):
    m = torch.zeros(grid, grid)
    m[:, grid // 2:] = 1
    return m


def source_for(model, clip, seed=3):
    g = torch.Generator().manual_seed(seed)
    shape = latent_for(model).shape
    return SourceTrajectory(torch.randn(shape, generator=g), encode(clip, PROMPT), noise=torch.randn(shape, generator=g))


def pixel_box(size=64, box=(16, 40, 32, 56)):
    m = torch.zeros(1, size, size)
    y0, y1, x0, x1 = box
    m[:, y0:y1, x0:x1] = 1
    return m


def remove(model, src, mask, **kw):
    args = dict(dilation=0, refine_mask=None, key_mode="zero keys (official)", feather=0, mask_start=0.02,
                mask_end=0.78, refine_end=0.5, blend_end=0.82, proximal_strength=0.1, proximal_start_percent=0.6)
    args.update(kw)
    return SleightDesignEditRemove.execute(model, src, mask, **args).result[0]


# ---------------------------------------------------------------- the key-mask effect in every architecture

@pytest.mark.parametrize("name", ARCH_MODELS)
def test_empty_or_inactive_key_mask_is_bit_identical(name):
    model, clip, _ = load(name)
    pos = neg = encode(clip, PROMPT)
    m = model.clone()
    router.install(m, keymask.KeyMask(torch.zeros(8, 8), schedule.StepWindow()))               # empty mask
    router.install(m, keymask.KeyMask(half_mask(), schedule.StepWindow(0.9, 0.95)))   # no step of 2 in the window
    assert torch.equal(sample(m, pos, neg, steps=2), sample(model, pos, neg, steps=2))


@pytest.mark.parametrize("name", ARCH_MODELS)
def test_key_mask_zeroes_masked_image_keys_of_cond_rows_only(name):
    model, clip, _ = load(name)
    pos = neg = encode(clip, PROMPT)
    m = model.clone()
    effect = keymask.KeyMask(half_mask(), schedule.StepWindow(0.0, 1.0))
    probe = Probe()                        # order 90: sees each call after the key mask
    router.install(m, effect)
    router.install(m, probe)
    out = sample(m, pos, neg, steps=2)
    assert not torch.allclose(out, sample(model, pos, neg, steps=2), atol=1e-4)
    kinds = set()
    for call, seen in zip(probe.calls, _ran_by_call(probe)):
        if call.kind == "cross":
            assert torch.equal(seen.k, call.k)                # cross-attention is never masked
            continue
        kinds.add(call.kind)
        cond, uncond = call.rows["cond"], call.rows["uncond"]
        img = call.img if call.kind == "joint" else slice(0, call.k.shape[2])
        keep = (1 - effect.mask_at(call)).to(call.k)[None, None, :, None]
        assert torch.equal(seen.k[cond][:, :, img], call.k[cond][:, :, img] * keep)
        assert torch.equal(seen.k[uncond], call.k[uncond])
        if call.kind == "joint":                              # DiTs: text keys untouched
            assert torch.equal(seen.k[:, :, call.txt], call.k[:, :, call.txt])
        assert torch.equal(seen.q, call.q) and torch.equal(seen.v, call.v)
    assert kinds == ({"self"} if name in ("sd15", "sdxl") else {"joint"})


def _ran_by_call(probe):
    ran = iter(probe.ran)
    return [next(ran) for _ in probe.calls]    # the probe applies to every call, in the same order


# ---------------------------------------------------------------- the removal node

@pytest.mark.parametrize("name", ARCH_MODELS)
def test_removal_keeps_the_source_outside_the_mask_and_key_masking_fills_the_hole(name):
    model, clip, _ = load(name)
    pos = neg = encode(clip, PROMPT)
    src = source_for(model, clip)
    mask = pixel_box()
    m_lat = masks.pixel_to_latent(mask, (8, 8), 8)
    fmt = model.get_model_object("latent_format")
    kept = remove(model, src, mask, blend_end=1.0)            # blending to the end: outside = source exactly
    out = sample(kept, pos, neg, steps=STEPS)
    want = fmt.process_out(src.clean.clone())
    outside = (m_lat == 0).expand_as(out)
    torch.testing.assert_close(out[outside], want[outside], rtol=1e-5, atol=1e-5)
    assert torch.isfinite(out).all()
    if name == "sdxl":                                        # the UNet path is tested on sd15; sdxl is slow here
        return
    no_keys = remove(model, src, mask, blend_end=1.0, mask_start=0.99, mask_end=0.99)   # same, no key masking
    other = sample(no_keys, pos, neg, steps=STEPS)
    torch.testing.assert_close(other[outside], out[outside], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(other[~outside], out[~outside], atol=1e-4)   # key masking changes the hole


def test_removal_and_layers_never_leak_into_the_input_model():
    model, clip, _ = load("sd15")
    pos = neg = encode(clip, PROMPT)
    before = repr(model.model_options)
    base = sample(model, pos, neg, steps=STEPS)
    src = source_for(model, clip)
    removed = remove(model, src, pixel_box(), blend_end=0.5)
    layer = SleightDesignEditLayer.execute({"samples": src.clean}, pixel_box(), 8, 0, 1.0, "none").result[0]
    both = SleightDesignEditLayers.execute(removed, layer).result[0]
    assert designedit.current_plan(removed).layers == () and len(designedit.current_plan(both).layers) == 1
    edited = sample(both, pos, neg, steps=STEPS)
    assert torch.isfinite(edited).all() and not torch.allclose(edited, base, atol=1e-3)
    assert repr(model.model_options) == before and torch.equal(sample(model, pos, neg, steps=STEPS), base)


def test_edits_follow_the_papers_schedule_at_50_steps():
    import comfy.samplers

    model, clip, _ = load("sdxl")
    ms = model.get_model_object("model_sampling")
    sigmas = comfy.samplers.calculate_sigmas(ms, "ddim_uniform", 50)
    src = source_for(model, clip)
    plan = designedit.Plan(src, torch.ones(1, 1, 8, 8))
    todo = designedit.edits(plan, sigmas, ms)
    assert [j for j, e in todo.items() if "blend" in e] == list(range(1, 42))       # entering steps 1..41
    t = [float(ms.timestep(s)) for s in sigmas[:-1]]
    prox = [j for j, e in todo.items() if "proximal" in e]
    assert prox == [j for j in range(1, 51) if t[j - 1] < 400] and prox[0] == 31 and prox[-1] == 50
    layer = fusion.Layer(src.clean, torch.ones(1, 1, 8, 8))
    with_layers = designedit.edits(designedit.with_layers(plan, [layer]), sigmas, ms)
    assert [j for j, e in with_layers.items() if "fuse" in e] == [42]
    assert not any("proximal" in e for e in with_layers.values())     # the canvas row has no proximal pull


def test_segmented_sampling_equals_one_run():
    """No-op edits at every step (blend with an all-ones mask) split the run into single steps: same result."""
    model, clip, _ = load("sd15")
    pos = neg = encode(clip, PROMPT)
    src = source_for(model, clip)
    runs = []
    for blend in (schedule.StepWindow(0.0, 1.0), schedule.StepWindow(0.0, 0.0)):
        m = model.clone()
        designedit.install(m, designedit.Plan(src, torch.ones(1, 1, 8, 8), blend, proximal_strength=0.0))
        runs.append(sample(m, pos, neg, steps=STEPS))
    torch.testing.assert_close(runs[0], runs[1], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["sd15", "sd3", "flux_dev_narrow"])
def test_layers_are_pasted_moved_at_the_fusion_step(name):
    model, clip, _ = load(name)
    pos = neg = encode(clip, PROMPT)
    src = source_for(model, clip)
    removed = remove(model, src, pixel_box(box=(8, 24, 8, 24)), blend_end=0.5)   # 4 steps: blend entering 1-2, fusion entering 3
    g = torch.Generator().manual_seed(9)
    fmt = model.get_model_object("latent_format")
    layer_clean = torch.randn(src.clean.shape, generator=g)
    layer_mask = pixel_box(box=(8, 24, 8, 24))
    layers = SleightDesignEditLayer.execute({"samples": fmt.process_out(layer_clean.clone())}, layer_mask,
                                            16, 24, 1.0, "horizontal").result[0]
    fused_model = SleightDesignEditLayers.execute(removed, layers).result[0]
    states = {}
    sample(fused_model, pos, neg, steps=STEPS, callback=lambda i, x0, x, total: states.setdefault(i, x.clone()))
    assert sorted(states) == list(range(STEPS))
    ms = model.get_model_object("model_sampling")
    import comfy.samplers

    sigma = comfy.samplers.calculate_sigmas(ms, "normal", STEPS)[3]
    eps = designedit.source_noise(src, ms, sigma, src.clean)
    noisy = ms.noise_scaling(sigma.reshape(1), eps, fmt.process_in(fmt.process_out(layer_clean.clone())))
    lat_mask = masks.pixel_to_latent(layer_mask, (8, 8), 8)
    want, where = fusion.transform(fusion.Layer(noisy, lat_mask, 2, 3, 1.0, True, False))
    where = (where > 0).expand_as(want)
    assert where[0, 0, 4:6, 3:5].all() and where.sum() == 4 * src.clean.shape[1]
    torch.testing.assert_close(states[3][where], want[where], rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------- errors and helpers

def test_bad_inputs_give_clear_errors():
    model, clip, _ = load("sd15")
    src = source_for(model, clip)
    with pytest.raises(ValueError, match="DesignEdit remove.*48x64 pixels but the latent is 64x64"):
        remove(model, src, torch.ones(1, 64, 48))
    with pytest.raises(ValueError, match="DesignEdit remove.*mask is empty"):
        remove(model, src, torch.zeros(1, 64, 64))
    with pytest.raises(ValueError, match="source trajectory"):
        remove(model, {"samples": src.clean}, pixel_box())
    with pytest.raises(ValueError, match="no DesignEdit removal"):
        SleightDesignEditLayers.execute(model, [])
    removed = remove(model, src, pixel_box())
    with pytest.raises(ValueError, match="no layers"):
        SleightDesignEditLayers.execute(removed, [])
    with pytest.raises(ValueError, match="DesignEdit layer: the mask is empty"):
        SleightDesignEditLayer.execute({"samples": src.clean}, torch.zeros(1, 64, 64), 0, 0, 1.0, "none")
    far = SleightDesignEditLayer.execute({"samples": src.clean}, pixel_box(), 16, 0, 1.0, "none").result[0]
    with pytest.raises(ValueError, match="layer 1 leaves the canvas at the right by about 8 px"):
        SleightDesignEditLayers.execute(removed, far)
    small = SleightDesignEditLayer.execute({"samples": src.clean[..., :4, :]}, pixel_box(), 0, 0, 1.0, "none").result[0]
    with pytest.raises(ValueError, match="layer 1's latent .* differs from the source"):
        SleightDesignEditLayers.execute(removed, small)
    few = SleightDesignEditLayers.execute(remove(model, src, pixel_box(), blend_end=0.9),
                                          SleightDesignEditLayer.execute({"samples": src.clean}, pixel_box(), 0, 0,
                                                                         1.0, "none").result[0]).result[0]
    pos = encode(clip, PROMPT)
    with pytest.raises(ValueError, match="no step is left after the blending window"):
        sample(few, pos, pos, steps=3)
    with pytest.raises(ValueError, match="differs from the source"):
        sample(removed, pos, pos, steps=2, size=128)


def test_zoom_and_pan_nodes_feed_the_removal():
    img = torch.rand(1, 64, 96, 3)
    image, mask = SleightDesignEditZoomOut.execute(img, 0.75, 0.5).result
    assert image.shape == img.shape and mask.shape == (1, 64, 96) and mask[0, 0, 0] == 1 and mask[0, 32, 48] == 0
    image, mask = SleightDesignEditPan.execute(img, -32, 0).result
    assert mask[0, :, 64:].all() and mask[0, :, :64].sum() == 0


def test_inverted_and_renoised_trajectories_are_read_alike():
    """An inverted trajectory holding the re-noised latents gives the same edit; another schedule is refused."""
    import comfy.samplers

    model, clip, _ = load("sd15")
    pos = neg = encode(clip, PROMPT)
    src = source_for(model, clip)
    ms = model.get_model_object("model_sampling")
    sigmas = comfy.samplers.calculate_sigmas(ms, "normal", STEPS).float()
    recorded = [ms.noise_scaling(s.reshape(1), src.noise, src.clean.clone()) for s in sigmas]
    inv = SourceTrajectory(src.clean, src.conditioning, sigmas=sigmas, latents=recorded)
    outs = [sample(remove(model, t, pixel_box(), blend_end=0.5), pos, neg, steps=STEPS) for t in (src, inv)]
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="DesignEdit remove: the inverted trajectory has no latent at sigma"):
        sample(remove(model, inv, pixel_box()), pos, neg, steps=STEPS + 1)
