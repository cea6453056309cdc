"""Seeded tiny checkpoints of the real SD1.5 / SDXL / SD3 / Flux architectures (docs: shared/design/tiny-models.md).

Every model is built with ComfyUI's own classes and saved the way CheckpointSave / CLIPSave do, so ComfyUI's stock
loaders detect the real architecture. Weights are random but deterministic: each tensor gets its own generator
seeded from (SEED, component, key), so the same seed gives the same bytes and the CLIP-L is identical everywhere.

    python scripts/tiny_models.py [--only NAME ...] [--force] [--timings]
"""
from __future__ import annotations

import argparse
import dataclasses
import gc
import hashlib
import json
import math
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from comfy_env import MODELS as MODELS_DIR  # noqa: E402  (the folder; MODELS below is the registry)
from comfy_env import ROOT, bootstrap  # noqa: E402

RECIPE = "2"  # bump when the recipe changes in a way the spec fields do not show
SEED = 20250601
# 2-D text-encoder weights in the files. ComfyUI upcasts them into its fp16 text encoder; fp8 halves the files
# (all models: 5.4 GB instead of ~7.7 GB) but the upcast is slow on CPU: SDXL loads in 2.7 s instead of 0.7 s
# with a warm page cache. "float16" works too.
TE_STORE_DTYPE = "float8_e4m3fn"
STAMPS = ".sleight-tiny"


@dataclasses.dataclass(frozen=True)
class TinyModel:
    name: str
    arch: str  # "sd15" | "sdxl" | "sd3" | "flux"
    loader: str  # "checkpoint" | "unet"
    files: dict  # role ("checkpoint" | "unet", "clip", "vae") -> path relative to the models dir
    clip_type: str | None  # CLIPLoader type, for loader == "unet"
    config_class: str  # type(model.model.model_config).__name__
    model_class: str  # type(model.model).__name__
    inpaint: bool
    latent_channels: int
    unet_config: dict = dataclasses.field(repr=False, default_factory=dict)  # what detect_unet_config must return
    # False: ComfyUI's detection recognises the file's family (image_model) but fixes sizes the tiny model shrinks
    # (heads, widths, layer counts): it loads with `unet_config` in place of the detected one (load_with_config).
    detected: bool = True
    text_encoder: str | None = None  # a tiny text encoder of TEXT_ENCODERS, built in memory, instead of files["clip"]
    vae: str | None = "taesd"  # the VAE file's architecture: "taesd", "taehv" (Wan / Qwen-Image / HunyuanVideo 1.5
                               # video TAE), "flux2"; None: no VAE small enough (HunyuanImage 2.1's is 406 M parameters)
    # the model config class detection names at the tiny size, where it tells two classes apart by width alone
    # (0.3.75 reads a Lumina 2 file as Z-Image only when it is 3840 wide); None: config_class
    detected_class: str | None = None

    @property
    def downscale(self) -> int:
        """Image pixels per latent pixel."""
        if self.config_class in LATENT_DOWNSCALE:
            return LATENT_DOWNSCALE[self.config_class]
        return 16 if self.vae == "flux2" or (self.vae == "taehv" and self.latent_channels == 48) else 8


LATENT_DOWNSCALE = {"HunyuanImage21": 32, "HunyuanVideo15": 16}     # where the VAE does not tell

def _unet(channel_mult, num_res_blocks, depth, depth_output, middle, xl=False, in_channels=4):
    """A UNet config spelled exactly as comfy.model_detection.detect_unet_config reports it."""
    config = {
        "use_checkpoint": False, "image_size": 32, "use_spatial_transformer": True, "legacy": False,
        "adm_in_channels": None, "in_channels": in_channels, "out_channels": 4, "model_channels": 320,
        "num_res_blocks": num_res_blocks, "channel_mult": channel_mult,
        "transformer_depth": depth, "transformer_depth_output": depth_output, "transformer_depth_middle": middle,
        "use_linear_in_transformer": xl, "context_dim": 2048 if xl else 768,
        "use_temporal_resblock": False, "use_temporal_attention": False,
    }
    if xl:
        config.update(num_classes="sequential", adm_in_channels=2816)
    return config


SD15_MIN = _unet([1], [1], [1], [1, 1], 1)
# transformer_depth_output is popped from the end: output blocks 0-2 get none, 3-11 one, as in real SD1.5.
SD15_LAYOUT = _unet([1, 1, 1, 1], [2, 2, 2, 2], [1, 1, 1, 1, 1, 1, 0, 0], [1] * 9 + [0] * 3, 1)
# SDXL detection needs input-side depths exactly [0,0,2,2,10,10]; the layout also mirrors the output side (70 blocks).
SDXL_MIN = _unet([1, 1, 1], [2, 2, 2], [0, 0, 2, 2, 10, 10], [0, 0, 0] + [1] * 6, 1, xl=True)
SDXL_LAYOUT = _unet([1, 1, 1], [2, 2, 2], [0, 0, 2, 2, 10, 10], [0, 0, 0, 2, 2, 2, 10, 10, 10], 10, xl=True)
SD3_MIN = {  # depth 2 => hidden 128, 2 heads, 2 joint blocks
    "in_channels": 16, "patch_size": 2, "out_channels": 16, "depth": 2, "input_size": None, "adm_in_channels": 2048,
    "context_embedder_config": {"target": "torch.nn.Linear", "params": {"in_features": 4096, "out_features": 128}},
    "num_patches": 4096, "pos_embed_max_size": 64, "pos_embed_scaling_factor": None, "x_block_self_attn_layers": [],
}


def _flux(guidance):
    # 0.3.75 hard-codes 24 heads x 128, so hidden 3072 is forced; the block counts are free. Text: CLIPLoader type
    # "sd3" with one CLIP-L file gives a cond zero-padded to 4096 (txt_in) and a pooled 768 + 1280 zeros, of which
    # Flux reads the first vec_in_dim = 768 (type "flux" with one CLIP-L file falls back to SD1's 768-wide CLIP,
    # which txt_in rejects; the real Flux pairing needs a T5-XXL).
    return {
        "image_model": "flux", "axes_dim": [16, 56, 56], "num_heads": 24, "mlp_ratio": 4.0, "theta": 10000,
        "out_channels": 16, "qkv_bias": True, "in_channels": 16, "hidden_size": 3072, "context_in_dim": 4096,
        "patch_size": 2, "vec_in_dim": 768, "depth": 1, "depth_single_blocks": 1, "guidance_embed": guidance,
    }


