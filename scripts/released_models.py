"""The released models of each family, as ComfyUI's detection reads their files (the unet_config it returns).

Built on the meta device (shapes only, no memory, no weights) they let the tests check ComfyUI's own detection and
Sleight's family adapters at real size, and docs/FAMILIES.md list each real model's block ids
(scripts/families_doc.py). Sizes from the released checkpoints' configs; a family's helper adds its models here.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from comfy_env import bootstrap  # noqa: E402

_FLUX = {"image_model": "flux", "axes_dim": [16, 56, 56], "num_heads": 24, "mlp_ratio": 4.0, "theta": 10000,
         "out_channels": 16, "qkv_bias": True, "in_channels": 16, "hidden_size": 3072, "context_in_dim": 4096,
         "patch_size": 2, "vec_in_dim": 768, "depth": 19, "depth_single_blocks": 38}
_SD3 = {"in_channels": 16, "patch_size": 2, "out_channels": 16, "input_size": None, "adm_in_channels": 2048,
        "pos_embed_scaling_factor": None}

def _wan(dim, ffn_dim, layers, in_dim, out_dim, model_type):
    return {"image_model": "wan2.1", "dim": dim, "out_dim": out_dim, "num_heads": dim // 128, "ffn_dim": ffn_dim,
            "num_layers": layers, "patch_size": (1, 2, 2), "freq_dim": 256, "window_size": (-1, -1), "qk_norm": True,
            "cross_attn_norm": True, "eps": 1e-6, "in_dim": in_dim, "model_type": model_type}


_HUNYUAN = {"image_model": "hunyuan_video", "vec_in_dim": None, "meanflow": False, "context_in_dim": 3584, "mlp_ratio": 4.0,
            "theta": 256, "qkv_bias": True, "byt5": True, "guidance_embed": False}

_UNET = {"use_checkpoint": False, "image_size": 32, "use_spatial_transformer": True, "legacy": False,
         "in_channels": 4, "out_channels": 4, "model_channels": 320, "use_temporal_resblock": False,
         "use_temporal_attention": False}

# name -> (what users know it as, ComfyUI's model config class, adapter key, unet_config as detection reads it,
#          attention layers the forward calls: the architecture's count, e.g. SDXL's 70 transformer blocks x 2)
RELEASED = {
    "sd15": ("SD1.5", "SD15", "unet", {
        **_UNET, "adm_in_channels": None, "num_res_blocks": [2, 2, 2, 2], "channel_mult": [1, 2, 4, 4],
        "transformer_depth": [1, 1, 1, 1, 1, 1, 0, 0], "transformer_depth_output": [1] * 9 + [0] * 3,
        "transformer_depth_middle": 1, "use_linear_in_transformer": False, "context_dim": 768}, 32),
    "sdxl": ("SDXL", "SDXL", "unet", {
        **_UNET, "num_classes": "sequential", "adm_in_channels": 2816, "num_res_blocks": [2, 2, 2],
        "channel_mult": [1, 2, 4], "transformer_depth": [0, 0, 2, 2, 10, 10],
        "transformer_depth_output": [0, 0, 0, 2, 2, 2, 10, 10, 10], "transformer_depth_middle": 10,
        "use_linear_in_transformer": True, "context_dim": 2048}, 140),
    "flux1_dev": ("Flux.1 dev", "Flux", "flux", {**_FLUX, "guidance_embed": True}, 57),
    "flux1_schnell": ("Flux.1 schnell", "FluxSchnell", "flux", {**_FLUX, "guidance_embed": False}, 57),
    "flux2_dev": ("Flux.2 dev", "Flux2", "flux2", {
        "image_model": "flux2", "axes_dim": [32, 32, 32, 32], "num_heads": 48, "mlp_ratio": 3.0, "theta": 2000,
        "out_channels": 128, "global_modulation": True, "vec_in_dim": None, "mlp_silu_act": True, "qkv_bias": False,
        "ops_bias": False, "default_ref_method": "index", "ref_index_scale": 10.0, "in_channels": 128,
        "hidden_size": 6144, "context_in_dim": 15360, "patch_size": 1, "depth": 8, "depth_single_blocks": 48,
        "guidance_embed": True}, 56),
    "chroma": ("Chroma", "Chroma", "chroma", {
        "image_model": "chroma", "axes_dim": [16, 56, 56], "num_heads": 24, "mlp_ratio": 4.0, "theta": 10000,
        "out_channels": 64, "qkv_bias": True, "in_channels": 64, "hidden_size": 3072, "context_in_dim": 4096,
        "patch_size": 2, "depth": 19, "depth_single_blocks": 38, "in_dim": 64, "out_dim": 3072, "hidden_dim": 5120,
        "n_layers": 5}, 57),
    "qwen_image": ("Qwen-Image / Qwen-Image-Edit", "QwenImage", "qwen_image",
                   {"image_model": "qwen_image", "in_channels": 64, "num_layers": 60}, 60),
    "sd35_large": ("SD3.5 Large", "SD3", "mmdit", {
        **_SD3, "depth": 38, "context_embedder_config": {"target": "torch.nn.Linear", "params": {
            "in_features": 4096, "out_features": 2432}}, "num_patches": 36864, "pos_embed_max_size": 192,
        "qk_norm": "rms", "x_block_self_attn_layers": []}, 38),
    "sd35_medium": ("SD3.5 Medium (MMDiT-X)", "SD3", "mmdit", {
        **_SD3, "depth": 24, "context_embedder_config": {"target": "torch.nn.Linear", "params": {
            "in_features": 4096, "out_features": 1536}}, "num_patches": 147456, "pos_embed_max_size": 384,
        "qk_norm": "rms", "x_block_self_attn_layers": list(range(13))}, 24 + 13),
    "zimage": ("Z-Image (Turbo)", "ZImage", "lumina2", {
        "image_model": "lumina2", "patch_size": 2, "in_channels": 16, "dim": 3840, "cap_feat_dim": 2560, "n_layers": 30,
        "qk_norm": True, "n_heads": 30, "n_kv_heads": 30, "axes_dims": [32, 48, 48], "axes_lens": [1536, 512, 512],
        "rope_theta": 256.0, "ffn_dim_multiplier": 8.0 / 3.0, "z_image_modulation": True, "time_scale": 1000.0,
        "pad_tokens_multiple": 32}, 2 + 2 + 30),
    "hidream_i1": ("HiDream-I1 (Full / Dev / Fast)", "HiDream", "hidream", {
        "image_model": "hidream", "attention_head_dim": 128, "axes_dims_rope": [64, 32, 32],
        "caption_channels": [4096, 4096], "max_resolution": [128, 128], "in_channels": 16,
        "llama_layers": list(range(32)) + [31] * 16, "num_attention_heads": 20, "num_routed_experts": 4,
        "num_activated_experts": 2, "num_layers": 16, "num_single_layers": 32, "out_channels": 16, "patch_size": 2,
        "text_emb_dim": 2048}, 48),
    "wan21_t2v_1_3b": ("Wan 2.1 T2V 1.3B", "WAN21_T2V", "wan", _wan(1536, 8960, 30, 16, 16, "t2v"), 60),
    "wan21_t2v_14b": ("Wan 2.1 T2V 14B / Wan 2.2 A14B experts", "WAN21_T2V", "wan", _wan(5120, 13824, 40, 16, 16, "t2v"),
                      80),
    "wan21_i2v_14b": ("Wan 2.1 I2V 14B", "WAN21_I2V", "wan", _wan(5120, 13824, 40, 36, 16, "i2v"), 120),
    "wan22_ti2v_5b": ("Wan 2.2 TI2V 5B", "WAN22_T2V", "wan", _wan(3072, 14336, 30, 48, 48, "t2v"), 60),
    "hunyuan_image_2_1": ("HunyuanImage 2.1", "HunyuanImage21", "hunyuan_video", {
        **_HUNYUAN, "in_channels": 64, "patch_size": [1, 1], "out_channels": 64, "axes_dim": [64, 64],
        "hidden_size": 3584, "num_heads": 28, "depth": 20, "depth_single_blocks": 40, "use_cond_type_embedding": False,
        "vision_in_dim": None}, 2 + 20 + 40),
    "hunyuan_video_1_5": ("HunyuanVideo 1.5", "HunyuanVideo15", "hunyuan_video", {
        **_HUNYUAN, "in_channels": 65, "patch_size": [1, 1, 1], "out_channels": 32, "axes_dim": [16, 56, 56],
        "hidden_size": 2048, "num_heads": 16, "depth": 54, "depth_single_blocks": 0, "use_cond_type_embedding": True,
        "vision_in_dim": 1152}, 2 + 54),
}


def meta_model(name):
    """The released model's BaseModel (ComfyUI's model config class and diffusion model) on the meta device."""
    import torch

    bootstrap()
    import comfy.supported_models

    _, config_class, _, unet_config, _ = RELEASED[name]
    config = getattr(comfy.supported_models, config_class)(dict(unet_config))
    config.set_inference_dtype(torch.bfloat16, None)
    return config.get_model({}, device=torch.device("meta"))
