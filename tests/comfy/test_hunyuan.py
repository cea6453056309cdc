"""HunyuanImage 2.1 and HunyuanVideo 1.5 (one adapter): the token layout the adapter reports for every attention call,
checked against the tensors ComfyUI's own model computes (hooks on its modules); where the token finders put a
prompt's words when the model adds glyph tokens beside it; what the tricks do over the image-first token volume.
(The battery of tests/comfy/test_families.py runs on both models; Wan's tests cover what video shares.)

The model's blocks add into their streams in place, so every hook keeps a copy.
"""
import copy

import pytest
import torch

import comfy.clip_vision
import comfy.sample
from sleight.attention_patches import extended, keymask, painta
from sleight.attention_patches.core import families, router, schedule, tokens
from sleight.nodes.designedit import SleightDesignEditRemove
from sleight.nodes.insertion import SleightAddIt, SleightAddItMask
from sleight.samplers import addit
from sleight.samplers.trajectory import SourceTrajectory
from tinyrun import FRAMES, Probe, encode, latent_for, load

MODELS = ["hunyuan_image", "hunyuan_video15"]
SIZE = {"hunyuan_image": 128, "hunyuan_video15": 64}     # 4×4 image tokens (per frame)
PROMPT, GLYPHS = "a red circle on a blue background", 'a sign that says "hello" on a wall'


class Hooks:
    """Copies of what the model's own modules compute in one run: name -> list (one entry per forward)."""

    def __init__(self, dm):
        self.seen, self.handles = {}, []
        for i, block in enumerate(dm.double_blocks):
            self.out(block.img_attn.qkv, f"double.{i}.img_qkv")
            self.out(block.txt_attn.qkv, f"double.{i}.txt_qkv")
            self.out(block, f"double.{i}.out")
            self.handles.append(block.register_forward_pre_hook(self._keep_kwargs(f"double.{i}.in"), with_kwargs=True))
        for i, block in enumerate(dm.single_blocks):
            self.handles.append(block.register_forward_pre_hook(self._keep_args(f"single.{i}.in")))
        for i, block in enumerate(dm.txt_in.individual_token_refiner.blocks):
            self.out(block.self_attn.qkv, f"txt_in.{i}.qkv")
        for name in ("txt_in", "byt5_in", "vision_in"):
            if getattr(dm, name, None) is not None:
                self.out(getattr(dm, name), name)

    def out(self, module, name):
        def hook(mod, args, output):
            self.seen.setdefault(name, []).append(tuple(t.clone() for t in output) if isinstance(output, tuple)
                                                  else output.clone())
        self.handles.append(module.register_forward_hook(hook))

    def _keep_kwargs(self, name):
        return lambda mod, args, kwargs: self.seen.setdefault(name, []).append(
            {k: v.clone() for k, v in kwargs.items() if torch.is_tensor(v)})

    def _keep_args(self, name):
        return lambda mod, args: self.seen.setdefault(name, []).append(args[0].clone())

    def remove(self):
        for h in self.handles:
            h.remove()


def heads_v(qkv, heads):
    """The V of a fused qkv projection's output, as (B, H, L, D), the way the model splits it."""
    return qkv.view(qkv.shape[0], qkv.shape[1], 3, heads, -1).permute(2, 0, 3, 1, 4)[2]


def one_step(name, positive):
    """One Euler step at cfg 1 (the positive alone: one forward), with a router probe and the model's hooks."""
    model, _, _ = load(name)
    m = model.clone()
    probe = Probe(where=lambda call: False)
    router.install(m, probe)
    dm = m.model.diffusion_model
    hooks = Hooks(dm)
    latent = latent_for(m, size=SIZE[name], frames=FRAMES)
    try:
        comfy.sample.sample(m, comfy.sample.prepare_noise(latent, 0), 1, 1.0, "euler", "normal", positive, positive,
                            latent, disable_pbar=True, seed=0)
    finally:
        hooks.remove()
    (calls,) = probe.forwards()
    return dm, calls, hooks.seen


def with_values(conditioning, **values):
    return [[c, {**d, **values}] for c, d in conditioning]


def siglip_output(tokens=6, seed=0):
    """A CLIP_VISION_OUTPUT of SigLIP's shape (1152 wide), as HunyuanVideo15ImageToVideo passes it on."""
    out = comfy.clip_vision.Output()
    out.last_hidden_state = torch.randn(1, tokens, 1152, generator=torch.Generator().manual_seed(seed))
    return out


# ---------------------------------------------------------------- the layout of each call, against the model