# Flux.1 with the stock models' blocks at 256 wide (2 heads of 128, RoPE axes 16/56/56): what the in-process tests run,
# loaded with this config (0.3.75's detection fixes 3072 wide, whose blocks cost ~1 s per forward on 2 cores).
def _flux_narrow(guidance):
    return {**_flux(guidance), "num_heads": 2, "hidden_size": 256}


CLIP_L_FILE = "text_encoders/sleight-tiny-clip-l.safetensors"


def _ckpt(name, arch, file, config, config_class, model_class, latent=4, inpaint=False):
    return TinyModel(name, arch, "checkpoint", {"checkpoint": f"checkpoints/{file}"}, None, config_class,
                     model_class, inpaint, latent, config)


def _dit(name, config, config_class, model_class, latent, vae, text_encoder=None, clip_type=None, detected=False,
         detected_class=None):
    """A diffusion-model-only tiny model of a newer family (UNETLoader + VAELoader); CLIP-L for `clip_type`, else the
    in-memory `text_encoder`. `vae` is (architecture, file name), shared between families of one latent format."""
    files = {"unet": f"diffusion_models/sleight-tiny-{name.replace('_', '-')}.safetensors"}
    if vae is not None:
        files["vae"] = f"vae/{vae[1]}"
    if clip_type is not None:
        files["clip"] = CLIP_L_FILE
    return TinyModel(name, config["image_model"], "unet", files, clip_type, config_class, model_class, False, latent,
                     config, detected, text_encoder, vae[0] if vae is not None else None, detected_class)


TAEF1 = ("taesd", "sleight-tiny-taef1.safetensors")
TAEW21 = ("taehv", "sleight-tiny-taew21.safetensors")          # Wan 2.1's latent space (Qwen-Image uses it too)
FLUX2_VAE = ("flux2", "sleight-tiny-flux2-vae.safetensors")    # the real Flux.2 VAE: ComfyUI fixes its widths
TAEW22 = ("taehv", "sleight-tiny-taew22.safetensors")          # Wan 2.2 5B's 48-channel latent space (1/16)
TAEHV15 = ("taehv", "sleight-tiny-taehv15.safetensors")        # HunyuanVideo 1.5's light TAE (decode only)


# Flux.2 dev's layout at 256 wide: 0.3.75 detects 48 heads (6144 wide: 1.7 B parameters per double block); newer
# ComfyUI (v0.9+) takes heads = width / 128, which this file needs. Its text is a tiny Qwen3 (the Klein models'
# encoder) of width 64 = context_in_dim.
FLUX2 = {"image_model": "flux2", "axes_dim": [32, 32, 32, 32], "num_heads": 2, "mlp_ratio": 3.0, "theta": 2000,
         "out_channels": 128, "global_modulation": True, "vec_in_dim": None, "mlp_silu_act": True, "qkv_bias": False,
         "ops_bias": False, "default_ref_method": "index", "ref_index_scale": 10.0, "in_channels": 128,
         "hidden_size": 256, "context_in_dim": 64, "patch_size": 1, "depth": 2, "depth_single_blocks": 2,
         "guidance_embed": True}
# Chroma at 256 wide with a 1-layer, 64-wide approximator (ComfyUI fixes 3072 / 5120 x 5 for every Chroma file: the
# approximator alone costs ~2 s per forward on 2 cores); T5-shaped text through the CLIP-L stand-in (4096 wide).
CHROMA = {"image_model": "chroma", "axes_dim": [16, 56, 56], "num_heads": 2, "mlp_ratio": 4.0, "theta": 10000,
          "out_channels": 64, "qkv_bias": True, "in_channels": 64, "hidden_size": 256, "context_in_dim": 4096,
          "patch_size": 2, "depth": 2, "depth_single_blocks": 2, "in_dim": 64, "out_dim": 256, "hidden_dim": 64,
          "n_layers": 1}
# Qwen-Image at 2 heads x 128 with 3 blocks and a 64-wide text input (ComfyUI's class fixes 24 heads and the
# Qwen2.5-VL width 3584; detection reads only image_model, in_channels, num_layers).
QWEN_IMAGE = {"image_model": "qwen_image", "in_channels": 64, "num_layers": 3, "num_attention_heads": 2,
              "attention_head_dim": 128, "joint_attention_dim": 64}
# Z-Image at 2 heads x 128 (its head width: RoPE axes 32/48/48), 2 refiner blocks of each kind and 3 joint layers,
# text from the tiny Qwen3 (64 wide = cap_feat_dim). 0.3.75 takes a file for Z-Image only at width 3840 (30 heads);
# narrower files detect as original Lumina 2 with its defaults, hence the recipe's config (class ZImage).
ZIMAGE = {"image_model": "lumina2", "patch_size": 2, "in_channels": 16, "dim": 256, "cap_feat_dim": 64, "n_layers": 3,
          "n_refiner_layers": 2, "qk_norm": True, "n_heads": 2, "n_kv_heads": 2, "axes_dims": [32, 48, 48],
          "axes_lens": [1536, 512, 512], "rope_theta": 256.0, "ffn_dim_multiplier": 8.0 / 3.0,
          "z_image_modulation": True, "time_scale": 1000.0, "pad_tokens_multiple": 32}
# Original Lumina 2's layout at 192 wide: heads of 96 (RoPE axes 32/32/32), grouped K/V heads (2 query heads per K/V
# head; the real one 24 / 8), no pad tokens, Lumina's modulation. Its Gemma-2 tokenizer ships only inside the Gemma
# file, so the tiny Qwen3 gives conditioning of its shape (64 wide = cap_feat_dim).
LUMINA2 = {"image_model": "lumina2", "patch_size": 2, "in_channels": 16, "dim": 192, "cap_feat_dim": 64, "n_layers": 2,
           "n_refiner_layers": 2, "qk_norm": True, "n_heads": 2, "n_kv_heads": 1, "axes_dims": [32, 32, 32],
           "axes_lens": [300, 512, 512], "rope_theta": 10000.0, "ffn_dim_multiplier": 4.0}
