"""Training batches are a pure function of (seed, step), and offset noise only adds a per-channel constant."""
import argparse

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


def test_describe_counts_the_curriculum_first_stage():
    from sleight.shapes import train

    assert train.describe({"step": 960, "samples": 30720}) == "960 steps (30 720 samples)"
    stage2 = {"step": 960, "samples": 30720, "init": {"step": 2471, "samples": 79072}}
    assert train.describe(stage2) == "2471 + 960 steps (109 792 samples)"
