"""Training batches are a pure function of (seed, step), and offset noise only adds a per-channel constant."""
import argparse

import pytest

import torch

from sleight.shapes import world


def _args(**over):
    base = dict(seed=0, sizes=[64], batch=6, dropout=0.1, high_noise=0.5, offset_noise=0.0)
    return argparse.Namespace(**{**base, **over})


def test_batches_repeat_and_offset_noise_adds_a_constant_per_image_and_channel():
    from sleight.shapes import train

    scenes = world.sample_scenes(8, seed=3)
    plain, again = train.batch(5, _args(), scenes), train.batch(5, _args(), scenes)
    assert all(torch.equal(a, b) for a, b in zip(plain, again))
    assert not torch.equal(plain[4], train.batch(6, _args(), scenes)[4])

    offset = train.batch(5, _args(offset_noise=0.3), scenes)
    assert all(torch.equal(a, b) for a, b in zip(plain[:4], offset[:4]))  # same images, captions, timesteps
    shift = offset[4] - plain[4]
    per_channel = shift.mean(dim=(2, 3), keepdim=True)
    assert torch.allclose(shift, per_channel.expand_as(shift), atol=1e-6)
    assert 0.1 < per_channel.std() / 0.3 < 2.5  # ~N(0, 0.3²) over 24 draws


def test_sign_mask_covers_exactly_the_latents_a_sign_paints_and_only_where_letters_are_drawable():
    from sleight.shapes import train

    signed = [s for s in world.sample_scenes(40, seed=4, sign_p=1.0) if s.sign and s.background != "black"]
    scenes = signed[:6] + world.sample_scenes(2, seed=5, sign_p=0.0)  # a black glyph on black would not show
    bare = [world.Scene(s.background, s.shapes, None, s.striped) for s in scenes]
    painted = (world.render(scenes, 128) - world.render(bare, 128)).abs().amax(dim=1, keepdim=True)
    sign_latents = torch.nn.functional.max_pool2d(painted, 8) > 0
    assert sign_latents[:6].flatten(1).any(dim=1).all() and not sign_latents[6:].any()
    assert torch.equal(train.sign_mask(scenes, 128), sign_latents)
    assert not train.sign_mask(scenes, 64).any()


def test_objective_weights_the_signs_and_high_noise_as_asked():
    from sleight.shapes import train

    gen = torch.Generator().manual_seed(0)
    error = torch.rand(3, 4, 16, 16, generator=gen)
    sigma2 = torch.tensor([0.5, 8.0, 200.0])
    signs = torch.zeros(3, 1, 16, 16, dtype=torch.bool)
    signs[:, :, 2:6, 10:14] = True
    plain = error.mean()
    assert torch.equal(train.objective(error, sigma2), plain)
    assert torch.equal(train.objective(error, sigma2, signs), plain)  # weight 1, no σ²: the plain ε-MSE

    def direct(per_latent):  # the weighted mean, written out
        return sum(float(error[b, :, y, x].sum()) * per_latent(b, y, x) for b in range(3) for y in range(16)
                   for x in range(16)) / error.numel()

    def on(b, y, x):
        return bool(signs[b, 0, y, x])

    clamp = lambda v, hi: min(max(v, 1.0), hi)  # noqa: E731
    s2 = sigma2.tolist()
    expected = direct(lambda b, y, x: 4.0 if on(b, y, x) else 1.0)
    assert train.objective(error, sigma2, signs, 4.0) == pytest.approx(expected, rel=1e-5)
    expected = direct(lambda b, y, x: 4.0 * clamp(s2[b], 25.0) if on(b, y, x) else 1.0)
    assert train.objective(error, sigma2, signs, 4.0, sign_x0_max=25.0) == pytest.approx(expected, rel=1e-5)
    expected = direct(lambda b, y, x: (2.0 * clamp(s2[b], 25.0) if on(b, y, x) else 1.0) * clamp(s2[b], 10.0))
    got = train.objective(error, sigma2, signs, 2.0, x0_weight_max=10.0, sign_x0_max=25.0)
    assert got == pytest.approx(expected, rel=1e-5)


def test_describe_counts_the_curriculum_first_stage():
    from sleight.shapes import train

    assert train.describe({"step": 960, "samples": 30720}) == "960 steps (30 720 samples)"
    stage2 = {"step": 960, "samples": 30720, "init": {"step": 2471, "samples": 79072}}
    assert train.describe(stage2) == "2471 + 960 steps (109 792 samples)"