# HiDream-I1 at 2 heads x 128 with 2 double + 2 single blocks and the real MoE (4 experts, 2 active); ComfyUI's
# detection fixes the whole 17 B layout. Text from ComfyUI's HiDream encoder classes, shrunk (TEXT_ENCODERS["hidream"]):
# T5 and every Llama-3.1 layer's hidden states, 64 wide and 32 tokens each (the real: 4096 wide, 128 and 128+), and
# the pooled CLIP-L + G (64 + 64; the real 768 + 1280). llama_layers picks one Llama layer per block, as the real
# [0..31, 31 x 16] does for 48 blocks.
HIDREAM = {"image_model": "hidream", "patch_size": 2, "in_channels": 16, "out_channels": 16, "num_layers": 2,
           "num_single_layers": 2, "attention_head_dim": 128, "num_attention_heads": 2, "caption_channels": [64, 64],
           "text_emb_dim": 128, "num_routed_experts": 4, "num_activated_experts": 2, "axes_dims_rope": [64, 32, 32],
           "max_resolution": [128, 128], "llama_layers": [0, 1, 2, 2]}


# HunyuanImage 2.1 / HunyuanVideo 1.5 as 0.3.75's detection reads them: width 128 = 1 head of 128, the block counts
# free; byT5 glyph input (a 1472-wide mapper ComfyUI fixes); text from the tiny Qwen2.5 (64 wide). 1.5 has double
# blocks only (54 in the real model), 65 input channels (latent + image-to-video frames + mask) and SigLIP's
# 1152-wide vision input.
HUNYUAN_IMAGE = {"image_model": "hunyuan_video", "in_channels": 64, "patch_size": [1, 1], "out_channels": 64,
                 "vec_in_dim": None, "axes_dim": [64, 64], "meanflow": False, "context_in_dim": 64,
                 "hidden_size": 128, "mlp_ratio": 4.0, "num_heads": 1, "depth": 2, "depth_single_blocks": 2,
                 "theta": 256, "qkv_bias": True, "byt5": True, "guidance_embed": False,
                 "use_cond_type_embedding": False, "vision_in_dim": None}
HUNYUAN_VIDEO15 = {**HUNYUAN_IMAGE, "in_channels": 65, "patch_size": [1, 1, 1], "out_channels": 32,
                   "axes_dim": [16, 56, 56], "depth_single_blocks": 0, "use_cond_type_embedding": True,
                   "vision_in_dim": 1152}


def _wan(model_type="t2v", in_dim=16, out_dim=16, text_dim=64):
    """Wan at 2 heads x 128, 2 blocks, a 64-wide text input (the tiny umT5). 0.3.75's detection reads dim (heads =
    dim / 128), ffn_dim, num_layers, in/out dims and model_type; text_dim (4096) is a class default, hence
    load_with_config; text_dim None: the default, which ComfyUI's stock loader (UNETLoader) reads as is."""
    config = {"image_model": "wan2.1", "dim": 256, "out_dim": out_dim, "num_heads": 2, "ffn_dim": 512, "num_layers": 2,
              "patch_size": (1, 2, 2), "freq_dim": 256, "window_size": (-1, -1), "qk_norm": True,
              "cross_attn_norm": True, "eps": 1e-6, "in_dim": in_dim, "model_type": model_type}
    return config if text_dim is None else {**config, "text_dim": text_dim}


MODELS: dict[str, TinyModel] = {m.name: m for m in [
    _ckpt("sd15", "sd15", "sleight-tiny-sd15.safetensors", SD15_MIN, "SD15", "BaseModel"),
    _ckpt("sd15_inpaint", "sd15", "sleight-tiny-sd15-inpaint.safetensors", {**SD15_MIN, "in_channels": 9},
          "SD15", "BaseModel", inpaint=True),
    _ckpt("sd15_layout", "sd15", "sleight-tiny-sd15-layout.safetensors", SD15_LAYOUT, "SD15", "BaseModel"),
    _ckpt("sdxl", "sdxl", "sleight-tiny-sdxl.safetensors", SDXL_MIN, "SDXL", "SDXL"),
    _ckpt("sdxl_layout", "sdxl", "sleight-tiny-sdxl-layout.safetensors", SDXL_LAYOUT, "SDXL", "SDXL"),
    _ckpt("sd3", "sd3", "sleight-tiny-sd3.safetensors", SD3_MIN, "SD3", "SD3", latent=16),
    # SD3.5-medium's shape: qk RMS-norm and an extra image-only self-attention in joint block 0
    _ckpt("sd35", "sd3", "sleight-tiny-sd35.safetensors", {**SD3_MIN, "qk_norm": "rms", "x_block_self_attn_layers": [0]},
          "SD3", "SD3", latent=16),
    _dit("flux_dev", _flux(True), "Flux", "Flux", 16, TAEF1, clip_type="sd3", detected=True),
    _dit("flux_schnell", _flux(False), "FluxSchnell", "Flux", 16, TAEF1, clip_type="sd3", detected=True),
    _dit("flux_dev_narrow", _flux_narrow(True), "Flux", "Flux", 16, TAEF1, clip_type="sd3"),
    _dit("flux_schnell_narrow", _flux_narrow(False), "FluxSchnell", "Flux", 16, TAEF1, clip_type="sd3"),
    _dit("flux2", FLUX2, "Flux2", "Flux2", 128, FLUX2_VAE, text_encoder="qwen3"),
    _dit("chroma", CHROMA, "Chroma", "Chroma", 16, TAEF1, clip_type="sd3"),
    _dit("qwen_image", QWEN_IMAGE, "QwenImage", "QwenImage", 16, TAEW21, text_encoder="qwen25"),
    _dit("zimage", ZIMAGE, "ZImage", "Lumina2", 16, TAEF1, text_encoder="qwen3", detected_class="Lumina2"),
    _dit("lumina2", LUMINA2, "Lumina2", "Lumina2", 16, TAEF1, text_encoder="qwen3"),
    _dit("hidream", HIDREAM, "HiDream", "HiDream", 16, TAEF1, text_encoder="hidream"),
    # Wan 2.1 T2V / I2V (16 latent channels + 20 of start image and mask, CLIP-vision tokens), Wan 2.2 TI2V 5B
    # (48 channels at 1/16), and Wan 2.2 A14B's low-noise expert (a Wan 2.1-shaped model: wan21_t2v stands in for
    # the high-noise one)
    _dit("wan21_t2v", _wan(), "WAN21_T2V", "WAN21", 16, TAEW21, text_encoder="umt5"),
    _dit("wan21_i2v", _wan("i2v", in_dim=36), "WAN21_I2V", "WAN21", 16, TAEW21, text_encoder="umt5"),
    _dit("wan22_5b", _wan(in_dim=48, out_dim=48), "WAN22_T2V", "WAN22", 48, TAEW22, text_encoder="umt5"),
    _dit("wan22_a14b_low", _wan(), "WAN21_T2V", "WAN21", 16, TAEW21, text_encoder="umt5"),
    # what a real server loads (demo, server tests): UNETLoader reads it with text_dim 4096, the tiny CLIP-L as
    # CLIPLoader type "sd3" stands in for umT5-XXL (4096 wide; not Wan's tokenizer)
    _dit("wan21_t2v_stock", _wan(text_dim=None), "WAN21_T2V", "WAN21", 16, TAEW21, clip_type="sd3", detected=True),
    _dit("hunyuan_image", HUNYUAN_IMAGE, "HunyuanImage21", "HunyuanImage21", 64, None, "hunyuan_image", detected=True),
    _dit("hunyuan_video15", HUNYUAN_VIDEO15, "HunyuanVideo15", "HunyuanVideo15", 32, TAEHV15, "hunyuan_video15",
         detected=True),
]}


