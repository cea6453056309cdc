"""HD-Painter on real ComfyUI: PAIntA (efficient == materialised formula, c ≡ 1 == baseline), RASG (zero objective ==
ComfyUI's DDIM-η with zero noise), every architecture, clear errors, and no leaks."""
import pytest
import torch

from sleight.attention_patches import painta
from sleight.attention_patches.core import families, router, runstate, tokens
from sleight.nodes.inpaint import SleightPAIntA, SleightRASG
from sleight.samplers import rasg
from tinyrun import encode, fresh, load

SIZE = 64
PROMPT = "a red hat"


def hole_mask(size=SIZE, h=None):
    m = torch.zeros(1, h or size, size)
    m[:, (h or size) // 4: 3 * (h or size) // 4, size // 4: 3 * size // 4] = 1.0
    return m


def patched(name, text=PROMPT, mask=None, layers=None, end_percent=0.5):
    model, clip, _ = load(name)
    # the tiny SD1.5 UNets have a single level (latent size): no 1/2 or 1/4 layers, so list them
    layers = layers or ("*" if name.startswith("sd15") else None)
    m, pos = SleightPAIntA.execute(model, clip, text, hole_mask() if mask is None else mask, "", end_percent,
                                   painta.CUSTOM if layers else painta.AUTO, layers or "*").result
    return model, clip, m, pos


def run(model, pos, neg, sampler=None, steps=3, cfg=3.0, noise_mask=True, seed=3):
    import comfy.sample
    import comfy.samplers

    latent = comfy.sample.fix_empty_latent_channels(model, torch.zeros([1, 4, SIZE // 8, SIZE // 8]))
    latent = latent + 0.1 * torch.randn(latent.shape, generator=torch.Generator().manual_seed(1))
    noise = comfy.sample.prepare_noise(latent, seed)
    mask = hole_mask() if noise_mask else None
    ms = model.get_model_object("model_sampling")
    sigmas = comfy.samplers.calculate_sigmas(ms, "normal", steps).cpu()
    sampler = sampler or comfy.samplers.sampler_object("euler")
    return comfy.sample.sample_custom(model, noise, cfg, sampler, sigmas, pos, neg, latent, noise_mask=mask,
                                      disable_pbar=True, seed=seed)


# ------------------------------------------------------------------ the math on random tensors

def test_efficient_painta_equals_the_materialised_formula():
    g = torch.Generator().manual_seed(0)
    b, h, n, d = 2, 3, 36, 8
    q, k, v = (torch.randn(b, h, n, d, generator=g) for _ in range(3))
    hole = torch.rand(n, generator=g) > 0.6
    c = torch.rand(b, n, generator=g)
    c[:, :5] = 0.0
    ref = painta.reference_painta(q, k, v, hole, c)
    call = router.AttentionCall(q=q, k=k, v=v, heads=h, kind="self", block="t", index=0, img=slice(0, n), txt=None,
                                grid=(6, 6), forward=None)

    def sdpa(c):
        return torch.nn.functional.scaled_dot_product_attention(c.q, c.k, c.v)

    got = painta.painta_attention(call, sdpa, hole.nonzero().flatten(), painta.key_scale(c, hole))
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
    # non-hole queries are exactly the plain attention; hole queries change
    plain = sdpa(call)
    torch.testing.assert_close(ref[:, :, ~hole], plain[:, :, ~hole], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(ref[:, :, hole], plain[:, :, hole], atol=1e-3)


def test_relevance_follows_the_official_normalisation():
    s = torch.rand(1, 16, generator=torch.Generator().manual_seed(1))
    c = painta.relevance(s, (4, 4))
    sm = torch.nn.functional.conv2d(s.reshape(1, 1, 4, 4), painta.gaussian_3x3()[None, None], padding=1).flatten()
    assert torch.allclose(c[0], ((sm - sm.median()) / sm.max()).clamp(0, 1))
    assert painta.gaussian_3x3()[1, 1] == painta.gaussian_3x3().max() and abs(float(painta.gaussian_3x3().sum()) - 1) < 1e-6


def test_the_hole_is_grown_by_one_pixel_as_the_official_code():
    """Official run(): mask.dilate(1) (scipy's binary_dilation, 4-connected) before the masks at each level."""
    _, _, m, _ = patched("sd15")
    got = m.model_options["transformer_options"][painta.TARGET_KEY].mask
    want = hole_mask()[0].clone()
    y0, y1, x0, x1 = SIZE // 4, 3 * SIZE // 4, SIZE // 4, 3 * SIZE // 4
    want[y0 - 1, x0:x1] = want[y1, x0:x1] = want[y0:y1, x0 - 1] = want[y0:y1, x1] = 1     # the box, one px wider
    assert torch.equal(got, want)


def test_prompt_tokens_are_the_bare_prompt_and_the_full_end_token():
    model, clip, _ = load("sd15")
    a = families.detect(model)
    # "a red hat" -> positions 1..3; with a suffix the end token moves behind it (official token_idx)
    assert tokens.prompt_positions(clip, PROMPT, "", a, 77, "t") == (1, 2, 3, 4)
    full = tokens.prompt_positions(clip, PROMPT, "high quality", a, 77, "t")
    assert full[:3] == (1, 2, 3) and full[3] > 4 and len(full) == 4


# ------------------------------------------------------------------ PAIntA on real models

@pytest.mark.parametrize("name", ["sd15_inpaint", "sd3"])
def test_c_one_is_bit_identical_to_baseline(name):
    model, clip, m, pos = patched(name)
    neg = encode(clip, "")
    effect = next(e for e in m.model_options["transformer_options"]["optimized_attention_override"].sleight_router.effects
                  if isinstance(e, painta.PAIntA))
    effect.relevance = lambda s, grid: torch.ones_like(s, dtype=torch.float32)
    assert torch.equal(run(m, pos, neg), run(model, pos, neg))


@pytest.mark.parametrize("name", ["sd15_inpaint", "sdxl", "sd3", "flux_dev_narrow"])
def test_painta_and_rasg_run_on_every_architecture_and_never_leak(name):
    model, clip, m, pos = patched(name)
    neg = encode(clip, "")
    inpaint = name == "sd15_inpaint"
    before = repr(model.model_options)
    base = run(model, pos, neg, noise_mask=not inpaint)
    out = run(m, pos, neg, noise_mask=not inpaint)
    assert torch.isfinite(out).all() and not torch.equal(out, base)
    guided = run(m, pos, neg, sampler=SleightRASG.execute(0.1).result[0], noise_mask=not inpaint)
    assert torch.isfinite(guided).all() and not torch.equal(guided, out)
    # the gradient flows (on Flux through copies of the activations its blocks change in place): with the
    # objective zeroed, the same sampler gives another result
    unguided = run(m, pos, neg, sampler=rasg.ksampler(eta=0.1, objective_scale=0.0), noise_mask=not inpaint)
    assert not torch.equal(guided, unguided)
    assert repr(model.model_options) == before
    assert torch.equal(run(model, pos, neg, noise_mask=not inpaint), base)
    effect = next(e for e in m.model_options["transformer_options"]["optimized_attention_override"].sleight_router.effects
                  if isinstance(e, painta.PAIntA))
    assert runstate.RUN_KEY not in m.model_options["transformer_options"], "PAIntA's pending calls live for one run"
    assert not {"pending", "y_plain"} & set(vars(effect)), "no per-run state on the long-lived effect"


def test_painta_window_keeps_late_steps_plain():
    """end_percent = 0: no reweighting anywhere, exactly the plain model."""
    model, clip, m, pos = patched("sd15_inpaint", end_percent=0.0)
    neg = encode(clip, "")
    assert torch.equal(run(m, pos, neg), run(model, pos, neg))


# ------------------------------------------------------------------ RASG

@pytest.mark.parametrize("name", ["sd15_inpaint", "sd3", "flux_dev_narrow"])
def test_rasg_with_zero_objective_is_comfyui_ddim_eta_with_zero_noise(name):
    import comfy.samplers
    from comfy.k_diffusion import sampling as kd

    model, clip, m, pos = patched(name, end_percent=0.0)
    neg = encode(clip, "")
    zero = comfy.samplers.KSAMPLER(rasg.sample_rasg, extra_options={"eta": 0.3, "objective_scale": 0.0,
                                                                    "noise": "ddim"})
    ddim = comfy.samplers.KSAMPLER(kd.sample_euler_ancestral, extra_options={
        "eta": 0.3, "noise_sampler": lambda s, sn: torch.zeros(1, m.model.latent_format.latent_channels, SIZE // 8, SIZE // 8)})
    assert torch.equal(run(m, pos, neg, sampler=zero, steps=4), run(m, pos, neg, sampler=ddim, steps=4))
    guided = run(m, pos, neg, sampler=rasg.ksampler(eta=0.3, noise="ddim"), steps=4)
    assert not torch.allclose(guided, run(m, pos, neg, sampler=ddim, steps=4), atol=1e-4)


def official_sigma(betas, t, dt):
    """HD-Painter's Schedule.sigma written out from its betas (float64), per-step alphas."""
    a = 1 - betas
    return torch.sqrt((1 - a[t - dt]) / (1 - a[t]) * (1 - a[t] / a[t - dt]))


def test_rasg_noise_scale_is_the_official_sigma_over_a_whole_schedule():
    """Default noise scale = the official code's σ_t (per-step α_t = 1 − β_t) over its 50-step schedule (t = 999,
    979, …, 19), as σ_up = ησ_t/√ᾱ_{t−dt} in ComfyUI's σ space; the DDIM paper's σ_t from ᾱ is 10–25× larger."""
    model, _, _ = load("sd15")
    ms = model.get_model_object("model_sampling")
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2     # SD1.5's schedule
    acp = torch.cumprod(1 - betas, 0)
    eta, dt = 0.25, 20
    ratios = []
    for t in range(999, dt - 1, -dt):
        t_next = t - dt
        sigma, sigma_next = ms.sigmas[t], ms.sigmas[t_next]
        want = eta * official_sigma(betas, t, dt) / acp[t_next].sqrt()
        got = rasg.official_sigma_up(ms, sigma, sigma_next, eta)
        assert got == pytest.approx(float(want), rel=1e-3), t
        ddim = eta * torch.sqrt((1 - acp[t_next]) / (1 - acp[t]) * (1 - acp[t] / acp[t_next])) / acp[t_next].sqrt()
        ratios.append(float(ddim) / got)
    assert 9 < min(ratios) and max(ratios) < 26
    assert rasg.official_sigma_up(ms, ms.sigmas[19], torch.tensor(0.0), eta) == 0.0       # the last step adds none


def test_rasg_official_and_ddim_noise_scales_differ_and_each_repeats():
    model, clip, m, pos = patched("sd15_inpaint", end_percent=0.0)
    neg = encode(clip, "")
    official = run(m, pos, neg, sampler=SleightRASG.execute(0.3).result[0], noise_mask=False, steps=3)
    ddim = run(m, pos, neg, sampler=SleightRASG.execute(0.3, "ddim").result[0], noise_mask=False, steps=3)
    assert not torch.allclose(official, ddim, atol=1e-4)
    assert torch.equal(run(m, pos, neg, sampler=SleightRASG.execute(0.3).result[0], noise_mask=False, steps=3),
                       official)
    with pytest.raises(ValueError, match="RASG.*noise_scale"):
        SleightRASG.execute(0.3, "loud")


@pytest.mark.parametrize("name", ["sd15_inpaint", "sd3", "flux_dev_narrow"])
def test_rasg_gradient_matches_finite_differences(name):
    """∇S as RASG computes it (autograd through the real model; on Flux through copies of the saved activations)
    against central differences of S along random directions, inside a sampler run as ComfyUI drives it."""
    import comfy.samplers

    found = []

    def probe(model, x, sigmas, extra_args=None, callback=None, disable=None):
        extra_args = dict(extra_args or {})
        with rasg.grad_model(model, x, extra_args) as gm:
            x64 = x.double()  # the direction and the differences in float64; the model itself runs in float32
            sigma = sigmas[0] * x.new_ones([x.shape[0]])
            gm(x, sigma, **extra_args)
            for seed in range(3):
                v = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
                v = v / v.norm()
                h = 1e-2 * float(x.norm())
                plus, minus = (float(gm.score((x64 + d * h * v).float(), sigma, **extra_args).detach()) for d in (1, -1))
                found.append((float((gm.grad.double() * v).sum()), (plus - minus) / (2 * h)))
        return x

    model, clip, m, pos = patched(name, end_percent=0.0)
    run(m, pos, encode(clip, ""), sampler=comfy.samplers.KSAMPLER(probe), steps=4)
    assert len(found) == 3
    scale = max(abs(fd) for _, fd in found)
    assert scale > 0, "S does not depend on x"
    for autograd, fd in found:
        assert abs(autograd - fd) <= 0.05 * scale, found


def test_rasg_objective_gradient_points_into_the_hole():
    """S rises when the prompt's logits rise inside the hole: d(−BCE(A−1, M))/dA > 0 in the hole, < 0 outside."""
    target = painta.InpaintTarget(hole_mask()[0], (1, 2), 77)
    rec = rasg.ScoreRecorder(target, None)
    a = torch.zeros(1, 16, 2, requires_grad=True)
    rec.logits.append(((4, 4), a))
    (g,) = torch.autograd.grad(rec.objective(), a)
    hole = target.hole((4, 4), "cpu")
    assert (g[0, hole] > 0).all() and (g[0, ~hole] < 0).all()


# ------------------------------------------------------------------ errors

def test_bad_inputs_give_clear_errors():
    model, clip, _ = load("sd15")
    neg = encode(clip, "")
    with pytest.raises(ValueError, match="PAIntA.*no tokens"):
        patched("sd15", text="")
    with pytest.raises(ValueError, match="PAIntA.*no hole"):
        patched("sd15", mask=torch.zeros(1, SIZE, SIZE))
    _, _, m, pos = patched("sd15", mask=hole_mask(h=SIZE // 2))
    with pytest.raises(ValueError, match="PAIntA.*mask is 64×32"):
        run(m, pos, neg)
    _, _, m, pos = patched("sd15")
    with pytest.raises(ValueError, match="PAIntA.*not an inpainting model.*Set Latent Noise Mask"):
        run(m, pos, neg, noise_mask=False)
    with pytest.raises(ValueError, match="RASG.*Sleight · PAIntA"):
        run(model, neg, neg, sampler=SleightRASG.execute(0.1).result[0])


def test_auto_layers_are_the_paper_levels_or_the_nearest():
    """SDXL's two transformer levels are 1/2 and 1/4 of the latent: auto takes them all; the one-level tiny SD1.5
    has only the latent-size level, the nearest to the paper's: auto takes it instead of failing."""
    for name in ("sdxl", "sd15"):
        model, _, _ = load(name)
        selfs = [layer.block for layer in families.layers(model, 512, 512) if layer.kind == "self"]
        assert painta.paper_blocks(model, "test") == selfs, name


def test_rasg_runs_under_inference_mode_as_the_server_samples():
    """ComfyUI's server loads models and runs every node under torch.inference_mode(): RASG's gradient must still
    flow (weights and inference tensors such as the inpainting denoise mask are cloned), and give the same result."""
    model, clip, m, pos = patched("sd15_inpaint")
    neg = encode(clip, "")
    expected = run(m, pos, neg, sampler=rasg.ksampler(eta=0.1), steps=3)
    with torch.inference_mode():
        model_i, clip_i, _ = fresh("sd15_inpaint")
        m_i, pos_i = SleightPAIntA.execute(model_i, clip_i, PROMPT, hole_mask(), "", 0.5, painta.CUSTOM, "*").result
        neg_i = encode(clip_i, "")
        run(m_i, pos_i, neg_i, steps=2)  # one PAIntA model feeding a plain KSampler first, as a workflow may
        got = run(m_i, pos_i, neg_i, sampler=rasg.ksampler(eta=0.1), steps=3)
    assert torch.equal(got, expected)
