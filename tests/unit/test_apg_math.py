"""APG maths against a direct transcription of the paper's Algorithm 1 (random tensors, float64)."""
import pytest
import torch

from sleight.samplers import apg


def reference_algorithm1(cond, uncond, w, eta, r, beta, history):
    """Algorithm 1 written the plain way: running average, clip, project onto D_c, recombine."""
    diff = cond - uncond
    if beta != 0:
        history["avg"] = diff if history.get("avg") is None else diff + beta * history["avg"]
        diff = history["avg"]
    if r > 0:
        n = torch.sqrt((diff ** 2).sum(dim=tuple(range(1, diff.ndim)), keepdim=True))
        diff = diff * torch.minimum(torch.ones_like(n), r / n)
    flat_c = cond.flatten(1)
    coef = (diff.flatten(1) * flat_c).sum(1) / (flat_c * flat_c).sum(1)
    par = coef.view(-1, *[1] * (cond.ndim - 1)) * cond
    orth = diff - par
    return cond + (w - 1) * (orth + eta * par)


@pytest.mark.parametrize("shape", [(2, 4, 8, 8), (1, 16, 3, 6, 5)])   # image and video latents
@pytest.mark.parametrize("eta,beta,r", [(0.0, -0.5, 15.0), (0.3, 0.2, 2.0), (1.0, 0.0, 0.0)])
def test_matches_algorithm1_over_steps(shape, eta, beta, r):
    g = torch.Generator().manual_seed(0)
    buf, hist = apg.MomentumBuffer(beta), {}
    for _ in range(4):
        c = torch.randn(shape, generator=g, dtype=torch.float64) * 3
        u = torch.randn(shape, generator=g, dtype=torch.float64) * 3
        got = apg.apg_x0(c, u, 7.0, eta, r, buf)
        want = reference_algorithm1(c, u, 7.0, eta, r, beta, hist)
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_eta1_no_momentum_no_clip_is_plain_cfg():
    g = torch.Generator().manual_seed(1)
    c, u = torch.randn(2, 4, 16, 16, generator=g), torch.randn(2, 4, 16, 16, generator=g)
    got = apg.apg_x0(c, u, 5.5, eta=1.0, norm_threshold=0.0, momentum=apg.MomentumBuffer(0.0))
    torch.testing.assert_close(got, u + 5.5 * (c - u), rtol=1e-5, atol=1e-5)


def test_norm_is_per_sample_over_all_non_batch_dims():
    diff = torch.zeros(2, 4, 3, 3, dtype=torch.float64)
    diff[0] = 10.0          # norm 10*6 = 60 → clipped to 6
    diff[1] = 0.1           # norm 0.6 → untouched
    c = torch.zeros_like(diff)
    c[:, 0, 0, 0] = 1.0     # orthogonal to neither; use eta=1 to keep the whole clipped vector
    out = apg.apg_x0(c, c - diff, 2.0, eta=1.0, norm_threshold=6.0, momentum=None)
    got = out - c
    assert torch.allclose(apg.per_sample_norm(got).flatten(), torch.tensor([6.0, 0.6], dtype=torch.float64))


def test_projection_removes_parallel_part_when_eta_zero():
    g = torch.Generator().manual_seed(2)
    c = torch.randn(3, 4, 8, 8, generator=g, dtype=torch.float64)
    u = c * 0.5     # the guidance is exactly parallel to D_c → nothing survives at eta = 0
    out = apg.apg_x0(c, u, 9.0, eta=0.0, norm_threshold=0.0)
    torch.testing.assert_close(out, c)


def test_computes_in_float64_and_returns_input_dtype():
    g = torch.Generator().manual_seed(3)
    c, u = torch.randn(1, 4, 8, 8, generator=g), torch.randn(1, 4, 8, 8, generator=g)
    out = apg.apg_x0(c.half(), u.half(), 4.0)
    assert out.dtype == torch.float16
    ref = reference_algorithm1(c.half().double(), u.half().double(), 4.0, 0.0, 15.0, 0.0, {})
    torch.testing.assert_close(out.double(), ref.half().double(), rtol=1e-3, atol=1e-3)


def test_momentum_resets_when_sigma_rises():
    run = apg.APGRun(apg.APGSettings())
    run.buffer(0).update(torch.ones(1, 1, 1, 1))
    run.observe(10.0)
    run.observe(5.0)
    assert run.buffer(0).running is not None
    run.observe(12.0)      # a new schedule began
    assert run.buffer(0).running is None


def test_threshold_scaling_is_identity_at_sdxl_1024():
    s = apg.APGSettings(norm_threshold=15.0, scale_threshold=True)
    assert s.threshold_for(torch.zeros(1, 4, 128, 128)) == pytest.approx(15.0)
    assert s.threshold_for(torch.zeros(1, 4, 64, 64)) == pytest.approx(7.5)       # SD1.5 at 512²
    assert s.threshold_for(torch.zeros(1, 16, 128, 128)) == pytest.approx(30.0)    # Flux at 1024²


def test_video_latents_take_one_norm_over_channels_and_frames():
    """On a video latent (B, C, T, H, W) the paper's ‖ΔD‖ spans the whole latent: one scale per sample. ComfyUI's
    own APG node takes its norms and projections over the last three dims, (T, H, W) per channel; the two differ
    as soon as the channels' norms do."""
    g = torch.Generator().manual_seed(3)
    c = torch.randn(1, 16, 3, 4, 4, generator=g, dtype=torch.float64)
    diff = torch.randn(1, 16, 3, 4, 4, generator=g, dtype=torch.float64)
    diff[:, :4] *= 20.0                                            # four loud channels
    got = apg.apg_x0(c, c - diff, 2.0, eta=1.0, norm_threshold=10.0, momentum=None) - c
    whole = diff * min(1.0, 10.0 / float(diff.norm()))             # one norm over C, T, H, W
    torch.testing.assert_close(got, whole, rtol=1e-12, atol=1e-12)
    per_channel = diff * torch.clamp(10.0 / diff.norm(p=2, dim=[-1, -2, -3], keepdim=True), max=1.0)   # core APG
    assert not torch.allclose(got, per_channel)
