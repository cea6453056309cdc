"""The tiny models load through ComfyUI's stock paths as the real architectures, and sample."""
import time

import pytest
import torch

import comfy.model_management
import comfy.utils
import tiny_models as tm
import tinyrun

# (kind, block index) -> transformer_blocks per SpatialTransformer; the layout models match real SD1.5 / SDXL.
SD15_MIN_BLOCKS = {("input", 1): 1, ("middle", 0): 1, ("output", 0): 1, ("output", 1): 1}
SD15_BLOCKS = {**{("input", i): 1 for i in (1, 2, 4, 5, 7, 8)}, ("middle", 0): 1,
               **{("output", i): 1 for i in range(3, 12)}}
SDXL_INPUT = {("input", 4): 2, ("input", 5): 2, ("input", 7): 10, ("input", 8): 10}
SDXL_MIN_BLOCKS = {**SDXL_INPUT, ("middle", 0): 1, **{("output", i): 1 for i in range(6)}}
SDXL_BLOCKS = {**SDXL_INPUT, ("middle", 0): 10, **{("output", i): 10 for i in range(3)},
               **{("output", i): 2 for i in range(3, 6)}}
EXPECTED_BLOCKS = {"sd15": SD15_MIN_BLOCKS, "sd15_inpaint": SD15_MIN_BLOCKS, "sd15_layout": SD15_BLOCKS,
                   "sdxl": SDXL_MIN_BLOCKS, "sdxl_layout": SDXL_BLOCKS}


@pytest.fixture(scope="module", params=list(tm.MODELS))
def loaded(request, tiny_models):
    """One model at a time (module scope + params makes pytest group the tests by model)."""
    name = request.param
    tinyrun.unload_all()     # the other modules' shared models: this one loads each model on its own (SDXL's ~5 GB)
    model, clip, vae = tm.load(name, tiny_models)
    yield tm.MODELS[name], model, clip, vae
    del model, clip, vae
    comfy.model_management.unload_all_models()     # sampling registered the model with ComfyUI's loaded models
    tinyrun.release()


def attention_layout(diffusion_model):
    """(kind, index) -> number of transformer blocks, for every SpatialTransformer of a UNet."""
    kinds = {"input_blocks": "input", "middle_block": "middle", "output_blocks": "output"}
    layout = {}
    for name, module in diffusion_model.named_modules():
        if type(module).__name__ == "SpatialTransformer":
            parts = name.split(".")
            index = 0 if parts[0] == "middle_block" else int(parts[1])
            layout[(kinds[parts[0]], index)] = len(module.transformer_blocks)
    return layout


def test_detected_as_real_architecture(loaded):
    spec, model, clip, vae = loaded
    if not spec.detected:       # ComfyUI's own detection still names the family of the file
        sd = comfy.utils.load_torch_file(str(tm.MODELS_DIR / spec.files["unet"]))
        assert tm.detected_family(sd) == spec.unet_config["image_model"]
    assert type(model.model.model_config).__name__ == spec.config_class
    assert type(model.model).__name__ == spec.model_class
    if spec.vae is not None:          # None: no VAE of the family is small enough (HunyuanImage 2.1's: 406 M)
        assert vae.latent_channels == spec.latent_channels
    assert model.get_model_object("latent_format").latent_channels == spec.latent_channels
    assert clip is not None and (vae is not None) == (spec.vae is not None)


def test_inpaint_flag(loaded):
    spec, model, _, _ = loaded
    assert bool(model.model.concat_keys) == spec.inpaint
    if spec.arch in ("sd15", "sdxl"):
        in_channels = model.model.diffusion_model.input_blocks[0][0].in_channels
        assert in_channels == (9 if spec.inpaint else 4)
        assert model.model.model_config.unet_config["in_channels"] == in_channels
    if spec.inpaint:
        assert model.model.concat_keys == ("mask", "masked_image")


def test_block_layout(loaded):
    spec, model, _, _ = loaded
    dm = model.model.diffusion_model
    if spec.arch == "sd3":
        assert len(dm.joint_blocks) == 2
    elif spec.arch == "flux":             # the stock files at the width 0.3.75 fixes, the narrow twins at the recipe's
        assert (len(dm.double_blocks), len(dm.single_blocks), dm.hidden_size) == (1, 1, spec.unet_config["hidden_size"])
    elif not spec.detected or spec.arch not in ("sd15", "sdxl"):   # DiTs: the recipe's sizes
        cfg = model.model.model_config.unet_config
        assert {k: cfg[k] for k in spec.unet_config} == spec.unet_config
        stacks = ("double_blocks", "single_blocks", "transformer_blocks", "layers", "double_stream_blocks",
                  "single_stream_blocks", "blocks")
        n = sum(len(getattr(dm, stack, ())) for stack in stacks)
        keys = ("depth", "depth_single_blocks", "num_layers", "num_single_layers") + \
            (("n_layers",) if hasattr(dm, "layers") else ())     # Chroma's n_layers: its guidance approximator's
        assert n == sum(spec.unet_config.get(k, 0) for k in keys)
    else:
        layout = attention_layout(dm)
        assert layout == EXPECTED_BLOCKS[spec.name]
        if spec.name == "sd15_layout":
            assert len(layout) == 16
        if spec.name == "sdxl_layout":
            assert sum(layout.values()) == 70


def test_one_step(loaded):
    spec, model, clip, vae = loaded
    with torch.inference_mode():
        cond = tm.encode(clip, "a red circle on a blue background")  # one encode: CLIP-G is slow on CPU
        latent = tm.sample(spec.name, model, clip, size=64, positive=cond, negative=cond)
        side = 64 // spec.downscale
        assert latent.shape[:2] == (1, spec.latent_channels) and latent.shape[-2:] == (side, side)
        assert torch.isfinite(latent).all()
        if vae is None:
            return
        image = vae.decode(latent)
    assert image.shape[-3:] == (64, 64, 3)
    assert torch.isfinite(image).all()


def test_cached_and_reproducible(tiny_models, tmp_path):
    t = time.perf_counter()
    assert tm.ensure_models(tiny_models) == []
    assert time.perf_counter() - t < 1.0
    # The same seed gives the same bytes: rebuild the cheapest model and compare with the recorded SHA-256.
    recorded = tm._read_stamp(tiny_models, "sd3")["files"]
    rebuilt = tm.build("sd3", tmp_path)["files"]
    assert rebuilt == recorded
