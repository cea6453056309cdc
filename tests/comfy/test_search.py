"""SleightNoiseSearch on real ComfyUI sampling: plain-sampling equalities, formulas, ordering, determinism,
CLIP-vision verifiers (a real ComfyUI ClipVisionModel at toy size with seeded weights), errors, every architecture."""
import json
import math

import pytest
import torch

import tiny_models
from sleight.nodes.search import SleightNoiseSearch
from sleight.samplers import search, verifiers
from tinyrun import ARCH_MODELS, encode, latent_for, load

STEPS = 2
DEFAULTS = dict(cfg=3.0, seed=11, mode="random", budget=1, batch_size=1, top_k=1, verifier="self_consistency",
                early_percent=0.4, cosine=0.95, neighbours=4, branches=2, branch_start_percent=0.5,
                renoise_steps=1, denoise_steps=2)


def setup(name="sd15", steps=STEPS):
    import comfy.samplers

    model, clip, vae = load(name)
    pos, neg = encode(clip, "a red circle at the top left"), encode(clip, "")
    sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "normal", steps).cpu()
    return model, pos, neg, vae, sigmas


def plain(model, pos, neg, sigmas, seed, cfg=3.0, sampler="euler"):
    """What SamplerCustom (add_noise on, noise_seed=seed) returns."""
    import comfy.sample
    import comfy.samplers

    lat = latent_for(model)
    noise = comfy.sample.prepare_noise(lat, seed)
    return comfy.sample.sample_custom(model, noise, cfg, comfy.samplers.ksampler(sampler), sigmas, pos, neg, lat,
                                      disable_pbar=True, seed=seed)


def run(model, pos, neg, sigmas, sampler="euler", **kw):
    import comfy.samplers

    args = {**DEFAULTS, **kw}
    return SleightNoiseSearch.execute(model, pos, neg, {"samples": torch.zeros(1, 4, 8, 8)},
                                      comfy.samplers.ksampler(sampler), sigmas, **args).result


# ---------------------------------------------------------------- formulas on random tensors

def test_zero_order_neighbours_keep_norm_and_cosine():
    pivot = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    for lam in (0.95, 0.5, 0.0):
        n = search.sphere_neighbours(pivot, 5, lam, torch.Generator().manual_seed(1))
        assert n.shape == (5, 4, 8, 8)
        flat, p = n.reshape(5, -1).double(), pivot.reshape(1, -1).double()
        torch.testing.assert_close(flat.norm(dim=1), p.norm().expand(5), rtol=1e-6, atol=0)
        torch.testing.assert_close(torch.nn.functional.cosine_similarity(flat, p), torch.full((5,), lam, dtype=torch.float64),
                                   rtol=0, atol=1e-6)
        assert not torch.allclose(flat[0], flat[1])          # different directions
    again = search.sphere_neighbours(pivot, 5, 0.95, torch.Generator().manual_seed(1))
    assert torch.equal(again, search.sphere_neighbours(pivot, 5, 0.95, torch.Generator().manual_seed(1)))


def test_renoise_is_the_forward_process_marginal_for_eps_and_flow():
    sd15, _, _, _, _ = setup("sd15")
    sd3, _, _, _, _ = setup("sd3")
    x, eps = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    eps_ms, flow_ms = sd15.get_model_object("model_sampling"), sd3.get_model_object("model_sampling")
    # EPS (k-diffusion x = x0 + σ ε): x_b = x_a + √(σ_b² − σ_a²) ε
    torch.testing.assert_close(search.renoise(eps_ms, x, 0.9, 2.5, eps), x + math.sqrt(2.5 ** 2 - 0.9 ** 2) * eps)
    # flow (x = (1−t) x0 + t ε): x_b = r x_a + √(t_b² − r² t_a²) ε with r = (1−t_b)/(1−t_a)
    r = (1 - 0.7) / (1 - 0.4)
    torch.testing.assert_close(search.renoise(flow_ms, x, 0.4, 0.7, eps), r * x + math.sqrt(0.7 ** 2 - r * r * 0.4 ** 2) * eps)


