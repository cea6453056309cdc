"""Z-Image / Lumina 2: the adapter's phases and token layout against what ComfyUI's NextDiT really does.

The model's own tensors are read with forward hooks on its modules (nothing of ComfyUI is replaced): each
attention call the router sees is the attention module running at that moment, the caption and image pads sit
where the adapter says, the joint sequence is the caption refiner's output followed by the noise refiner's.
"""
import pytest
import torch

import comfy.patcher_extension as pe
import comfy.sample
from sleight.attention_patches import keymask
from sleight.attention_patches.core import families, router, schedule
from sleight.nodes.prompt import SleightRareToFrequent
from test_families import A, B
from tinyrun import Probe, encode, latent_for, load


def one_step(model, positive, cfg=1.0):
    latent = latent_for(model)
    return comfy.sample.sample(model, comfy.sample.prepare_noise(latent, 0), 1, cfg, "euler", "normal", positive,
                               positive, latent, disable_pbar=True, seed=0)


def traced_forward(name, prompt=A):
    """One forward of the cond with a probe router: (family, the router's calls, the attention modules run in
    order as (module name, input x), {module name: output} of the embedders and refiner blocks)."""
    model, clip, _ = load(name)
    dm = model.model.diffusion_model
    seen, outputs, handles = [], {}, []
    for stack in ("context_refiner", "noise_refiner", "layers"):
        for i, block in enumerate(getattr(dm, stack)):
            handles.append(block.attention.register_forward_hook(
                lambda mod, args, out, n=f"{stack}.{i}": seen.append((n, args[0].detach()))))
            handles.append(block.register_forward_hook(
                lambda mod, args, out, n=f"{stack}.{i}": outputs.__setitem__(n, out.detach())))
    for name_ in ("x_embedder", "cap_embedder"):
        handles.append(getattr(dm, name_).register_forward_hook(
            lambda mod, args, out, n=name_: outputs.__setitem__(n, out.detach())))
    handles.append(dm.layers[0].register_forward_pre_hook(
        lambda mod, args: outputs.__setitem__("layers.0 input", args[0].detach())))
    probe = Probe(where=lambda call: False)
    m = model.clone()
    router.install(m, probe)
    try:
        one_step(m, encode(clip, prompt))
    finally:
        for h in handles:
            h.remove()
    return families.detect(model), probe.forwards()[0], seen, outputs


