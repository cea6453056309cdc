"""A TAESD with hand-set weights: no VAE training, exact and interpretable latents.

Latents (as the UNet sees them, after SD1.5's scale 0.18215) are a tiny RGB picture: channel c < 3 of the
latent at (i, j) is 2 * (mean of colour c over the 8x8 pixel block (i, j)) - 1, and channel 3 is 0. The encoder
is an exact 8x average pool (three stride-2 convs with 0.25 taps; every residual block zeroed, so each is a
ReLU that passes the non-negative pixels through); the decoder splits each colour into a +/- pair of channels
so the ReLUs keep negative values too, and upsamples with nearest neighbours (a blurring decoder would grey
the border through TAESD's zero padding).

The file's vae_scale is SD1.5's 0.18215 times EPS: TAESD's decoder starts with a 3 * tanh(x / 3) clamp, and
latents of order 1 would come out up to 3.5 % small; scaled by EPS the tanh is linear to 1e-5.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

BLOCK = 8
SD15_SCALE = 0.18215
EPS = 1.0 / 64  # powers of two keep every hand-set weight exact in fp16


def encode(images: torch.Tensor) -> torch.Tensor:
    """What the TAESD encoder computes, fast: (B, 3, H, W) in [0, 1] -> UNet-space latents (B, 4, H/8, W/8)."""
    rgb = F.avg_pool2d(images, BLOCK) * 2 - 1
    return torch.cat([rgb, torch.zeros_like(rgb[:, :1])], 1)


def decode(latents: torch.Tensor) -> torch.Tensor:
    """What the decoder computes (before ComfyUI's clamp to [0, 1]): UNet-space latents -> (B, 3, H, W)."""
    return F.interpolate((latents[:, :3] + 1) / 2, scale_factor=BLOCK, mode="nearest")


def _centre(conv, pairs):
    for out_c, in_c, w in pairs:
        conv.weight[out_c, in_c, 1, 1] = w


def build():
    """A comfy.taesd.taesd.TAESD(latent_channels=4) with the hand-set weights (fp32)."""
    from comfy.taesd.taesd import TAESD

    taesd = TAESD(latent_channels=4)
    with torch.no_grad():
        for p in taesd.parameters():
            p.zero_()
        enc, dec = taesd.taesd_encoder, taesd.taesd_decoder
        _centre(enc[0], [(c, c, 1.0) for c in range(3)])
        for down in (enc[2], enc[6], enc[10]):  # 3x3 stride 2, padding 1: taps (1..2, 1..2) are the 2x2 block
            for c in range(3):
                down.weight[c, c, 1:3, 1:3] = 0.25
        _centre(enc[14], [(c, c, 2 * EPS) for c in range(3)])
        enc[14].bias[:3] = -EPS

        _centre(dec[1], [(2 * c + s, c, (1 - 2 * s) / EPS) for c in range(3) for s in (0, 1)])
        for conv in (dec[7], dec[12], dec[17]):  # after each nearest upsample
            _centre(conv, [(k, k, 1.0) for k in range(6)])
        _centre(dec[19], [(c, 2 * c + s, 0.5 * (1 - 2 * s)) for c in range(3) for s in (0, 1)])
        dec[19].bias[:] = 0.5
        taesd.vae_scale.fill_(SD15_SCALE * EPS)
        taesd.vae_shift.fill_(0.0)
    return taesd


def state_dict(dtype=torch.float16) -> dict:
    """The weights as stored (convs in `dtype`, exact; the two scalars fp32) with TAESD's own key names."""
    sd = build().state_dict()
    return {k: v if k in ("vae_scale", "vae_shift") else v.to(dtype) for k, v in sd.items()}