def test_rank_average_is_the_mean_rank():
    m = torch.tensor([[0.9, 0.1], [0.5, 0.5], [0.1, 0.9], [0.5, 0.2]])
    # ranks in [0,1]: col0 -> .1:0, .5,.5: 1.5/3, .9:1 ; col1 -> .1:0, .2:1/3, .5:2/3, .9:1
    expect = torch.tensor([(1 + 0) / 2, (0.5 + 2 / 3) / 2, (0 + 1) / 2, (0.5 + 1 / 3) / 2], dtype=torch.float64)
    torch.testing.assert_close(verifiers.rank_average(m), expect)
    torch.testing.assert_close(verifiers.rank_average(m[:, :1]), m[:, 0].double())      # one verifier: raw scores


# ---------------------------------------------------------------- equal to plain sampling

def test_budget_one_is_plain_sampling_bit_for_bit():
    model, pos, neg, _, sigmas = setup()
    ref = plain(model, pos, neg, sigmas, seed=11, sampler="euler_ancestral")    # its step noise comes from the seed too
    for mode in ("random", "zero_order"):
        best, top, scores, noise = run(model, pos, neg, sigmas, sampler="euler_ancestral", mode=mode)
        assert torch.equal(best["samples"], ref) and torch.equal(top["samples"], ref)
        assert json.loads(scores)["best_seed"] == 11 and noise.seed == 11


def test_paths_with_one_branch_and_no_renoise_is_plain_sampling_bit_for_bit():
    model, pos, neg, _, sigmas = setup(steps=4)
    ref = plain(model, pos, neg, sigmas, seed=11)
    for start, back in ((0.5, 1), (0.0, 2)):
        best, *_ = run(model, pos, neg, sigmas, mode="paths", branches=1, renoise_steps=0, denoise_steps=back,
                       branch_start_percent=start, early_percent=0.0)
        assert torch.equal(best["samples"], ref), (start, back)


def test_random_candidates_are_their_seeds_and_top_k_is_sorted():
    model, pos, neg, _, sigmas = setup()
    _, top, scores, _ = run(model, pos, neg, sigmas, budget=3, top_k=3, batch_size=1)
    report = json.loads(scores)
    ranked = [c["score"] for c in report["top"]]
    assert ranked == sorted(ranked, reverse=True) and len(report["candidates"]) == 3
    for row, cand in enumerate(report["top"]):           # batch 1: each candidate is exactly its seed's sample
        assert torch.equal(top["samples"][row:row + 1], plain(model, pos, neg, sigmas, seed=cand["seed"]))
    # the self-consistency score is the formula on the sample and its early x0
    assert all(0.0 < c["scores"]["self_consistency_latent"] <= 1.0 + 1e-9 for c in report["candidates"])
    _, batched, bscores, _ = run(model, pos, neg, sigmas, budget=3, top_k=3, batch_size=3)
    by_seed = {c["seed"]: row for row, c in enumerate(json.loads(bscores)["top"])}
    for row, cand in enumerate(report["top"]):           # one batch of 3: the same samples up to rounding
        b = by_seed[cand["seed"]]
        torch.testing.assert_close(batched["samples"][b:b + 1], top["samples"][row:row + 1], rtol=1e-3, atol=1e-3)


def test_self_consistency_score_matches_the_formula():
    import comfy.sample
    import comfy.samplers

    model, pos, neg, _, sigmas = setup()
    _, _, scores, _ = run(model, pos, neg, sigmas, early_percent=0.0)
    x0s = []
    lat = latent_for(model)
    final = comfy.sample.sample_custom(model, comfy.sample.prepare_noise(lat, 11), 3.0, comfy.samplers.ksampler("euler"),
                                       sigmas, pos, neg, lat, callback=lambda i, x0, x, t: x0s.append(x0.clone()),
                                       disable_pbar=True, seed=11)
    early = model.model.process_latent_out(x0s[0])
    expect = torch.nn.functional.cosine_similarity(early.reshape(1, -1).double(), final.reshape(1, -1).double())
    assert json.loads(scores)["top"][0]["score"] == pytest.approx(float(expect), abs=1e-12)


