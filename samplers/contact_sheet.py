"""Pictures of latents for nodes that compare many samples: a rough RGB preview from the latent format's
latent→RGB factors, and a labelled contact sheet (Sleight · Find text layers)."""
import math

import numpy as np
import torch
from PIL import Image, ImageDraw


def latent_preview(model, latent: torch.Tensor) -> torch.Tensor:
    """A rough RGB image (H, W, 3) in [0, 1] of a sampled latent, with the latent format's latent→RGB factors."""
    fmt = model.model.latent_format
    x = fmt.process_in(latent.float())[0]                              # (C, h, w), model space
    factors = getattr(fmt, "latent_rgb_factors", None)
    if factors is not None and len(factors) == x.shape[0]:
        f = torch.tensor(factors, dtype=x.dtype)                       # (C, 3)
        rgb = torch.einsum("chw,cr->hwr", x, f)
        bias = getattr(fmt, "latent_rgb_factors_bias", None)
        if bias is not None:
            rgb = rgb + torch.tensor(bias, dtype=x.dtype)
        return ((rgb + 1) / 2).clamp(0, 1)
    rgb = x[:3].movedim(0, -1)
    lo, hi = rgb.amin(), rgb.amax()
    return (rgb - lo) / (hi - lo).clamp_min(1e-8)


def contact_sheet(tiles, box: int = 256, strip: int = 16) -> torch.Tensor:
    """tiles: [(label, image (H, W, 3) in [0, 1])] -> IMAGE (1, H, W, 3): a labelled grid, each fit into `box`."""
    cols = max(1, math.ceil(math.sqrt(len(tiles))))
    rows = math.ceil(len(tiles) / cols)
    h0, w0 = tiles[0][1].shape[:2]
    scale = box / max(h0, w0)
    tw, th = max(1, round(w0 * scale)), max(1, round(h0 * scale))
    sheet = Image.new("RGB", (cols * tw, rows * (th + strip)), (24, 24, 24))
    draw = ImageDraw.Draw(sheet)
    for i, (label, img) in enumerate(tiles):
        arr = (img[..., :3].detach().float().clamp(0, 1).cpu().numpy() * 255).round().astype(np.uint8)
        pic = Image.fromarray(arr).resize((tw, th), Image.NEAREST if scale >= 2 else Image.BILINEAR)
        x, y = (i % cols) * tw, (i // cols) * (th + strip)
        sheet.paste(pic, (x, y + strip))
        draw.text((x + 3, y + 2), label[: max(4, tw // 6)], fill=(235, 235, 235))
    return torch.from_numpy(np.asarray(sheet).astype(np.float32) / 255.0)[None]
