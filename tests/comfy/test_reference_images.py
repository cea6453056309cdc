"""Edit models' reference images (Qwen-Image-Edit, Flux.2, Flux Kontext): the extra image tokens a
ReferenceLatent / TextEncodeQwenImageEdit puts after the generated image in every joint attention call.

The adapter must keep them out of the image slice (so masks, grids and maps cover the generated image only) and
name them (`refs`), and Add-it uses them as its source on such models: the target attends to [K_ref ; γ·K_rest]
in its extended-attention layers instead of to a separate source row's keys (Add-it's extended attention with the
edit model's own source path), while the reference tokens' own queries attend plainly.
"""
import pytest
import torch

import node_helpers
from sleight.attention_patches.core import families, router
from sleight.nodes.insertion import SleightAddIt
from sleight.nodes.inversion import SleightSourceTrajectory
from tinyrun import Probe, encode, latent_for, load, sample

EDIT_MODELS = ["qwen_image", "flux2"]
PROMPT, SUBJECT = "a red circle and a cat on a blue background", "cat"


def with_reference(cond, latent):
    return node_helpers.conditioning_set_values(cond, {"reference_latents": [latent]}, append=True)


def reference(name):
    model, clip, _ = load(name)
    return sample(model, encode(clip, "a red circle"), encode(clip, ""), steps=2, seed=11)


@pytest.mark.parametrize("name", EDIT_MODELS)
def test_reference_tokens_follow_the_image_and_stay_out_of_its_slice(name):
    model, clip, _ = load(name)
    ref = reference(name)
    pos, neg = (with_reference(encode(clip, t), ref) for t in (PROMPT, ""))
    probe = Probe(where=lambda call: False)
    m = model.clone()
    router.install(m, probe)
    sample(m, pos, neg, steps=1)
    family = families.detect(model)
    gh, gw = family.image_grid(tuple(latent_for(model).shape[-2:]))
    for call in probe.forwards()[0]:
        n_txt, n_img = call.txt.stop, gh * gw
        assert call.img == slice(n_txt, n_txt + n_img) and call.grid == (gh, gw)
        assert call.refs == slice(n_txt + n_img, call.q.shape[2]) and call.q.shape[2] - n_txt == 2 * n_img
    plain = Probe(where=lambda call: False)
    m = model.clone()
    router.install(m, plain)
    sample(m, encode(clip, PROMPT), encode(clip, ""), steps=1)
    assert all(call.refs is None for call in plain.forwards()[0])


def addit_on_references(name, gamma):
    model, clip, _ = load(name)
    ref = reference(name)
    traj = SleightSourceTrajectory.execute(model, {"samples": ref}, encode(clip, "a red circle"), 3).result[0]
    m, pos = SleightAddIt.execute(model, clip, traj, PROMPT, SUBJECT, gamma, 1.0, 1.0, 1.0, 1.0).result
    probe = Probe(where=lambda call: False)
    router.install(m, probe)
    neg = with_reference(encode(clip, ""), ref)
    out = sample(m, with_reference(pos, ref), neg, steps=3)
    plain = sample(model, with_reference(pos, ref), neg, steps=3)
    return out, plain, probe


@pytest.mark.parametrize("name", EDIT_MODELS)
def test_add_it_takes_its_source_from_the_reference_tokens(name):
    out, plain, probe = addit_on_references(name, 1.0)
    assert all(router.SOURCE_ROLE not in call.rows for call in probe.calls), "no separate source row runs"
    # γ = 1: [K_ref ; 1·K_rest] is the call's own keys in another order, so the same attention
    torch.testing.assert_close(out, plain, rtol=1e-4, atol=1e-4)
    scaled, plain, _ = addit_on_references(name, 1.2)
    assert not torch.allclose(scaled, plain, atol=1e-4)