# ---------------------------------------------------------------- the algorithms' structure

def test_zero_order_moves_on_the_sphere_and_is_deterministic():
    model, pos, neg, _, sigmas = setup(steps=2)
    out = run(model, pos, neg, sigmas, mode="zero_order", budget=7, neighbours=3, batch_size=4, top_k=7, early_percent=0.0)
    report = json.loads(out[2])
    cands = report["candidates"]
    assert len(cands) == 7 and report["model_steps"] == 7 * 2
    assert cands[0]["parent"] is None and [c["parent"] for c in cands[1:4]] == [0, 0, 0]
    score = {c["id"]: c["score"] for c in cands}
    best_first = max(cands[1:4], key=lambda c: (c["score"], -c["id"]))
    if best_first["score"] > score[0]:      # moved: round 1 are the winner's neighbours
        assert [c["parent"] for c in cands[4:]] == [best_first["id"]] * 3
    else:                                   # no improvement: a fresh pivot with the next seed
        assert cands[4]["seed"] == 12 and cands[4]["parent"] is None
    again = run(model, pos, neg, sigmas, mode="zero_order", budget=7, neighbours=3, batch_size=4, top_k=7, early_percent=0.0)
    assert torch.equal(again[1]["samples"], out[1]["samples"]) and again[2] == out[2]
    noises = out[3].generate_noise(None)
    assert noises.shape == (1, 4, 8, 8)


def test_paths_branch_renoise_and_prune():
    model, pos, neg, _, sigmas = setup(steps=4)
    best, top, scores, _ = run(model, pos, neg, sigmas, mode="paths", budget=2, branches=2, renoise_steps=1,
                               denoise_steps=2, branch_start_percent=0.5, top_k=4, batch_size=4)
    report = json.loads(scores)
    assert top["samples"].shape[0] == 4 and torch.equal(best["samples"], top["samples"][:1])
    ranked = [c["score"] for c in report["top"]]
    assert ranked == sorted(ranked, reverse=True)
    assert not torch.equal(best["samples"], plain(model, pos, neg, sigmas, seed=11))      # re-noising changed it
    k0 = search.first_step_at(model.get_model_object("model_sampling"), sigmas, 0.5)
    expect_steps, k = 2 * k0, k0
    while k < 4:
        lo, hi = k - 1, min(k - 1 + 2, 4)
        expect_steps, k = expect_steps + 4 * (hi - lo), hi
    assert report["model_steps"] == expect_steps
    again = run(model, pos, neg, sigmas, mode="paths", budget=2, branches=2, renoise_steps=1, denoise_steps=2,
                branch_start_percent=0.5, top_k=4, batch_size=2)
    torch.testing.assert_close(again[1]["samples"], top["samples"], rtol=1e-3, atol=1e-3)   # batching only


# ---------------------------------------------------------------- CLIP-vision verifiers (real class, toy weights)

