"""The attention router on real ComfyUI with tiny models of every architecture."""
import pytest
import torch

from sleight.attention_patches.core import families, router
from tinyrun import ARCH_MODELS, Probe, encode, load, sample


def conds(clip, pos="a red circle on a blue background", neg="a green square"):
    return encode(clip, pos), encode(clip, neg)


@pytest.mark.parametrize("name", ARCH_MODELS)
def test_router_without_effects_is_bit_identical(name):
    model, clip, _ = load(name)
    pos, neg = conds(clip)
    base = sample(model, pos, neg)
    patched = model.clone()
    router.install(patched)
    assert torch.equal(sample(patched, pos, neg), base)
    idle = model.clone()
    probe = Probe(where=lambda call: False)      # sees every call, applies to none
    router.install(idle, probe)
    assert torch.equal(sample(idle, pos, neg), base)
    assert probe.calls, "the override never ran"


@pytest.mark.parametrize("name", ARCH_MODELS)
def test_normalised_path_matches_backend_and_scaling_changes_output(name):
    model, clip, _ = load(name)
    pos, neg = conds(clip)
    base = sample(model, pos, neg)
    through = model.clone()
    router.install(through, Probe())               # every call goes through the B,H,L,D path and back
    torch.testing.assert_close(sample(through, pos, neg), base, rtol=1e-5, atol=1e-5)
    scaled = model.clone()
    router.install(scaled, Probe(scale=0.5))
    assert not torch.allclose(sample(scaled, pos, neg), base, atol=1e-3)


@pytest.mark.parametrize("name", ARCH_MODELS + ["sd35", "sd15_layout", "sdxl_layout"])
def test_block_ids_match_the_architecture_in_forward_order(name):
    model, clip, _ = load(name)
    probe = Probe()
    patched = model.clone()
    router.install(patched, probe)
    pos, neg = conds(clip)
    sample(patched, pos, neg, steps=1, size=64)
    first = probe.forwards()[0]
    seen = [(c.block, c.kind) for c in first]
    expected = [(layer.block, layer.kind) for layer in families.layers(model, 64, 64)]
    assert seen == expected
    for c, layer in zip(first, families.layers(model, 64, 64)):
        assert c.img.stop - c.img.start == layer.image_tokens == c.grid[0] * c.grid[1]
        assert c.q.shape[1] == c.heads == layer.heads and c.q.shape[-1] == layer.head_dim
    if name == "sd15_layout":
        blocks = sorted({b for b, _ in seen})
        assert blocks == sorted([f"input.{i}.0" for i in (1, 2, 4, 5, 7, 8)] + ["middle.0.0"]
                                + [f"output.{i}.0" for i in range(3, 12)])
    if name == "sdxl_layout":
        want = ([f"input.{i}.{j}" for i in (4, 5) for j in range(2)] + [f"input.{i}.{j}" for i in (7, 8) for j in range(10)]
                + [f"middle.0.{j}" for j in range(10)] + [f"output.{i}.{j}" for i in (0, 1, 2) for j in range(10)]
                + [f"output.{i}.{j}" for i in (3, 4, 5) for j in range(2)])
        assert [b for b, k in seen if k == "cross"] == want      # the 70 cross-attention blocks, forward order
    if families.detect(model).key != "unet":
        txt = first[0].txt
        assert txt.stop - txt.start == first[0].forward.txt_len and first[0].kind == "joint"


def _rows_per_forward(probe):
    return [(c[0].forward.rows, c[0].forward.cond_or_uncond, c[0].forward.batch) for c in probe.forwards()]


