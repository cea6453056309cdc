"""DiT prompt routing: text K/V of chosen joint blocks from a routed prompt's lockstep side pass."""
import pytest
import torch

from sleight.attention_patches import textkv
from sleight.attention_patches.core import router, runstate, schedule
from sleight.samplers import routing
from tinyrun import Probe, encode, load, sample

DITS = ["sd3", "sd35", "flux_dev_narrow", "flux_schnell_narrow"]
MAIN, ROUTED, NEG = "a red circle on a blue background", "the word HELLO on a sign", "blurry"


def routed_model(model, clip, blocks, window=schedule.Window(), roles=("cond",), routed=ROUTED):
    m = model.clone()
    routing.install_text_kv(m, encode(clip, routed), blocks, window, roles)
    return m


def cfg_of(name):
    return 3.0


@pytest.mark.parametrize("name", DITS)
def test_routing_the_main_prompt_is_bit_identical(name):
    model, clip, _ = load(name)
    pos, neg = encode(clip, MAIN), encode(clip, NEG)
    base = sample(model, pos, neg, cfg=cfg_of(name))
    blocks = {c.block for c in _first_forward(model, clip) if c.kind == "joint"}
    same = routed_model(model, clip, blocks, routed=MAIN)
    assert torch.equal(sample(same, pos, neg, cfg=cfg_of(name)), base)


def _first_forward(model, clip):
    probe = Probe()
    m = model.clone()
    router.install(m, probe)
    sample(m, encode(clip, MAIN), encode(clip, NEG), steps=1)
    return probe.forwards()[0]


@pytest.mark.parametrize("name", ["sd3", "flux_dev_narrow"])
def test_only_chosen_blocks_and_rows_get_the_routed_text(name):
    model, clip, _ = load(name)
    blocks = sorted({c.block for c in _first_forward(model, clip) if c.kind == "joint"})
    chosen = blocks[-1]
    m = routed_model(model, clip, {chosen})
    probe = Probe()                      # order 90: sees each call after the swap
    router.install(m, probe)
    sample(m, encode(clip, MAIN), encode(clip, NEG), cfg=3.0, steps=2)
    joint = [c for c in probe.ran if c.kind == "joint"]
    side_k = {(c.sigma, c.block): c.k[c.rows[textkv.ROUTE_KEY]][:, :, c.txt]
              for c in joint if textkv.ROUTE_KEY in c.rows}
    seen = [c for c in joint if (c.sigma, c.block) in side_k and set(c.rows) - {textkv.ROUTE_KEY}]
    assert {"cond", "uncond"} <= {role for c in seen for role in c.rows}, "main rows not observed"
    for c in seen:
        routed = side_k[(c.sigma, c.block)]
        for role, idx in c.rows.items():
            if role != textkv.ROUTE_KEY and idx and c.k.shape[2] - routed.shape[2] == c.img.stop - c.img.start:
                got = c.k[idx][:, :, : routed.shape[2]]
                if c.block == chosen and role == "cond":
                    assert torch.equal(got, routed.to(got)), (c.block, role)
                else:
                    assert not torch.equal(got, routed.to(got)), (c.block, role)


@pytest.mark.parametrize("name", ["sd3", "flux_dev_narrow"])
def test_window_keeps_early_steps_identical_and_routing_changes_output(name):
    model, clip, _ = load(name)
    pos, neg = encode(clip, MAIN), encode(clip, NEG)
    blocks = {c.block for c in _first_forward(model, clip) if c.kind == "joint"}

    def trace(m):
        xs = []
        sample(m, pos, neg, cfg=3.0, steps=6, callback=lambda step, x0, x, total: xs.append(x0.clone()))
        return xs

    plain = trace(model)
    late = trace(routed_model(model, clip, blocks, schedule.Window(0.5, 1.0)))
    assert torch.equal(plain[0], late[0]) and not torch.equal(plain[-1], late[-1])


@pytest.mark.parametrize("name", DITS)
def test_runs_on_every_dit_and_leaves_the_model_alone(name):
    model, clip, _ = load(name)
    pos, neg = encode(clip, MAIN), encode(clip, NEG)
    before = repr(model.model_options)
    base = sample(model, pos, neg, cfg=3.0)
    blocks = {c.block for c in _first_forward(model, clip) if c.kind == "joint"}
    m = routed_model(model, clip, blocks, roles=("cond", "uncond"))
    out = sample(m, pos, neg, cfg=3.0)
    assert torch.isfinite(out).all() and not torch.allclose(out, base, atol=1e-4)
    assert repr(model.model_options) == before and torch.equal(sample(model, pos, neg, cfg=3.0), base)
    effect = router.current_router(m).effects[0]
    assert runstate.RUN_KEY not in m.model_options["transformer_options"], "the per-step K/V live for one run"
    assert not hasattr(effect, "cache"), "no per-run state on the long-lived effect"


def test_routed_prompt_of_another_length_on_flux():
    model, clip, _ = load("flux_dev_narrow")
    pos, neg = encode(clip, MAIN), encode(clip, NEG)
    long = " ".join(["a tall green tree"] * 30)          # > 77 tokens: two CLIP chunks, 154 text tokens
    m = routed_model(model, clip, {"double.0"}, routed=long)
    out = sample(m, pos, neg, cfg=3.0)
    assert torch.isfinite(out).all() and not torch.equal(out, sample(model, pos, neg, cfg=3.0))


@pytest.mark.parametrize("name", ["sd3", "flux_dev_narrow"])
def test_side_rows_join_the_main_forward(name):
    """One model forward per step carries cond, uncond and the routed side rows (no separate side pass)."""
    model, clip, _ = load(name)
    m = routed_model(model, clip, {"joint.0" if name == "sd3" else "double.0"})
    probe = Probe()
    router.install(m, probe)
    sample(m, encode(clip, MAIN), encode(clip, NEG), cfg=3.0, steps=2)
    forwards = probe.forwards()
    assert len(forwards) == 2
    assert all({"cond", "uncond", textkv.ROUTE_KEY} <= set(f[0].rows) for f in forwards)


@pytest.mark.parametrize("name", ["sd3", "flux_dev_narrow"])
def test_side_pass_alone_when_calc_cond_batch_is_bypassed(name):
    """A custom sampler_calc_cond_batch_function that never calls calc_cond_batch: the side runs alone first and
    the prediction is redone, so routing still happens and matches the batched result."""
    from sleight.attention_patches.core import comfy_compat

    model, clip, _ = load(name)
    pos, neg = encode(clip, MAIN), encode(clip, NEG)
    blocks = {"joint.0" if name == "sd3" else "double.0"}
    batched = sample(routed_model(model, clip, blocks), pos, neg, cfg=3.0)
    m = routed_model(model, clip, blocks)
    m.model_options["sampler_calc_cond_batch_function"] = lambda a: comfy_compat.calc_cond_batch_unwrapped(
        a["model"], a["conds"], a["input"], a["sigma"], a["model_options"])
    alone = sample(m, pos, neg, cfg=3.0)
    assert not torch.equal(alone, sample(model, pos, neg, cfg=3.0))
    assert torch.allclose(alone, batched, atol=1e-4, rtol=1e-4), (alone - batched).abs().max()