def test_reference_verifier_finds_the_reference_and_ensemble_ranks():
    model, pos, neg, vae, sigmas = setup(steps=2)
    cv = tiny_models.clip_vision()
    target = plain(model, pos, neg, sigmas, seed=13)
    reference = vae.decode(target)
    best, top, scores, noise = run(model, pos, neg, sigmas, budget=4, top_k=4, batch_size=2, verifier="reference",
                                   clip_vision=cv, vae=vae, reference_image=reference)
    report = json.loads(scores)
    assert report["best_seed"] == 13 and report["top"][0]["score"] == pytest.approx(1.0, abs=1e-5)
    torch.testing.assert_close(best["samples"], target, rtol=1e-3, atol=1e-3)     # batch of 2 vs 1: rounding only
    _, _, escores, _ = run(model, pos, neg, sigmas, budget=4, top_k=4, batch_size=2, verifier="ensemble",
                           clip_vision=cv, vae=vae, reference_image=reference)
    e = json.loads(escores)
    assert e["verifiers"] == ["self_consistency_latent", "self_consistency_clip", "reference_clip"]
    raw = torch.tensor([[c["scores"][n] for n in e["verifiers"]] for c in e["candidates"]], dtype=torch.float64)
    torch.testing.assert_close(torch.tensor([c["score"] for c in e["candidates"]], dtype=torch.float64),
                               verifiers.rank_average(raw))
    _, _, cscores, _ = run(model, pos, neg, sigmas, budget=2, top_k=2, batch_size=2, clip_vision=cv, vae=vae)
    assert json.loads(cscores)["verifiers"] == ["self_consistency_clip"]


# ---------------------------------------------------------------- hygiene

def test_no_leak_and_interrupt():
    import comfy.model_management as mm

    model, pos, neg, _, sigmas = setup(steps=2)
    options = repr(model.model_options)
    ref = plain(model, pos, neg, sigmas, seed=5)
    mm.interrupt_current_processing(True)
    try:
        with pytest.raises(mm.InterruptProcessingException):
            run(model, pos, neg, sigmas, budget=3, mode="paths", branches=2, renoise_steps=0, denoise_steps=1)
    finally:
        mm.interrupt_current_processing(False)
    run(model, pos, neg, sigmas, budget=2, batch_size=2)
    assert repr(model.model_options) == options
    assert torch.equal(plain(model, pos, neg, sigmas, seed=5), ref)


def test_clear_errors():
    model, pos, neg, _, sigmas = setup(steps=4)
    import comfy.samplers

    with pytest.raises(ValueError, match="Sleight · Noise search: the latent has a batch of 2"):
        SleightNoiseSearch.execute(model, pos, neg, {"samples": torch.zeros(2, 4, 8, 8)}, comfy.samplers.ksampler("euler"),
                                   sigmas, **DEFAULTS)
    with pytest.raises(ValueError, match="Sleight · Noise search: the reference verifier needs clip_vision"):
        run(model, pos, neg, sigmas, verifier="reference")
    with pytest.raises(ValueError, match="Sleight · Noise search: the ensemble .* connect clip_vision"):
        run(model, pos, neg, sigmas, verifier="ensemble")
    with pytest.raises(ValueError, match="Sleight · Noise search: denoise_steps \\(1\\) must exceed renoise_steps"):
        run(model, pos, neg, sigmas, mode="paths", renoise_steps=1, denoise_steps=1)
    with pytest.raises(ValueError, match="Sleight · Noise search: with self-consistency the first branching"):
        run(model, pos, neg, sigmas, mode="paths", branch_start_percent=0.0, early_percent=0.9)


@pytest.mark.parametrize("name", ARCH_MODELS)
def test_every_architecture(name):
    model, pos, neg, _, sigmas = setup(name, steps=2)
    cfg = tiny_models.default_cfg(name)
    options = repr(model.model_options)
    ref = plain(model, pos, neg, sigmas, seed=11, cfg=cfg)
    best, *_ = run(model, pos, neg, sigmas, cfg=cfg, mode="paths", branches=1, renoise_steps=0, denoise_steps=1,
                   branch_start_percent=0.3, early_percent=0.0)
    assert torch.equal(best["samples"], ref)                    # x-space chaining exact on EPS and flow models
    best, top, scores, _ = run(model, pos, neg, sigmas, cfg=cfg, budget=2, batch_size=2, top_k=2)
    seeds = [c["seed"] for c in json.loads(scores)["top"]]
    assert top["samples"].shape == (2, *ref.shape[1:]) and torch.isfinite(top["samples"]).all()
    torch.testing.assert_close(top["samples"][seeds.index(11):seeds.index(11) + 1], ref, rtol=1e-3, atol=1e-3)
    assert repr(model.model_options) == options