@pytest.mark.parametrize("name, label, pads", [("zimage", "Z-Image", True), ("lumina2", "Lumina 2", False)])
def test_phases_and_token_layout_are_the_models_own(name, label, pads):
    family, calls, seen, out = traced_forward(name)
    assert family.label == label
    assert [c.block for c in calls] == [n for n, _ in seen]             # one call per attention module, in order
    assert [c.q.shape[2] for c in calls] == [x.shape[1] for _, x in seen]
    kinds = {"context_refiner": "text", "noise_refiner": "self", "layers": "joint"}
    assert [c.kind for c in calls] == [kinds[n.split(".")[0]] for n, _ in seen]
    n_cap, n_img = out["cap_embedder"].shape[1], out["x_embedder"].shape[1]
    first = {c.kind: (c, x) for c, (_, x) in reversed(list(zip(calls, seen)))}
    text, (noise, x_noise), (joint, _) = first["text"][0], first["self"], first["joint"]
    cap_len = text.q.shape[2]
    assert cap_len == (-(-n_cap // 32) * 32 if pads else n_cap)         # Z-Image pads the caption to 32s
    assert text.txt == slice(0, cap_len) and text.img == slice(0, 0)
    # the noise refiner: the image tokens, then identical pad tokens (rows are normed and modulated one by one)
    assert noise.img == slice(0, n_img) and noise.grid[0] * noise.grid[1] == n_img
    tail = x_noise[:, n_img:]
    assert tail.shape[1] == ((-n_img) % 32 if pads else 0)
    assert torch.equal(tail, x_noise[:, n_img:n_img + 1].expand_as(tail))
    if pads:
        assert not torch.equal(x_noise[:, n_img - 1], x_noise[:, n_img])
    # the joint sequence is [caption refiner's output | noise refiner's output]
    last = family.refiners - 1
    stream = torch.cat([out[f"context_refiner.{last}"], out[f"noise_refiner.{last}"]], dim=1)
    assert joint.q.shape[2] == stream.shape[1]
    assert joint.txt == slice(0, cap_len) and joint.img == slice(cap_len, cap_len + n_img)
    assert torch.equal(out["layers.0 input"], stream)


def test_key_masks_scale_image_keys_and_never_the_pad_tokens():
    """DesignEdit's key mask (and every image mask) covers the real image tokens only."""
    model, clip, _ = load("zimage")
    m = model.clone()
    grid = families.detect(model).latent_size(64, 64)
    effect = keymask.KeyMask(torch.full(grid, 0.5), schedule.StepWindow(0.0, 1.0))
    probe = Probe(where=lambda call: call.kind in ("self", "joint"))
    router.install(m, effect)
    router.install(m, probe)
    one_step(m, encode(clip, A))
    checked = 0
    for before, after in zip([c for c in probe.calls if probe.where(c)], probe.ran):
        img = before.img
        torch.testing.assert_close(after.k[:, :, img], before.k[:, :, img] * 0.5)
        rest = torch.ones(before.k.shape[2], dtype=torch.bool)
        rest[img] = False
        assert rest.sum() > 0 and torch.equal(after.k[:, :, rest], before.k[:, :, rest])   # text and pads
        checked += 1
    assert checked == 2 + 3            # noise refiner blocks and joint layers


def test_rare_to_frequent_interpolates_the_caption():
    """R2F's interpolation (few-step models such as Z-Image-Turbo): at step 0 the model gets
    α·e_freq + (1−α)·e_rare, the shorter caption padded with its last token; later steps the rare prompt."""
    model, clip, _ = load("zimage")
    rare, freq = encode(clip, A), encode(clip, B)
    m = SleightRareToFrequent.execute(model, rare, freq, 1, "interpolate", -1.0, "auto", "0.3").result[0]
    router.install(m, Probe(where=lambda call: False))     # the adapter checks every call's layout on the way
    seen = []

    def spy(executor, x, t, c_concat=None, c_crossattn=None, control=None, transformer_options={}, **kwargs):
        if 0 in transformer_options.get("cond_or_uncond", []):
            seen.append(c_crossattn)
        return executor(x, t, c_concat, c_crossattn, control, transformer_options, **kwargs)

    m.add_wrapper_with_key(pe.WrappersMP.APPLY_MODEL, "test.spy", spy)
    latent = latent_for(m)
    out = comfy.sample.sample(m, comfy.sample.prepare_noise(latent, 0), 3, 2.0, "euler", "normal", rare,
                              encode(clip, ""), latent, disable_pbar=True, seed=0)
    a, b = rare[0][0], freq[0][0]
    n = max(a.shape[1], b.shape[1])
    a = torch.cat([a, a[:, -1:].expand(1, n - a.shape[1], -1)], 1)
    b = torch.cat([b, b[:, -1:].expand(1, n - b.shape[1], -1)], 1)
    assert a.shape != rare[0][0].shape or b.shape != freq[0][0].shape        # the prompts' lengths differ
    torch.testing.assert_close(seen[0], 0.3 * b + 0.7 * a)
    assert all(torch.equal(s, rare[0][0]) for s in seen[1:]) and len(seen) == 3
    plain = comfy.sample.sample(model, comfy.sample.prepare_noise(latent, 0), 3, 2.0, "euler", "normal", rare,
                                encode(clip, ""), latent, disable_pbar=True, seed=0)
    assert not torch.equal(out, plain)
