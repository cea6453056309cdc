"""Inversion and source trajectories: round trips on real ComfyUI with the tiny models, and the shared type."""
import pytest
import torch

import comfy.sample
import comfy.samplers
from sleight.nodes.inversion import SleightInvert, SleightSourceTrajectory
from sleight.samplers import inversion
from sleight.samplers.trajectory import SourceTrajectory
from tinyrun import encode, load

PROMPT = "a red circle on a blue background"

# (model, steps, denoise, fixed-point iterations, tolerance on max|error| / max|latent|).
# The tiny models have random weights, so their ODE is only well conditioned on the low-noise end of the
# schedule: there a fixed-point inversion step converges and the Euler round trip closes. Measured (CPU):
# sd15 1.3e-2 (plain DDIM 0.15), sd3 1.2e-4 (plain 2.8e-2), flux_dev_narrow 5.8e-2 at 2 steps with 2 iterations
# (6.6e-3 at 3 steps with 3; plain 0.16).
ROUND_TRIPS = [("sd15", 3, 0.05, 3, 0.05), ("sd3", 3, 0.2, 3, 0.01), ("flux_dev_narrow", 2, 0.1, 2, 0.1)]


def source_latent(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    lat = comfy.sample.fix_empty_latent_channels(model, torch.zeros(1, 4, 8, 8))
    return torch.randn(lat.shape, generator=g) * 0.5


def sample_back(model, cond, traj, sigmas):
    noise, latent = inversion.start_noise_and_latent(model, traj)
    return comfy.sample.sample_custom(model, noise, 1.0, comfy.samplers.ksampler("euler"), sigmas, cond, cond, latent,
                                      disable_pbar=True, seed=0)


@pytest.mark.parametrize("name,steps,denoise,fp,tol", ROUND_TRIPS)
def test_invert_then_sample_back_reproduces_the_source(name, steps, denoise, fp, tol):
    model, clip, _ = load(name)
    cond = encode(clip, PROMPT)
    lat = source_latent(model)
    sigmas = inversion.schedule_sigmas(model, steps, "normal", denoise)
    traj = SleightInvert.execute(model, {"samples": lat}, cond, steps, "normal", denoise, fp).result[0]
    assert traj.inverted and len(traj.latents) == steps + 1 and torch.equal(traj.sigmas, sigmas)
    assert torch.allclose(traj.latents[-1], model.model.process_latent_in(lat.clone()), atol=1e-6)
    err = (sample_back(model, cond, traj, sigmas) - lat).abs().max() / lat.abs().max()
    assert err <= tol, f"{name}: round-trip error {err:.3g} > {tol}"
    if name == "sd15":       # the fixed-point refinement is what closes the loop
        plain = inversion.invert(model, lat, cond, sigmas, 0)
        plain_err = (sample_back(model, cond, plain, sigmas) - lat).abs().max() / lat.abs().max()
        assert plain_err > 3 * err


def test_inverted_trajectory_answers_at_its_sigmas_and_between_them():
    model, clip, _ = load("sd15")
    sigmas = torch.tensor([2.0, 1.0, 0.0])
    lat = [torch.full((1, 4, 2, 2), v) for v in (2.0, 1.0, 0.0)]
    traj = SourceTrajectory(lat[-1], None, sigmas=sigmas, latents=lat)
    ms = model.model.model_sampling
    assert torch.equal(traj.at(ms, 1.0), lat[1])
    assert torch.allclose(traj.at(ms, 1.5, between=True), torch.full((1, 4, 2, 2), 1.5))
    with pytest.raises(ValueError, match="same steps"):
        traj.at(ms, 1.5)
    with pytest.raises(ValueError, match="same steps"):
        traj.at(ms, 3.0, between=True)


@pytest.mark.parametrize("name", ["sd15", "flux_dev_narrow"])
def test_renoised_trajectory_is_the_model_noise_scaling(name):
    model, clip, _ = load(name)
    lat = source_latent(model)
    traj = SleightSourceTrajectory.execute(model, {"samples": lat}, encode(clip, PROMPT), 5).result[0]
    assert not traj.inverted
    noise = comfy.sample.prepare_noise(lat, 5)
    ms = model.model.model_sampling
    s = torch.tensor([0.7])
    want = ms.noise_scaling(s, noise, model.model.process_latent_in(lat.clone()))
    assert torch.equal(traj.at(ms, 0.7), want)


def test_bad_inputs_name_the_node_and_the_fix():
    model, clip, _ = load("sd15")
    cond = encode(clip, PROMPT)
    two = {"samples": torch.zeros(2, 4, 8, 8)}
    with pytest.raises(ValueError, match="Sleight · Invert.*one source image"):
        SleightInvert.execute(model, two, cond, 3, "normal", 1.0, 0)
    with pytest.raises(ValueError, match="Sleight · Source trajectory.*Latent From Batch"):
        SleightSourceTrajectory.execute(model, two, cond, 0)
    with pytest.raises(ValueError, match="descending"):
        inversion.invert(model, torch.zeros(1, 4, 8, 8), cond, torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="fixed_point"):
        inversion.invert(model, torch.zeros(1, 4, 8, 8), cond, torch.tensor([1.0, 0.0]), -1)
