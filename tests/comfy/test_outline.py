"""A model file's structure without its weights (attention_patches/core/outline.py): the layers it gives equal the
layers of the model ComfyUI loads from the same file, for safetensors and pickled .ckpt files; bad files give a
clear error."""
import pytest
import torch

import comfy_env
import tiny_models
from sleight.attention_patches.core import families, outline
from tinyrun import load


@pytest.mark.parametrize("name", ["sd15", "sd3"])
def test_outline_has_the_layers_of_the_loaded_model(name):
    model, _, _ = load(name)
    path = comfy_env.MODELS / tiny_models.MODELS[name].files["checkpoint"]
    base = outline.outline(path)
    assert all(p.device.type == "meta" for p in base.diffusion_model.parameters())
    assert families.format_layers(base, 320, 192) == families.format_layers(model, 320, 192)
    assert outline.outline(path) is base                     # cached per file


def test_a_pickled_checkpoint_reads_the_same(tmp_path):
    import safetensors.torch

    src = comfy_env.MODELS / tiny_models.MODELS["sd15"].files["checkpoint"]
    ckpt = tmp_path / "tiny.ckpt"
    torch.save({"state_dict": safetensors.torch.load_file(src)}, ckpt)
    assert families.format_layers(outline.outline(ckpt), 512, 512) == \
        families.format_layers(outline.outline(src), 512, 512)


def test_bad_files_say_what_is_wrong(tmp_path):
    empty = tmp_path / "empty.safetensors"
    empty.touch()
    with pytest.raises(outline.OutlineError, match="cannot read the tensors of empty.safetensors"):
        outline.outline(empty)
    import safetensors.torch

    other = tmp_path / "other.safetensors"                    # tensors, but no diffusion model
    safetensors.torch.save_file({"encoder.conv_in.weight": torch.zeros(8, 3, 3, 3)}, other)
    with pytest.raises(outline.OutlineError, match="does not recognise other.safetensors"):
        outline.outline(other)