# ---------------------------------------------------------------- building

def _seed(*parts) -> int:
    return int.from_bytes(hashlib.sha256(":".join(map(str, (SEED, *parts))).encode()).digest()[:8], "little")


def _randomize(module, tag):
    """Uniform +-1/sqrt(fan_in) for matrices and convs, N(0, 0.02) for embeddings, 1 for 1-D weights, 0 for biases."""
    import torch

    embeddings = {f"{n}.weight" for n, m in module.named_modules() if isinstance(m, torch.nn.Embedding)}
    with torch.no_grad():
        for key, t in module.state_dict(keep_vars=True).items():
            if not t.is_floating_point():
                continue
            if t.ndim <= 1:
                t.fill_(0.0 if key.endswith("bias") else 1.0)
                continue
            g = torch.Generator().manual_seed(_seed(tag, key))
            value = torch.empty(t.shape, dtype=torch.float32)
            if key in embeddings or key.endswith("pos_embed"):
                value.normal_(0.0, 0.02, generator=g)
            else:
                bound = 1.0 / math.sqrt(t[0].numel())
                value.uniform_(-bound, bound, generator=g)
            t.copy_(value)


def _model_config(spec):
    import comfy.model_detection
    import comfy.supported_models

    if not spec.detected:          # the recipe's sizes, in the model config class of its family
        return getattr(comfy.supported_models, spec.config_class)(dict(spec.unet_config))
    config = comfy.model_detection.model_config_from_unet_config(spec.unet_config)
    found = type(config).__name__ if config is not None else None
    if found != spec.config_class:
        raise AssertionError(f"{spec.name}: config detects as {found}, expected {spec.config_class}")
    return config


def detected_family(sd) -> str | None:
    """The image_model ComfyUI's own detection reads from a diffusion model's state dict (None: not recognised)."""
    return detected_config(sd)[0]


def detected_config(sd) -> tuple:
    """(image_model, model config class name) ComfyUI's own detection reads from a diffusion model's state dict."""
    import comfy.model_detection

    config = comfy.model_detection.model_config_from_unet(sd, "")
    if config is None:
        return None, None
    return config.unet_config.get("image_model", type(config).__name__), type(config).__name__


def _diffusion_model(spec):
    import torch
    import comfy.model_detection

    config = _model_config(spec)
    config.set_inference_dtype(torch.float16, None)
    model = config.get_model({}, device=torch.device("cpu"))
    _randomize(model.diffusion_model, spec.name)
    sd = model.diffusion_model.state_dict()
    if not spec.detected:              # ComfyUI must still recognise the family and the model's config class
        found, expected = detected_config(sd), (spec.unet_config["image_model"], spec.detected_class or spec.config_class)
        if found != expected:
            raise AssertionError(f"{spec.name}: ComfyUI detects {found}, expected {expected}")
        return model
    detected = comfy.model_detection.detect_unet_config(sd, "")
    if detected != spec.unet_config:  # the saved keys must read back as the config we asked for
        diff = {k: (detected.get(k), spec.unet_config.get(k)) for k in {*detected, *spec.unet_config}
                if detected.get(k) != spec.unet_config.get(k)}
        raise AssertionError(f"{spec.name}: detection differs (detected, intended): {diff}")
    return model


def _clip(target):
    import torch
    import comfy.sd

    cpu = torch.device("cpu")
    options = {"dtype": torch.float16, "load_device": cpu, "offload_device": cpu, "initial_device": cpu}
    clip = comfy.sd.CLIP(target, model_options=options)
    _randomize(clip.cond_stage_model, "te")  # keys are clip_l.* / clip_g.* in every target: one CLIP-L everywhere
    return clip


def _vae_sd(kind, latent_format):
    """A VAE file of ComfyUI's own classes with seeded random weights, the layout comfy.sd.VAE detects."""
    import comfy.ldm.models.autoencoder
    import comfy.taesd.taehv

    if kind == "taesd":
        return _taesd_sd(latent_format)
    if kind == "taehv":                       # fp32: ComfyUI reads it as a latent-space TAE needing no scaling
        tae = comfy.taesd.taehv.TAEHV(latent_channels=latent_format.latent_channels)
        _randomize(tae, f"taehv{latent_format.latent_channels}")
        return tae.state_dict()
    if kind == "flux2":                       # AutoencoderKL + batch-normed 2x2 patches: 128 channels at 1/16
        dd = {"double_z": True, "z_channels": 32, "resolution": 256, "in_channels": 3, "out_ch": 3, "ch": 128,
              "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_resolutions": [], "dropout": 0.0,
              "batch_norm_latent": True}
        vae = comfy.ldm.models.autoencoder.AutoencoderKL(ddconfig=dd, embed_dim=32)
        _randomize(vae, "vae-flux2")
        return {k: v.half() if v.is_floating_point() else v for k, v in vae.state_dict().items()}
    raise ValueError(kind)