def test_learning_rate_warms_up_then_cools_down_linearly_to_zero_at_max_steps():
    from sleight.shapes import train

    plain = argparse.Namespace(warmup=100, cooldown_from=None, max_steps=None)
    assert [train.lr_factor(n, 5000 + n, plain) for n in (0, 49, 99, 500)] == [0.01, 0.5, 1.0, 1.0]
    cool = argparse.Namespace(warmup=100, cooldown_from=1000, max_steps=1400)
    assert [train.lr_factor(500, s, cool) for s in (999, 1000, 1100, 1399, 1400)] == [1.0, 1.0, 0.75, 0.0025, 0.0]
    assert train.lr_factor(49, 1200, cool) == 0.25  # a resumed cool-down still warms its fresh optimizer up
    with pytest.raises(SystemExit):
        train.main(["--cooldown-from", "10", "--max-steps", "10"])


def test_a_diverging_run_stops_without_saving_so_the_last_save_stands(tmp_path):
    from sleight.shapes import train

    assert not train.diverged(0.018, 0.0075, 5.0)  # a re-heat from a cooled state: about 2.5×
    assert train.diverged(0.04, 0.0075, 5.0) and train.diverged(float("nan"), 0.0075, 5.0)
    assert not train.diverged(1e9, 0.0075, 0.0) and not train.diverged(1e9, None, 5.0)
    run = tmp_path / "run"
    with pytest.raises(SystemExit, match="diverged at step"):
        train.main(["--run-dir", str(run), "--fresh", "--max-steps", "20", "--batch", "2", "--captions", "4",
                    "--sizes", "64", "--save-minutes", "60", "--warmup", "1", "--lr", "1000"])
    assert not (run / "state.pt").exists() and not (run / train.CHECKPOINT.name).exists()
    assert "diverged at step" in (run / "train.log").read_text()


def test_grow_keeps_micro_blocks_in_place_and_starts_the_new_level_as_average_then_upsample():
    import torch.nn.functional as F

    from sleight.shapes import train

    micro = train.build_model(seed=1, arch="micro").diffusion_model
    with torch.no_grad():  # build_model zeroes the residual branches' last layers: make them count
        for name, p in micro.named_parameters():
            if name.endswith(("out_layers.3.weight", "proj_out.weight", "out.2.weight")):
                p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(len(name))) * 0.02)
    two = train.build_model(seed=0, arch="two-level").diffusion_model
    two.load_state_dict(train.grow(micro.state_dict(), two.state_dict()))
    assert (train.arch_of(micro.state_dict()), train.arch_of(two.state_dict())) == ("micro", "two-level")

    g = torch.Generator().manual_seed(2)
    x, ctx = torch.randn(2, 4, 16, 16, generator=g), torch.randn(2, 77, 768, generator=g)
    t = torch.tensor([100.0, 800.0])
    seen = {}

    def keep_h1(module, args, out):
        seen["h1"] = out

    def new_level(module, args, out):
        seen["level"] = out
        return seen["h1"] if seen.get("replace") else out

    two.input_blocks[1][-1].register_forward_hook(keep_h1)  # blocks run layer by layer
    two.output_blocks[1][-1].register_forward_hook(new_level)
    with torch.no_grad():
        grown = two(x, t, context=ctx)
        expect = F.interpolate(F.avg_pool2d(seen["h1"], 2), scale_factor=2, mode="nearest")
        assert torch.allclose(seen["level"], expect, atol=1e-5)
        seen["replace"] = True  # the new level handing on h1 exactly: micro's function, bit for bit in fp32
        assert torch.allclose(two(x, t, context=ctx), micro(x, t, context=ctx), atol=1e-5)
        assert not torch.allclose(grown, micro(x, t, context=ctx), atol=1e-3)  # the average does lose detail


def test_a_grown_curriculum_stage_counts_every_earlier_stage_and_loads_as_sd15(tmp_path):
    import comfy.sd

    from sleight.shapes import train

    def stage(name, *extra):
        train.main(["--run-dir", str(tmp_path / name), "--max-steps", "1", "--batch", "2", "--captions", "4",
                    "--sizes", "64", "--save-minutes", "60", *extra])
        return tmp_path / name

    one = stage("one", "--simple")
    two = stage("two", "--init-from", str(one / "state.pt"))
    three = stage("three", "--init-from", str(two / "state.pt"), "--arch", "two-level")
    weights, meta = train.read_checkpoint(three / train.CHECKPOINT.name)
    assert train.arch_of(weights) == "two-level"
    assert meta["init"]["step"] == 2 and train.describe(meta) == "2 + 1 steps (6 samples)"
    patcher = comfy.sd.load_checkpoint_guess_config(str(three / train.CHECKPOINT.name), output_vae=False,
                                                     output_clip=False)[0]
    assert type(patcher.model.model_config).__name__ == "SD15"
    with pytest.raises(SystemExit, match="micro"):
        stage("two", "--resume", "--arch", "two-level")
    # --resume with nothing to resume in its folder is an --init-from start, not a resume of the source
    again = stage("again", "--resume", "--init-from", str(one / "state.pt"))
    assert train.read_checkpoint(again / train.CHECKPOINT.name)[1]["init"]["step"] == 1


