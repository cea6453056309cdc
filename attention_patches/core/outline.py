"""A model file's structure without its weights: what the block picker lists for a checkpoint or diffusion model.

The tensor names and shapes come from the file's header (safetensors) or its pickle index (.ckpt / .pt, opened
with mmap so no tensor is read); ComfyUI's own model_detection picks the model config from them, as its loaders
do, and the diffusion model is built on the meta device, which allocates nothing. A 12B model costs its module
tree (a few MB) and a second or two; the result is cached per file (path, size and modification time).
"""
import functools
import json
import os
import pickle
import struct

import torch

import comfy.model_detection
import comfy.utils

SAFETENSORS_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
                      "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
                      "U8": torch.uint8, "BOOL": torch.bool}
MAX_HEADER = 100 * 1024 * 1024      # safetensors caps its header at 100 MB


class OutlineError(ValueError):
    pass


def header_state_dict(path) -> dict:
    """{tensor name: meta tensor of its shape and dtype}, reading only the file's index."""
    try:
        return _index(path)
    except (OSError, ValueError, RuntimeError, struct.error, pickle.UnpicklingError) as e:
        raise OutlineError(f"cannot read the tensors of {os.path.basename(path)}: {e}") from None


def _index(path):
    if str(path).endswith(".safetensors"):
        with open(path, "rb") as f:
            size = struct.unpack("<Q", f.read(8))[0]
            if not 0 < size <= MAX_HEADER:
                raise OutlineError(f"{os.path.basename(path)} is not a safetensors file (header size {size})")
            header = json.loads(f.read(size))
        return {k: torch.empty(v["shape"], dtype=SAFETENSORS_DTYPES.get(v["dtype"], torch.float16), device="meta")
                for k, v in header.items() if k != "__metadata__"}
    sd = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    sd = sd.get("state_dict", sd)
    return {k: torch.empty(v.shape, dtype=v.dtype, device="meta") for k, v in sd.items() if torch.is_tensor(v)}


def _build(path):
    try:
        return _detect_and_build(path, header_state_dict(path))
    except OutlineError:
        raise
    except (RuntimeError, KeyError, IndexError, TypeError, AttributeError, ValueError) as e:
        # a detection that needs tensor values (meta tensors have none) or a config the model class rejects
        raise OutlineError(f"ComfyUI could not read the structure of {os.path.basename(path)}: {e}") from None


def _detect_and_build(path, sd):
    prefix = comfy.model_detection.unet_prefix_from_state_dict(sd)
    config = comfy.model_detection.model_config_from_unet(sd, prefix)
    if config is None:                 # a diffusion-model file, keys without the checkpoint's prefix
        sd = comfy.utils.state_dict_prefix_replace(sd, {prefix: ""}, filter_keys=True) or sd
        prefix = ""
        config = comfy.model_detection.model_config_from_unet(sd, prefix)
    if config is None:
        raise OutlineError(f"ComfyUI does not recognise {os.path.basename(path)} as a diffusion model")
    return config.get_model(sd, prefix, device=torch.device("meta"))


@functools.lru_cache(maxsize=4)
def _cached(path, size, mtime_ns):
    return _build(path)


def outline(path):
    """The BaseModel of a model file with its diffusion model on the meta device (no weights)."""
    st = os.stat(path)
    return _cached(os.path.realpath(path), st.st_size, st.st_mtime_ns)