def _taesd_sd(latent_format):
    import comfy.taesd.taesd

    taesd = comfy.taesd.taesd.TAESD(latent_channels=latent_format.latent_channels)
    _randomize(taesd, f"taesd{latent_format.latent_channels}")
    taesd.vae_scale.data.fill_(latent_format.scale_factor)
    taesd.vae_shift.data.fill_(getattr(latent_format, "shift_factor", 0.0))
    return taesd.state_dict()  # fp32: tiny, and keeps scale/shift exact


def _te_store(sd, keys):
    import torch

    dtype = getattr(torch, TE_STORE_DTYPE)
    for k in keys:
        t = sd[k]
        if t.is_floating_point() and t.ndim == 2:
            sd[k] = t.to(dtype)
    return sd


def _save(sd, path, name):
    import comfy.utils

    path.parent.mkdir(parents=True, exist_ok=True)
    sd = {k: v.contiguous() for k, v in sd.items()}
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")  # two processes may build the same file at once
    # One metadata key only: safetensors writes the metadata map in a random order, which would change the bytes.
    comfy.utils.save_torch_file(sd, str(tmp), metadata={"sleight.tiny_model": f"{name} recipe {RECIPE}"})
    os.chmod(tmp, 0o644)  # safetensors creates files 0600; a server may run as another user
    os.replace(tmp, path)


def _checkpoint_sd(spec):
    import comfy.supported_models_base as smb

    model = _diffusion_model(spec)
    config = model.model_config
    if spec.arch == "sd3":  # SD3's clip_target reads which encoders exist from the checkpoint's keys
        target = config.clip_target({"text_encoders.clip_l.transformer.text_model.final_layer_norm.weight": None})
    else:
        target = config.clip_target()
    assert isinstance(target, smb.ClipTarget)
    clip_sd = _clip(target).get_sd()
    sd = model.state_dict_for_saving(clip_sd, _taesd_sd(config.latent_format))
    del model, clip_sd
    vae_prefix = config.vae_key_prefix[0]
    te_keys = [k for k in sd if not k.startswith(("model.diffusion_model.", vae_prefix))]
    return _te_store(sd, te_keys)


def _clip_l_file_sd():
    import comfy.sd1_clip
    import comfy.supported_models_base as smb
    import comfy.utils

    sd = _clip(smb.ClipTarget(comfy.sd1_clip.SD1Tokenizer, comfy.sd1_clip.SD1ClipModel)).get_sd()
    sd = comfy.utils.state_dict_prefix_replace(sd, {"clip_l.": ""})  # as CLIPSave writes clip_l files
    sd = comfy.utils.state_dict_prefix_replace(sd, {"transformer.": ""})
    return _te_store(sd, list(sd))


def _file_sd(spec, role):
    import comfy.utils

    if role == "checkpoint":
        return _checkpoint_sd(spec)
    if role == "unet":
        model = _diffusion_model(spec)  # diffusion_models/ files carry bare keys, like the released ones
        return comfy.utils.state_dict_prefix_replace(model.state_dict_for_saving(), {"model.diffusion_model.": ""})
    if role == "clip":
        return _clip_l_file_sd()
    if role == "vae":
        return _vae_sd(spec.vae, _model_config(spec).latent_format)
    raise ValueError(role)


def _sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            h.update(block)
    return h.hexdigest()


def _recipe_key(spec):
    return hashlib.sha256(repr((RECIPE, SEED, TE_STORE_DTYPE, dataclasses.astuple(spec))).encode()).hexdigest()[:16]


def _stamp_path(models_dir, name):
    return Path(models_dir) / STAMPS / f"{name}.json"


def _read_stamp(models_dir, name):
    try:
        return json.loads(_stamp_path(models_dir, name).read_text())
    except (OSError, ValueError):
        return None


def _file_ok(models_dir, record):
    p = Path(models_dir) / record["path"]
    return p.is_file() and p.stat().st_size == record["size"]


def is_fresh(name, models_dir=MODELS_DIR) -> bool:
    stamp = _read_stamp(models_dir, name)
    return (stamp is not None and stamp.get("recipe") == _recipe_key(MODELS[name])
            and all(_file_ok(models_dir, r) for r in stamp["files"].values()))


def _shared_record(models_dir, rel):
    """A shared file (Flux's CLIP-L and TAEF1) already written by a fresh build of another model."""
    for other in MODELS:
        stamp = _read_stamp(models_dir, other)
        if stamp and stamp.get("recipe") == _recipe_key(MODELS[other]):
            for record in stamp["files"].values():
                if record["path"] == rel and _file_ok(models_dir, record):
                    return record
    return None


def build(name, models_dir=MODELS_DIR, reuse_shared=True) -> dict:
    """Build one model's files into models_dir and write its stamp; returns the stamp."""
    spec = MODELS[name]
    models_dir = Path(models_dir)
    files = {}
    for role, rel in spec.files.items():
        record = _shared_record(models_dir, rel) if reuse_shared and role in ("clip", "vae") else None
        if record is None:
            sd = _file_sd(spec, role)
            _save(sd, models_dir / rel, name)
            del sd
            gc.collect()
            record = {"path": rel, "size": (models_dir / rel).stat().st_size, "sha256": _sha256(models_dir / rel)}
        files[role] = record
    stamp = {"recipe": _recipe_key(spec), "seed": SEED, "files": files}
    path = _stamp_path(models_dir, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(stamp, indent=1))
    os.replace(tmp, path)
    return stamp


def ensure_models(models_dir=MODELS_DIR, names=None) -> list[str]:
    """Build whatever is missing or stale; returns the names built. Cheap (stat calls) when everything exists."""
    built = []
    for name in names or list(MODELS):
        if not is_fresh(name, models_dir):
            bootstrap()
            build(name, models_dir)
            built.append(name)
    return built


# ---------------------------------------------------------------- loading and sampling

