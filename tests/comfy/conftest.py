"""In-process ComfyUI on CPU with the tiny real-architecture models."""
import pytest

import comfy_env

comfy_env.bootstrap()


@pytest.fixture(scope="session")
def tiny_models():
    import tiny_models

    tiny_models.ensure_models()
    return comfy_env.MODELS
