"""Every family at the size of its released models, on the meta device (shapes only): ComfyUI's own detection
reads the model back as itself, and Sleight's adapter claims it and lists its real layers. The tiny models shrink
sizes detection fixes; this is where detection itself is checked at the real sizes."""
import math

import pytest

import comfy.model_detection
import released_models
from sleight.attention_patches.core import families

NAMES = list(released_models.RELEASED)


@pytest.fixture(scope="module", params=NAMES)
def released(request):
    return request.param, released_models.meta_model(request.param)


def test_comfyui_detects_the_released_model_as_itself(released):
    name, base = released
    _, config_class, _, unet_config, _ = released_models.RELEASED[name]
    sd = base.diffusion_model.state_dict()
    real = [t for t in sd.values() if not t.is_meta]     # HunyuanVideo 1.5 builds one 3-row embedding on the CPU
    assert sum(t.numel() for t in real) < 2 ** 16, [t.shape for t in real]
    assert comfy.model_detection.detect_unet_config(sd, "") == unet_config
    assert type(comfy.model_detection.model_config_from_unet(sd, "")).__name__ == config_class


def test_the_family_adapter_claims_it_and_lists_its_layers(released):
    name, base = released
    _, _, key, _, count = released_models.RELEASED[name]
    family = families.detect(base)
    assert family.key == key
    latent = family.latent_size(1024, 1024)
    layers = family.layers(base.diffusion_model, latent)
    assert len(layers) == count
    assert len({(layer.block, layer.kind) for layer in layers}) == len(layers)
    assert all(layer.image_tokens == math.prod(layer.grid) for layer in layers)
    if family.patch > 1:     # DiTs: every layer with image tokens sees the whole patch grid (text refiners: none)
        assert {layer.grid for layer in layers if layer.kind != "text"} == {family.image_grid(latent)}
        assert all(layer.image_tokens == 0 for layer in layers if layer.kind == "text")


def test_the_families_page_is_generated_from_the_adapters():
    import families_doc

    assert families_doc.OUT.read_text() == families_doc.render(), \
        "docs/FAMILIES.md is stale: run .venv/bin/python scripts/families_doc.py"