def load(name, models_dir=MODELS_DIR, text_layers=None):
    """(model_patcher, clip, vae) through the calls CheckpointLoaderSimple or UNETLoader+CLIPLoader+VAELoader make.

    text_layers: build the CLIP text encoders (CLIP-L, CLIP-G) with only their first `text_layers` transformer layers,
    read from the same file (ComfyUI's own `clip_l_model_config` / `clip_g_model_config` options). The tests use it:
    the full-size CLIP-G takes ~7 s per prompt on 2 cores and no trick reads the encoder's depth; a server (demo,
    tests/server) always loads them whole."""
    bootstrap()
    import comfy.sd
    import comfy.utils
    import folder_paths

    spec = MODELS[name]
    path = {role: str(Path(models_dir) / rel) for role, rel in spec.files.items()}
    embeddings = folder_paths.get_folder_paths("embeddings")
    te_options = {} if text_layers is None else {
        f"{enc}_model_config": {"num_hidden_layers": text_layers} for enc in ("clip_l", "clip_g")}
    if spec.loader == "checkpoint":
        model, clip, vae = comfy.sd.load_checkpoint_guess_config(
            path["checkpoint"], output_vae=True, output_clip=True, embedding_directory=embeddings,
            te_model_options=te_options)[:3]
        return model, clip, vae
    if spec.detected:
        model = comfy.sd.load_diffusion_model(path["unet"], model_options={})
    else:
        model = load_with_config(path["unet"], spec)
    if spec.text_encoder is not None:
        clip = text_encoder(spec.text_encoder)
    else:
        clip_type = getattr(comfy.sd.CLIPType, spec.clip_type.upper(), comfy.sd.CLIPType.STABLE_DIFFUSION)
        clip = comfy.sd.load_clip(ckpt_paths=[path["clip"]], embedding_directory=embeddings, clip_type=clip_type,
                                  model_options=te_options)
    vae = None
    if "vae" in path:
        vae = comfy.sd.VAE(sd=comfy.utils.load_torch_file(path["vae"]))
        vae.throw_exception_if_invalid()
    return model, clip, vae


def load_with_config(path, spec):
    """comfy.sd.load_diffusion_model's steps with the recipe's unet_config in place of the detected one (the file's
    family is still checked against ComfyUI's detection): for tiny models whose sizes 0.3.75's detection fixes."""
    import comfy.model_management as mm
    import comfy.model_patcher
    import comfy.utils

    sd = comfy.utils.load_torch_file(str(path))
    found = detected_family(sd)
    if found != spec.unet_config["image_model"]:
        raise ValueError(f"{path}: ComfyUI detects {found}, not {spec.unet_config['image_model']}")
    config = _model_config(spec)
    load_device, offload_device = mm.get_torch_device(), mm.unet_offload_device()
    dtype = mm.unet_dtype(model_params=comfy.utils.calculate_parameters(sd),
                          supported_dtypes=list(config.supported_inference_dtypes),
                          weight_dtype=comfy.utils.weight_dtype(sd))
    config.set_inference_dtype(dtype, mm.unet_manual_cast(dtype, load_device, config.supported_inference_dtypes))
    model = config.get_model(sd, "").to(offload_device)
    model.load_model_weights(sd, "")
    return comfy.model_patcher.ModelPatcher(model, load_device=load_device, offload_device=offload_device)


# Tiny text encoders of the LLM-encoded families, built in memory from ComfyUI's own tokenizer and text-encoder
# classes (the real tokenizers and chat templates; the transformer shrunk through ComfyUI's `<name>_model_config`
# option, the hook its loaders pass model_options through). Output width = the tiny DiT's text width.
TINY_LLM = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 3, "num_attention_heads": 2,
            "num_key_value_heads": 1}
TINY_CLIP = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 3, "num_attention_heads": 2}
HUNYUAN_TE = {"qwen25_7b_class": "text_only_qwen25", "qwen25_7b_model_config": {**TINY_LLM, "num_key_value_heads": 2},
              "_model_config": {"num_layers": 1, "num_heads": 1, "d_kv": 64, "d_ff": 64}}
TEXT_ENCODERS = {
    # Z-Image's and Flux.2 Klein's encoder: Qwen3 (layer -2 of the hidden states)
    "qwen3": ("comfy.text_encoders.z_image", "ZImageTokenizer", "ZImageTEModel", {"qwen3_4b_model_config": TINY_LLM}),
    # Qwen-Image's: Qwen2.5-VL, text tower only (a text-only prompt never reaches the vision tower); the encoder
    # drops the chat template's system prefix
    "qwen25": ("comfy.text_encoders.qwen_image", "QwenImageTokenizer", "QwenImageTEModel",
               {"qwen25_7b_class": "text_only_qwen25", "qwen25_7b_model_config": {**TINY_LLM, "num_key_value_heads": 2}}),
    # OmniGen2's: Qwen2.5-VL-3B's text model (it ties its output head to the embeddings: Sleight · R2F plan writes)
    "qwen25_3b": ("comfy.text_encoders.omnigen2", "Omnigen2Tokenizer", "Omnigen2Model",
                  {"qwen25_3b_model_config": TINY_LLM}),
    # HiDream's four encoders in one (QuadrupleCLIPLoader's HiDream text encoder): CLIP-L and -G pooled, T5 and
    # every Llama-3.1 layer's hidden states; the diffusion model reads T5 as c_crossattn, the Llama layers as
    # conditioning_llama3. The tokenizer's own length options cut T5 and the Llama's padding from 128 tokens to 32:
    # the text is 3 x 128+ tokens in every attention call of the real model, which would make this tiny one 4x slower.
    "hidream": ("comfy.text_encoders.hidream", "HiDreamTokenizer", "HiDreamTEModel",
                {"clip_l_model_config": TINY_CLIP, "clip_g_model_config": TINY_CLIP, "llama_model_config": TINY_LLM,
                 "t5xxl_model_config": {"d_model": 64, "d_ff": 128, "num_layers": 2, "num_heads": 2, "d_kv": 32},
                 "tokenizer_data": {"t5xxl_min_length": 32, "t5xxl_max_length": 32, "llama_min_length": 32}}),
    # Wan's: umT5-XXL's encoder (ComfyUI's T5 class, umT5's per-layer position bias) with Wan's own tokenizer class
    # (no start token, end token appended, padded to 512). The real umT5 sentencepiece model ships inside the umT5
    # checkpoint, not with ComfyUI: the tokenizer runs on ComfyUI's bundled Pile-T5 sentencepiece model (a 32k
    # subword vocabulary, end token 2, pad 0), and the encoder masks what follows that end token as Wan's does.
    "umt5": ("comfy.text_encoders.wan", "WanT5Tokenizer", "WanT5Model",
             {"umt5xxl_class": "pile_umt5", "spiece_model": "t5_pile_tokenizer/tokenizer.model",
              "umt5xxl_model_config": {"d_model": 64, "d_ff": 128, "d_kv": 32, "num_heads": 2, "num_layers": 2,
                                       "vocab_size": 32000}}),
    # HunyuanImage 2.1's and HunyuanVideo 1.5's: that Qwen2.5-VL (text tower), their own templates, and the byT5 glyph
    # encoder of quoted text at one layer (its width, 1472, is the DiT's byT5 input); ComfyUI builds byT5 without a
    # model name, so its `<name>_model_config` option is "_model_config"
    "hunyuan_image": ("comfy.text_encoders.hunyuan_image", "HunyuanImageTokenizer", "HunyuanImageTEModel", HUNYUAN_TE),
    "hunyuan_video15": ("comfy.text_encoders.hunyuan_video", "HunyuanVideo15Tokenizer",
                        "comfy.text_encoders.hunyuan_image.HunyuanImageTEModel", HUNYUAN_TE),
}