def test_grounding_tokens_name_each_shape_and_its_cell():
    from sleight.shapes import train

    clip = train.load_clip()
    scene = world.Scene("yellow", (world.Shape("star", "blue", "top", "small"),
                                   world.Shape("star", "blue", "left", "large"),
                                   world.Shape("square", "purple", "bottom right", "small")),
                        world.Sign("C", "bottom left"))
    ids = [t for t, _ in clip.tokenize(scene.caption)["l"][0]]
    words = clip.tokenizer.clip_l.tokenizer.decode
    found = train.grounding_tokens(clip, [scene])[0]
    assert [(words([ids[i] for i in pos]), cell) for pos, cell in found] == [
        ("blue star", "top"), ("blue star", "left"), ("purple square", "bottom right")]
    assert found[0][0] != found[1][0]  # the same words twice: each shape its own occurrence
    targets, weights = train.grounding_targets([found, found], [False, True], 8, 8)
    assert torch.equal(weights[1], torch.zeros(77)) and not targets[1].any()  # a dropped caption grounds nothing
    assert weights[0].sum() == 6 and set(weights[0].nonzero().flatten().tolist()) == {
        i for pos, _ in found for i in pos}
    top = targets[0, found[0][0][0]].view(8, 8)
    assert top[:3, 3:5].all() and top.sum() == 6  # the top cell: rows 0-2, columns 3-4 of an 8x8 latent


def test_grounding_loss_is_the_token_loss_written_out():
    from sleight.shapes import train

    g = torch.Generator().manual_seed(0)
    probs = torch.randn(2, 3, 16, 5, generator=g).softmax(-1)
    targets = (torch.rand(2, 5, 16, generator=g) > 0.6).float()
    weights = torch.tensor([[1.0, 0, 1, 0, 0], [0, 0, 0, 1, 1]])
    terms = [(1 - float((probs[b, h, :, t] * targets[b, t]).sum() / probs[b, h, :, t].sum())) ** 2
             for b in range(2) for h in range(3) for t in range(5) if weights[b, t]]
    assert float(train.grounding_loss(probs, targets, weights)) == pytest.approx(sum(terms) / len(terms), rel=1e-5)
    inside = torch.zeros_like(probs)
    inside[..., :8, :] = probs[..., :8, :]
    assert float(train.grounding_loss(inside, (torch.arange(16) < 8).float().expand(2, 5, 16), weights)) == pytest.approx(0.0, abs=1e-6)


def test_attention_recorder_keeps_the_unets_output():
    from sleight.shapes import train

    weights, _ = train.read_checkpoint()  # the committed model: its cross-attention counts
    unet = train.build_model(seed=1, arch=train.arch_of(weights)).diffusion_model
    unet.load_state_dict({k: v.float() for k, v in weights.items()})
    g = torch.Generator().manual_seed(2)
    x, ctx, t = torch.randn(2, 4, 16, 16, generator=g), torch.randn(2, 77, 768, generator=g), torch.tensor([9.0, 700])
    recorder = train.AttentionRecorder()
    blocks = train.cross_attention_blocks(unet)
    with torch.no_grad():
        plain = unet(x, t, context=ctx)
        patched = unet(x, t, context=ctx, transformer_options=recorder.options(blocks))
        other = unet(x, t, context=torch.randn(ctx.shape, generator=g))  # the text does reach the output
    assert len(recorder.probs) == len(blocks) >= 1
    assert all(p.shape[2:] == (256, 77) and torch.allclose(p.sum(-1), torch.ones(())) for p in recorder.probs)
    assert torch.allclose(patched, plain, atol=1e-5) and not torch.allclose(other, plain, atol=1e-3)


def test_the_grounding_loss_reaches_the_cross_attention_and_only_when_asked(tmp_path):
    from sleight.shapes import train

    def run(name, weight):
        out = tmp_path / name
        train.main(["--run-dir", str(out), "--fresh", "--max-steps", "3", "--batch", "2", "--captions", "8",
                    "--sizes", "64", "128", "--save-minutes", "60", "--threads", "1", "--ground-weight", str(weight)])
        return train.read_checkpoint(out / train.CHECKPOINT.name)

    (plain, meta), (again, _), (grounded, grounded_meta) = run("a", 0), run("b", 0), run("c", 1.0)
    assert meta["ground_weight"] == 0 and grounded_meta["ground_weight"] == 1.0
    assert all(torch.equal(plain[k], again[k]) for k in plain)  # seeded: the same run twice is the same
    queries = [k for k in plain if "attn2.to_q" in k]
    assert queries and all(not torch.equal(plain[k], grounded[k]) for k in queries)