@pytest.mark.parametrize("name", MODELS)
def test_refiner_then_joint_calls_image_first_as_the_model_builds_them(name):
    _, clip, _ = load(name)
    dm, calls, seen = one_step(name, encode(clip, PROMPT))
    family = families.detect(load(name)[0])
    assert family.image_first                                   # 0.3.75 builds the double blocks flipped_img_txt
    blocks = [c.block for c in calls]
    n_ref = len(dm.txt_in.individual_token_refiner.blocks)
    assert blocks[:n_ref] == [f"txt_in.{i}" for i in range(n_ref)]
    assert blocks[n_ref:] == [f"double.{i}" for i in range(len(dm.double_blocks))] + \
        [f"single.{i}" for i in range(len(dm.single_blocks))]
    for i, call in enumerate(calls[:n_ref]):                    # the refiner: the conditioning's tokens alone
        assert call.kind == "text"
        assert torch.equal(call.v, heads_v(seen[f"txt_in.{i}.qkv"][0], call.heads))
    grid = (2, 4, 4) if name == "hunyuan_video15" else (4, 4)   # 5 frames: 2 latent frames
    n_img = 2 * 16 if name == "hunyuan_video15" else 16
    for i in range(len(dm.double_blocks)):
        call = calls[n_ref + i]
        assert call.kind == "joint" and call.grid == grid and call.refs is None
        assert call.img == slice(0, n_img) and call.txt.start == call.img.stop
        assert torch.equal(call.v[:, :, call.img], heads_v(seen[f"double.{i}.img_qkv"][0], call.heads))
        assert torch.equal(call.v[:, :, call.txt], heads_v(seen[f"double.{i}.txt_qkv"][0], call.heads))
    last = f"double.{len(dm.double_blocks) - 1}.out"
    for i in range(len(dm.single_blocks)):                      # [image | text] of the last double block's streams
        call, x = calls[n_ref + len(dm.double_blocks) + i], seen[f"single.{i}.in"][0]
        assert x.shape[1] == call.q.shape[2]
        if i == 0:
            img_out, txt_out = seen[last][0]
            assert torch.equal(x[:, call.img], img_out) and torch.equal(x[:, call.txt], txt_out)