CAUSAL_LM = ("qwen3", "qwen25", "qwen25_3b", "hunyuan_image", "hunyuan_video15")     # the TEXT_ENCODERS that are causal language models (test_family_text)


def _text_only_qwen25():
    """Qwen2.5-VL's text encoder class (comfy.text_encoders.qwen_image.Qwen25_7BVLIModel) on ComfyUI's text-only
    Qwen2.5 transformer: the 7B's vision tower alone is 0.6 B parameters."""
    import comfy.text_encoders.llama
    from comfy import sd1_clip

    class TextOnlyQwen25(sd1_clip.SDClipModel):
        def __init__(self, device="cpu", layer="last", layer_idx=None, dtype=None, attention_mask=True,
                     model_options={}):
            super().__init__(device=device, layer=layer, layer_idx=layer_idx, textmodel_json_config={}, dtype=dtype,
                             special_tokens={"pad": 151643}, layer_norm_hidden_state=False,
                             model_class=comfy.text_encoders.llama.Qwen25_3B, enable_attention_masks=attention_mask,
                             return_attention_masks=attention_mask, model_options=model_options)
    return TextOnlyQwen25


def _pile_umt5():
    """ComfyUI's umT5-XXL encoder class with the end token of the bundled Pile-T5 sentencepiece model."""
    import comfy.text_encoders.t5
    import comfy.text_encoders.wan
    from comfy import sd1_clip

    class PileUMT5(comfy.text_encoders.wan.UMT5XXlModel):
        def __init__(self, device="cpu", layer="last", layer_idx=None, dtype=None, model_options={}):
            config = str(Path(comfy.text_encoders.wan.__file__).with_name("umt5_config_xxl.json"))
            sd1_clip.SDClipModel.__init__(self, device=device, layer=layer, layer_idx=layer_idx,
                                          textmodel_json_config=config, dtype=dtype, special_tokens={"end": 2, "pad": 0},
                                          model_class=comfy.text_encoders.t5.T5, enable_attention_masks=True,
                                          zero_out_masked=True, model_options=model_options)
    return PileUMT5


CLASS_OPTIONS = {"text_only_qwen25": _text_only_qwen25, "pile_umt5": _pile_umt5}


def text_encoder(name):
    """A CLIP (comfy.sd.CLIP) of TEXT_ENCODERS[name] with seeded random weights."""
    import importlib

    import torch
    import comfy.sd
    import comfy.supported_models_base as smb

    bootstrap()
    module, tokenizer, te, options = TEXT_ENCODERS[name]
    module = importlib.import_module(module)

    def find(attr):                    # a name in the entry's module, or a dotted path into another
        where, _, attr = attr.rpartition(".")
        return getattr(importlib.import_module(where) if where else module, attr)

    options = {k: (CLASS_OPTIONS[v]() if isinstance(v, str) and v in CLASS_OPTIONS else v) for k, v in options.items()}
    tokenizer_data = options.pop("tokenizer_data", {})
    if "spiece_model" in options:           # a sentencepiece model bundled with ComfyUI, as tokenizer data
        tokenizer_data["spiece_model"] = (Path(module.__file__).parent / options.pop("spiece_model")).read_bytes()
    cpu = torch.device("cpu")
    clip = comfy.sd.CLIP(smb.ClipTarget(find(tokenizer), find(te)), tokenizer_data=tokenizer_data,
                         model_options={**options, "dtype": torch.float32, "load_device": cpu, "offload_device": cpu,
                                        "initial_device": cpu})
    _randomize(clip.cond_stage_model, f"te-{name}")
    _llama3_tokenizer(clip)
    return clip


def _llama3_tokenizer(clip):
    """transformers >= 5 builds the LlamaTokenizerFast ComfyUI 0.3.75 asks for from the vocabulary alone, with a
    SentencePiece pre-tokenizer that drops Llama 3's spaces ("a red" -> "ared"); ComfyUI's own tokenizer.json, which
    transformers 4 loaded as it is, tokenizes correctly. Where the two differ, the tiny encoder takes the file's."""
    sub = getattr(clip.tokenizer, "llama", None)
    if sub is None:
        return
    import comfy.text_encoders.hunyuan_video
    from transformers import PreTrainedTokenizerFast

    path = Path(comfy.text_encoders.hunyuan_video.__file__).parent / "llama_tokenizer" / "tokenizer.json"
    own = PreTrainedTokenizerFast(tokenizer_file=str(path))
    if own("a red")["input_ids"] != sub.tokenizer("a red")["input_ids"]:
        sub.tokenizer = own


def encode(clip, text):
    """CLIPTextEncode."""
    return clip.encode_from_tokens_scheduled(clip.tokenize(text))