@pytest.mark.parametrize("name", ["sd15", "sd3", "flux_dev_narrow"])
def test_rows_by_role_follow_the_guider(name):
    model, clip, _ = load(name)
    pos, neg = conds(clip)

    def run(positive, negative, cfg, batch):
        probe = Probe()
        m = model.clone()
        router.install(m, probe)
        sample(m, positive, negative, cfg=cfg, steps=1, batch=batch)
        rows = {}
        for r, _, _ in _rows_per_forward(probe):
            for role, idx in r.items():
                rows.setdefault(role, []).append(len(idx))
        return probe, rows

    _, rows = run(pos, neg, 3.0, 1)
    assert {k: sum(v) for k, v in rows.items()} == {"cond": 1, "uncond": 1}
    _, rows = run(pos, neg, 1.0, 1)                # cfg 1: ComfyUI skips the uncond
    assert {k: sum(v) for k, v in rows.items()} == {"cond": 1}
    _, rows = run(pos, neg, 3.0, 2)
    assert {k: sum(v) for k, v in rows.items()} == {"cond": 2, "uncond": 2}
    two = pos + encode(clip, "a yellow star at the top")    # ConditioningCombine: two positive entries
    _, rows = run(two, neg, 3.0, 2)
    assert {k: sum(v) for k, v in rows.items()} == {"cond": 4, "uncond": 2}


@pytest.mark.parametrize("name", ["sd15", "flux_dev_narrow"])
def test_roles_are_semantic_not_positional(name):
    """Swapping the prompts swaps what the 'cond' rows see: the role comes from the guider, not the row order."""
    model, clip, _ = load(name)
    a, b = conds(clip)

    def text_keys(positive, negative):
        probe = Probe()
        m = model.clone()
        router.install(m, probe)
        sample(m, positive, negative, cfg=3.0, steps=1)
        out = {}
        for fwd in probe.forwards():
            c = next(c for c in fwd if c.kind in ("cross", "joint"))
            for role, rows in c.rows.items():
                out[role] = c.k[rows][:, :, c.txt]
        return out

    first, swapped = text_keys(a, b), text_keys(b, a)
    assert torch.equal(first["cond"], swapped["uncond"]) and torch.equal(first["uncond"], swapped["cond"])
    assert not torch.equal(first["cond"], first["uncond"])


@pytest.mark.parametrize("name", ["sd15", "sd3", "flux_dev_narrow"])
def test_a_previous_override_still_runs(name):
    model, clip, _ = load(name)
    pos, neg = conds(clip)
    seen = []

    def other_pack(func, *args, **kwargs):        # e.g. a sage-attention node installed before ours
        seen.append(1)
        return func(*args, **kwargs) * 0.9

    m = model.clone()
    m.model_options["transformer_options"]["optimized_attention_override"] = other_pack
    only_other = sample(m, pos, neg)
    calls_alone = len(seen)
    both = m.clone()
    router.install(both, Probe())
    seen.clear()
    torch.testing.assert_close(sample(both, pos, neg), only_other, rtol=1e-5, atol=1e-5)
    assert len(seen) == calls_alone > 0
    assert not torch.allclose(only_other, sample(model, pos, neg), atol=1e-3)


@pytest.mark.parametrize("name", ARCH_MODELS)
def test_original_model_untouched_and_no_upstream_leak(name):
    model, clip, _ = load(name)
    pos, neg = conds(clip)
    before_options = repr(model.model_options)
    base = sample(model, pos, neg)
    first = model.clone()
    a = Probe(scale=0.8)
    router.install(first, a)
    second = first.clone()
    b = Probe(scale=0.5)
    router.install(second, b)
    assert router.current_router(first).effects == (a,)
    assert router.current_router(second).effects == (a, b)
    out_first, out_second = sample(first, pos, neg), sample(second, pos, neg)
    assert not torch.allclose(out_first, out_second, atol=1e-4)
    assert repr(model.model_options) == before_options
    assert torch.equal(sample(model, pos, neg), base)


def test_unsupported_model_fails_at_patch_time():
    import types

    fake = types.SimpleNamespace(model=types.SimpleNamespace(diffusion_model=torch.nn.Linear(2, 2)))
    with pytest.raises(ValueError, match="not supported. Sleight supports SD1.5"):
        families.detect(fake, "Sleight · Test")


def test_inspect_node_lists_every_layer():
    from sleight.nodes.utils import SleightInspectAttention

    model, _, _ = load("sdxl")
    out = SleightInspectAttention.execute(model, 1024, 768)
    text = out.result[0]
    layers = families.layers(model, 1024, 768)
    assert len(text.splitlines()) == len(layers) + 2
    assert "input.4.0" in text and "cross" in text
    first = layers[0]
    assert first.grid == (48, 64)           # input.4 sits at 1/2 of the 96×128 latent