@pytest.mark.parametrize("name", MODELS)
def test_glyph_tokens_sit_beside_the_prompt_in_the_models_order(name):
    """byT5 tokens of quoted text: after the prompt on HunyuanImage 2.1, before it on HunyuanVideo 1.5; `prompt` is
    the refined conditioning, the rest of the text the byT5 mapper's output (each with its type embedding on 1.5)."""
    _, clip, _ = load(name)
    positive = encode(clip, GLYPHS)
    glyphs = positive[0][1]["conditioning_byt5small"].shape[1]
    dm, calls, seen = one_step(name, positive)
    call = next(c for c in calls if c.block == "double.0")
    txt = seen["double.0.in"][0]["txt"]
    prompt = slice(call.prompt.start - call.txt.start, call.prompt.stop - call.txt.start)
    rest = [i for i in range(txt.shape[1]) if not prompt.start <= i < prompt.stop]
    assert txt.shape[1] == call.txt.stop - call.txt.start == positive[0][0].shape[1] + glyphs
    assert len(rest) == glyphs and (rest[0] > prompt.start) == (name == "hunyuan_image")
    types = dm.cond_type_embedding.weight if dm.cond_type_embedding is not None else torch.zeros(3, txt.shape[-1])
    torch.testing.assert_close(txt[:, prompt], seen["txt_in"][0] + types[0], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(txt[:, rest], seen["byt5_in"][0] + types[1], rtol=1e-6, atol=1e-6)


def test_image_to_video_vision_tokens_lead_the_text():
    """HunyuanVideo 1.5 image to video: SigLIP's states, projected, before the glyph and prompt tokens."""
    name = "hunyuan_video15"
    _, clip, _ = load(name)
    positive = with_values(encode(clip, GLYPHS), clip_vision_output=siglip_output(6))
    dm, calls, seen = one_step(name, positive)
    call = next(c for c in calls if c.block == "double.1")
    glyphs = positive[0][1]["conditioning_byt5small"].shape[1]
    assert call.txt.stop - call.txt.start == 6 + glyphs + positive[0][0].shape[1]
    assert call.prompt.stop == call.txt.stop and call.img == slice(0, 2 * 16)
    txt = seen["double.0.in"][0]["txt"]
    types = dm.cond_type_embedding.weight
    torch.testing.assert_close(txt[:, :6], seen["vision_in"][0] + types[2], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(txt[:, 6:6 + glyphs], seen["byt5_in"][0] + types[1], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(txt[:, 6 + glyphs:], seen["txt_in"][0] + types[0], rtol=1e-6, atol=1e-6)


def test_reference_latent_tokens_are_prepended_and_left_out_of_the_image():
    """`ref_latent` (HunyuanImageToVideo's custom guidance): a clean frame's tokens before the generated ones. It
    goes through the model's patch embedding, which on 1.5 takes its whole 65-channel input (latent, image-to-video
    frames, mask); no 0.3.75 node makes one for 1.5 (the custom guidance is HunyuanVideo 1.0's), the layout is
    the class's own."""
    name = "hunyuan_video15"
    model, clip, _ = load(name)
    ref = torch.randn(1, 65, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    dm, calls, seen = one_step(name, with_values(encode(clip, PROMPT), ref_latent=ref))
    for i in range(len(dm.double_blocks)):
        call = next(c for c in calls if c.block == f"double.{i}")
        stream = heads_v(seen[f"double.{i}.img_qkv"][0], call.heads)     # reference + generated image tokens
        assert stream.shape[2] == 16 + 2 * 16 and call.img == slice(16, 48)
        assert torch.equal(call.v[:, :, call.img], stream[:, :, 16:])
        assert call.txt == slice(48, call.q.shape[2])


def test_text_first_layout_of_newer_comfyui_is_read_from_img_slice():
    """ComfyUI v0.14+ runs HunyuanVideo text first and names the single blocks' image part (reference images
    included) in transformer_options["img_slice"]; double blocks without flipped_img_txt are text first too."""
    name = "hunyuan_video15"
    _, clip, _ = load(name)
    _, calls, _ = one_step(name, encode(clip, PROMPT))
    fwd = calls[-1].forward
    family = fwd.family
    n_txt, n_img, n_ref = fwd.txt_len, fwd.image_tokens, 16
    total = n_txt + n_ref + n_img
    seen = family.describe(fwd, {"block_type": "single", "block_index": 0, "img_slice": [n_txt, total]}, total, total)
    assert (seen.img, seen.txt, seen.prompt) == (slice(n_txt + n_ref, total), slice(0, n_txt), slice(0, n_txt))
    newer = copy.copy(family)
    newer.image_first = False                                 # a double block built without flipped_img_txt
    seen = newer.describe(fwd, {"block_type": "double", "block_index": 0}, total, total)
    assert (seen.block, seen.img, seen.txt) == ("double.0", slice(n_txt + n_ref, total), slice(0, n_txt))


# ---------------------------------------------------------------- token finders beside glyph tokens

def first_difference(a, b):
    rows = (a != b).any(dim=-1).nonzero()
    return int(rows[0]) if len(rows) else None


@pytest.mark.parametrize("name", MODELS)
def test_token_finders_land_on_the_prompts_rows_beside_glyph_tokens(name):
    """HD-Painter's T and Add-it's subject weights count in the conditioning's own tokens (`call.prompt`, which the
    test above checks against the model): with glyph tokens after the prompt (HunyuanImage 2.1) or before it (1.5),
    the word they name is the conditioning row where that word changes it (a causal encoder's rows change from
    there on), placed where the call holds the conditioning."""
    model, clip, _ = load(name)
    family = families.detect(model)
    quoted = ', "hello"'

    def rows(prompt):
        return encode(clip, prompt + quoted)[0][0][0]

    def call_of(prompt):
        _, calls, _ = one_step(name, encode(clip, prompt + quoted))
        return next(c for c in calls if c.block == "double.0")

    call = call_of("a red hat")
    assert call.prompt != call.txt                             # glyph tokens share the text with the prompt
    shift = call.prompt.start - call.txt.start
    emb = rows("a red hat")
    target = painta.InpaintTarget(torch.ones(8, 8), tokens.prompt_positions(
        clip, "a red hat", quoted.strip(", "), family, emb.shape[0], "test"), emb.shape[0])
    assert target.tokens_in(call)[-1] == shift + first_difference(emb, rows("a red cap"))     # "hat"
    call, prompt = call_of("a red circle and a cat"), "a red circle and a cat" + quoted
    effect = extended.AddItAttention(1.0, {}, set(), set(), tokens.subject_positions(clip, prompt, "cat", family,
                                     "test"), (4, 4), tokens.token_count(clip, prompt))
    weights = effect._subject_weights(call, call.k.shape[2], 0)
    cat = first_difference(rows("a red circle and a cat"), rows("a red circle and a dog"))
    assert weights.nonzero().flatten().tolist() == [call.prompt.start + cat]


# ---------------------------------------------------------------- tricks over the image-first token volume

def test_key_mask_masks_the_same_keys_in_every_frame():
    """DesignEdit's key mask on video: one mask for all frames, on the cond rows' image keys only."""
    name = "hunyuan_video15"
    model, clip, _ = load(name)
    mask = torch.zeros(4, 4)
    mask[1:3, 2:] = 1
    before, after = Probe(), Probe()
    before.order = 25
    m = model.clone()
    for effect in (before, keymask.KeyMask(mask, schedule.StepWindow(0.0, 1.0)), after):
        router.install(m, effect)
    latent = latent_for(m)
    pos, neg = encode(clip, PROMPT), encode(clip, "")
    comfy.sample.sample(m, comfy.sample.prepare_noise(latent, 0), 2, 3.0, "euler", "normal", pos, neg, latent,
                        disable_pbar=True, seed=0)
    joint = [(b, a) for b, a in zip(before.ran, after.ran) if b.kind == "joint" and "cond" in b.rows]
    assert joint
    keep = 1 - mask.reshape(-1)
    for b, a in joint:
        assert b.grid == (2, 4, 4)
        cond = b.rows["cond"]
        want = b.k[cond][:, :, b.img] * keep.repeat(2).to(b.k)[None, None, :, None]
        assert torch.equal(a.k[cond][:, :, a.img], want)
        assert torch.equal(a.k[:, :, a.txt], b.k[:, :, b.txt])


def test_removal_keeps_every_frame_of_the_source_outside_the_mask():
    name = "hunyuan_video15"
    model, clip, _ = load(name)
    pos = encode(clip, "")
    g = torch.Generator().manual_seed(3)
    shape = latent_for(model).shape
    src = SourceTrajectory(torch.randn(shape, generator=g), pos, noise=torch.randn(shape, generator=g))
    box = torch.zeros(1, 64, 64)
    box[:, 16:48, 32:] = 1
    args = dict(dilation=0, blend_end=1.0)
    masked = SleightDesignEditRemove.execute(model, src, box, **args).result[0]
    plain = SleightDesignEditRemove.execute(model, src, box, mask_start=0.99, mask_end=0.99, **args).result[0]
    latent = latent_for(model)

    def run(m):
        return comfy.sample.sample(m, comfy.sample.prepare_noise(latent, 0), 3, 7.5, "euler", "normal", pos, pos,
                                   latent, disable_pbar=True, seed=0)

    out, other = run(masked), run(plain)
    outside = torch.ones(4, 4, dtype=torch.bool)
    outside[1:3, 2:] = False
    want = model.get_model_object("latent_format").process_out(src.clean.clone())
    torch.testing.assert_close(out[..., outside], want[..., outside], rtol=1e-5, atol=1e-5)
    for t in range(shape[2]):                              # key masking changes the hole of every frame
        assert not torch.allclose(out[:, :, t][..., ~outside], other[:, :, t][..., ~outside], atol=1e-4)


def test_addit_takes_one_mask_for_the_clip_from_the_image_tokens():
    """Add-it's subject maps on video are the frames' maps averaged over the image tokens (which come first
    here): one Otsu mask for the clip, blended into every frame; the mask node gives it at pixel size."""
    name = "hunyuan_video15"
    model, clip, _ = load(name)
    g = torch.Generator().manual_seed(5)
    shape = latent_for(model).shape
    src = SourceTrajectory(torch.randn(shape, generator=g), encode(clip, PROMPT), noise=torch.randn(shape, generator=g))
    m, pos = SleightAddIt.execute(model, clip, src, "a red circle and a cat on a blue background", "cat", 0.0, -1.0,
                                  0.5, 1.0, 1.0, dilation=0).result
    latent = latent_for(model)
    out = comfy.sample.sample(m, comfy.sample.prepare_noise(latent, 0), 6, 3.0, "euler", "normal", pos, encode(clip, ""),
                              latent, disable_pbar=True, seed=0)
    mask = getattr(out, addit.MASK_ATTR)["mask"]
    assert mask is not None and mask.shape == (1, 1, 4, 4)
    assert set(mask.unique().tolist()) == {0.0, 1.0}
    pixels = SleightAddItMask.execute(m, {"samples": out}).result[0]
    assert torch.equal(pixels[0], mask[0, 0].repeat_interleave(16, 0).repeat_interleave(16, 1))


def test_inpainting_tricks_are_refused_on_video_and_run_on_the_image_model():
    image, video = (families.detect(load(n)[0]) for n in MODELS)
    for trick in ("painta", "rasg"):
        with pytest.raises(ValueError, match="HunyuanVideo 1.5.*noise mask"):
            video.require(trick, "test")
        image.require(trick, "test")
    assert not video.inpaints(load("hunyuan_video15")[0].model)
    assert (image.downscale, image.patch, image.latent_size(128, 128, 33)) == (32, 1, (4, 4))
    assert (video.downscale, video.patch, video.latent_size(64, 64, 33)) == (16, 1, (9, 4, 4))