TINY_CLIP_VISION = {"hidden_act": "quick_gelu", "hidden_size": 32, "image_size": 64, "intermediate_size": 64,
                    "layer_norm_eps": 1e-05, "model_type": "clip_vision_model", "num_attention_heads": 2,
                    "num_channels": 3, "num_hidden_layers": 2, "patch_size": 16, "projection_dim": 16}


# Wan 2.1 I2V's image tokens: CLIP ViT-H's penultimate hidden states, 257 tokens (224 px, patch 14) x 1280, which
# the model's img_emb takes at that width; 2 layers of 16 heads keep it small.
WAN_CLIP_VISION = {**TINY_CLIP_VISION, "hidden_act": "gelu", "hidden_size": 1280, "image_size": 224,
                   "intermediate_size": 64, "num_attention_heads": 16, "patch_size": 14, "projection_dim": 16}


def clip_vision(tag="clip_vision", config=None):
    """A CLIP_VISION (comfy.clip_vision.ClipVisionModel, the class Load CLIP Vision builds) of the real ViT
    architecture at toy size with seeded random weights: built in memory from a config (TINY_CLIP_VISION by
    default), never saved."""
    import json
    import tempfile

    bootstrap()
    import comfy.clip_vision

    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(config or TINY_CLIP_VISION, f)
    model = comfy.clip_vision.ClipVisionModel(f.name)
    Path(f.name).unlink()
    _randomize(model.model, tag)
    return model


def default_cfg(name):
    return 1.0 if MODELS[name].arch == "flux" else 2.0


def sample(name, model, clip, size=64, steps=1, cfg=None, seed=0, prompt="a red circle on a blue background",
           positive=None, negative=None, frames=1):
    """Euler / normal from an empty latent (a video model's: `frames` frames), as KSampler does; returns the latent
    samples."""
    import torch
    import comfy.sample

    cfg = default_cfg(name) if cfg is None else cfg
    positive = encode(clip, prompt) if positive is None else positive
    negative = encode(clip, "") if negative is None else negative
    side = size // MODELS[name].downscale
    video = model.get_model_object("latent_format").latent_dimensions == 3
    latent = comfy.sample.fix_empty_latent_channels(
        model, torch.zeros([1, 4, *(((frames - 1) // 4 + 1,) if video else ()), side, side]))
    noise = comfy.sample.prepare_noise(latent, seed)
    return comfy.sample.sample(model, noise, steps, cfg, "euler", "normal", positive, negative, latent,
                               denoise=1.0, disable_pbar=True, seed=seed)


def write_extra_model_paths(path, models_dir=MODELS_DIR, custom_nodes_dir=None):
    """An extra_model_paths.yaml that points a real ComfyUI server at the tiny models (and the pack)."""
    lines = ["sleight_tiny:", f"    base_path: {json.dumps(str(Path(models_dir).resolve()))}"]
    for folder, sub in [("checkpoints", "checkpoints"), ("diffusion_models", "diffusion_models"),
                        ("unet", "diffusion_models"), ("text_encoders", "text_encoders"),
                        ("clip", "text_encoders"), ("vae", "vae")]:
        lines.append(f"    {folder}: {sub}")
    shapes = ROOT / "models" / "shapes"  # the trained shapes-world checkpoint (shapes/README.md)
    lines += ["sleight_shapes:", f"    base_path: {json.dumps(str(shapes.parent))}", f"    checkpoints: {shapes.name}"]
    if custom_nodes_dir is not None:
        lines.append(f"    custom_nodes: {json.dumps(str(Path(custom_nodes_dir).resolve()))}")
    Path(path).write_text("\n".join(lines) + "\n")
    return Path(path)


# ---------------------------------------------------------------- CLI

def _timings(name, models_dir, build_s):
    import torch

    spec = MODELS[name]
    sizes = ", ".join(f"{role} {(Path(models_dir) / rel).stat().st_size / 1e6:.0f} MB"
                      for role, rel in spec.files.items())
    t = time.perf_counter()
    model, clip, vae = load(name, models_dir)
    load_s = time.perf_counter() - t
    steps = {}
    with torch.inference_mode():
        positive, negative = encode(clip, "a red circle on a blue background"), encode(clip, "")
        for size in (64, 128):
            sample(name, model, clip, size, positive=positive, negative=negative)  # warm-up: moves weights, caches
            times = []
            for _ in range(3):  # the best of 3: robust to other processes on a 2-core machine
                t = time.perf_counter()
                out = sample(name, model, clip, size, positive=positive, negative=negative)
                times.append(time.perf_counter() - t)
            steps[size] = min(times)
            assert torch.isfinite(out).all(), f"{name}: non-finite sample at {size}px"
    built = f"{build_s:6.1f} s" if build_s is not None else "cached"
    print(f"{name:13s} build {built:>8s} | load {load_s:5.2f} s | step 64px {steps[64]:.3f} s, "
          f"128px {steps[128]:.3f} s (cfg {default_cfg(name):g}) | {sizes}", flush=True)
    del model, clip, vae
    gc.collect()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", choices=list(MODELS), metavar="NAME", help=" ".join(MODELS))
    parser.add_argument("--models-dir", type=Path, default=MODELS_DIR)
    parser.add_argument("--force", action="store_true", help="rebuild even if the stamps are current")
    parser.add_argument("--timings", action="store_true", help="print build/load/one-step times per model")
    args = parser.parse_args(argv)
    bootstrap()
    import logging
    logging.getLogger().setLevel(logging.WARNING)

    names = args.only or list(MODELS)
    if args.force:
        for name in names:
            _stamp_path(args.models_dir, name).unlink(missing_ok=True)
    build_s = {}
    for name in names:
        if not is_fresh(name, args.models_dir):
            t = time.perf_counter()
            build(name, args.models_dir)
            build_s[name] = time.perf_counter() - t
            print(f"built {name} in {build_s[name]:.1f} s", flush=True)
    if args.timings:
        import comfy.sd  # noqa: F401  (import time is not load time)
        import comfy.samplers  # noqa: F401
        for name in names:
            _timings(name, args.models_dir, build_s.get(name))


if __name__ == "__main__":
    main()
