"""The hand-set TAESD is an exact 8x average pool and its inverse, loaded through ComfyUI's own VAE class."""
import pytest
import torch

from sleight.shapes import analytic_taesd, evaluate, world


@pytest.fixture(scope="module")
def vae():
    import comfy.sd

    vae = comfy.sd.VAE(sd=analytic_taesd.state_dict())
    vae.throw_exception_if_invalid()
    return vae


@pytest.fixture(scope="module")
def renders():
    scenes = world.sample_scenes(4, seed=11, sign_p=0.5, striped_p=0.5)
    return scenes, world.render(scenes, 128)


def test_stored_weights_are_exact_in_fp16():
    full = analytic_taesd.build().state_dict()
    stored = analytic_taesd.state_dict()
    assert all(torch.equal(stored[k].float(), full[k]) for k in full)


def test_latents_are_block_means_and_round_trip(vae, renders):
    _, images = renders
    with torch.inference_mode():
        raw = vae.encode(images.permute(0, 2, 3, 1))
        latents = raw * analytic_taesd.SD15_SCALE  # what the SD1.5 UNet sees (latent_format.process_in)
        assert raw.shape == (4, 4, 16, 16)
        assert (latents - analytic_taesd.encode(images)).abs().max() < 1e-4
        decoded = vae.decode(raw).permute(0, 3, 1, 2)
        assert (decoded - analytic_taesd.decode(latents).clamp(0, 1)).abs().max() < 1e-4
        again = vae.encode(decoded.permute(0, 2, 3, 1)) * analytic_taesd.SD15_SCALE
        assert (again - latents).abs().max() < 1e-4  # decode then encode is the identity on latents
    mosaic = analytic_taesd.decode(analytic_taesd.encode(images))
    assert evaluate.read(decoded, block=8) == evaluate.read(mosaic, block=8)


def test_out_of_range_latents_decode_linearly_then_clamp(vae):
    latents = torch.tensor([-3.0, -1.0, -0.25, 0.0, 0.5, 1.0, 3.0]).view(1, 1, 1, 7).expand(1, 4, 7, 7).clone()
    latents[:, 3] = 0
    with torch.inference_mode():
        out = vae.decode(latents / analytic_taesd.SD15_SCALE).permute(0, 3, 1, 2)
    expect = analytic_taesd.decode(latents).clamp(0, 1)
    assert (out - expect).abs().max() < 1e-4


def test_shapes_checkpoint_loads_as_sd15_with_this_vae(tmp_path):
    import comfy.sd

    from sleight.shapes import train

    model = train.build_model(seed=0)
    weights = {k: v.clone() for k, v in model.diffusion_model.state_dict().items()}
    path = tmp_path / "shapes.safetensors"
    train.save_checkpoint(path, model, weights, {"step": 3, "samples": 96, "train_s": 1})
    patcher, clip, vae = comfy.sd.load_checkpoint_guess_config(str(path), output_vae=True, output_clip=False)[:3]
    assert type(patcher.model.model_config).__name__ == "SD15" and clip is None
    loaded, meta = train.read_checkpoint(path)
    assert meta["step"] == 3 and all(torch.equal(loaded[k], weights[k].half().float()) for k in weights)
    images = world.render(world.sample_scenes(2, seed=1), 64)
    with torch.inference_mode():
        decoded = vae.decode(vae.encode(images.permute(0, 2, 3, 1))).permute(0, 3, 1, 2)
    assert (decoded - analytic_taesd.decode(analytic_taesd.encode(images))).abs().max() < 1e-4
