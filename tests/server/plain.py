"""A plain sampler prompt (no Sleight node) on one checkpoint and seed, and its exact result: what a server gives
when nothing leaked from the prompts before it.

SamplerCustom with BasicScheduler's sigmas and its own noise seed is what KSampler runs. Every run passes the sigmas
through SplitSigmas at a new step beyond the schedule's end, which hands them on unchanged: ComfyUI's cache sees a
new input and samples again, while the checkpoint loader's output, the model object earlier prompts patched, and
the encoded prompts still come from the cache (`Plain.check` asserts that where asked).
"""
import io
import itertools
from dataclasses import dataclass

import safetensors.torch
from PIL import Image

import demo

SEED, STEPS, SIZE, CFG = 424242, 2, 64, 5.0   # cfg > 1: the negative prediction runs too
TEXT = "a red circle on the left and a blue square on the right"


def checkpoints(prompt):
    """The checkpoint file names a prompt's CheckpointLoaderSimple nodes load."""
    return sorted({n["inputs"]["ckpt_name"] for n in prompt.values() if n["class_type"] == "CheckpointLoaderSimple"})


def prompt(ckpt, run=0, prefix="plain"):
    """Loader -> CLIPTextEncode (positive; its zeroed copy the negative), EmptyLatentImage, BasicScheduler ->
    SplitSigmas -> SamplerCustom -> SaveLatent, VAEDecode -> SaveImage."""
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": TEXT, "clip": ["1", 1]}},
        "3": {"class_type": "ConditioningZeroOut", "inputs": {"conditioning": ["2", 0]}},     # one text encoding
        "4": {"class_type": "EmptyLatentImage", "inputs": {"width": SIZE, "height": SIZE, "batch_size": 1}},
        "5": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler"}},
        "6": {"class_type": "BasicScheduler", "inputs": {"scheduler": "normal", "steps": STEPS, "denoise": 1.0,
                                                         "model": ["1", 0]}},
        "7": {"class_type": "SplitSigmas", "inputs": {"sigmas": ["6", 0], "step": STEPS + run}},
        "8": {"class_type": "SamplerCustom", "inputs": {
            "add_noise": True, "noise_seed": SEED, "cfg": CFG, "model": ["1", 0], "positive": ["2", 0],
            "negative": ["3", 0], "sampler": ["5", 0], "sigmas": ["7", 0], "latent_image": ["4", 0]}},
        "9": {"class_type": "SaveLatent", "inputs": {"samples": ["8", 0], "filename_prefix": f"{prefix}/latent"}},
        "10": {"class_type": "VAEDecode", "inputs": {"samples": ["8", 0], "vae": ["1", 2]}},
        "11": {"class_type": "SaveImage", "inputs": {"filename_prefix": f"{prefix}/image", "images": ["10", 0]}},
    }


@dataclass
class Output:
    latent: bytes      # the sampled latent tensor's raw bytes
    pixels: bytes      # the decoded image, RGB
    size: tuple
    cached: set        # node ids ComfyUI answered from its cache


class Plain:
    """Runs the plain prompt on a server; the first run of each checkpoint is its baseline."""

    def __init__(self, server):
        self.server, self.baselines, self.runs = server, {}, itertools.count(1)

    def run(self, ckpt) -> Output:
        client = self.server.client
        result = client.run(prompt(ckpt, next(self.runs)))
        outputs = result.history["outputs"]
        (lat,) = outputs["9"]["latents"]
        latent = safetensors.torch.load(client.view(lat["filename"], lat.get("subfolder", ""), lat["type"]))
        (img,) = client.output_images({"outputs": {"11": outputs["11"]}})
        png = client.view(img[1]["filename"], img[1].get("subfolder", ""), img[1]["type"])
        with Image.open(io.BytesIO(png)) as im:
            pixels, size = im.convert("RGB").tobytes(), im.size
        cached = {str(n) for d in result.of_type("execution_cached") for n in d.get("nodes", [])}
        return Output(latent["latent_tensor"].numpy().tobytes(), pixels, size, cached)

    def baseline(self, ckpt) -> Output:
        if ckpt not in self.baselines:
            self.baselines[ckpt] = self.run(ckpt)
        return self.baselines[ckpt]

    def check(self, ckpt, after: str, reuses_model=False):
        """A plain run gives the baseline's bytes; with reuses_model, on the loaded model an earlier prompt used."""
        base = self.baseline(ckpt)
        out = self.run(ckpt)
        assert out.size == base.size == (SIZE, SIZE), (after, out.size)
        assert out.latent == base.latent and out.pixels == base.pixels, \
            f"after {after}: a plain KSampler on {ckpt} no longer gives the baseline's bytes"
        if reuses_model:
            assert "1" in out.cached, f"after {after}: the checkpoint was loaded again, so the check saw a fresh model"
        assert "8" not in out.cached, f"after {after}: the sampler was answered from the cache"
        return out


def tiny_ckpt(model):
    return demo.tiny_file(model, "checkpoint")
