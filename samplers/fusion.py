"""DesignEdit layers on latents: move / scale / flip a layer, z-order fusion, and the zoom-out / pan canvases
(pixel space) whose new border the removal then fills. Its masks are made by attention_patches/core/masks.py.

Official code (design-edit/DesignEdit, `LayerFusion`): at step 42 of 50 each foreground layer's latent and
mask are shifted (`mv_op`), optionally flipped, and pasted over the inpainted background in z-order,
canvas = bg·(1 − m_fg) + fg·m_fg; the last 8 steps harmonise the canvas. It resizes and flips in pixel space
before inversion and distorts every image to 1024²; here the transform is an exact gather on the latent grid
(nearest cell, so the layer's noise moves with it, as `mv_op` moves it), about the mask's bounding-box centre,
at any size and aspect ratio.
"""
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

FLIPS = {"none": (False, False), "horizontal": (True, False), "vertical": (False, True), "both": (True, True)}


# ---------------------------------------------------------------- layers

@dataclass(frozen=True)
class Layer:
    """One foreground layer: a clean latent of the canvas size, its mask, and where it goes.

    latent: (1, C, h, w) model-space clean latent; mask: (1, 1, h, w) in [0, 1] on the latent grid;
    move_x / move_y: latent cells (right / down positive); scale about the mask's bounding-box centre;
    flips about that centre."""

    latent: torch.Tensor
    mask: torch.Tensor
    move_x: int = 0
    move_y: int = 0
    scale: float = 1.0
    flip_h: bool = False
    flip_v: bool = False


def bbox(mask) -> tuple:
    """(y0, y1, x0, x1) inclusive bounds of the cells with mask > 0."""
    m = mask.reshape(mask.shape[-2:]) > 0
    ys, xs = torch.nonzero(m.any(dim=1)).flatten(), torch.nonzero(m.any(dim=0)).flatten()
    return int(ys[0]), int(ys[-1]), int(xs[0]), int(xs[-1])


def _source_index(n, lo, hi, move, scale, flip):
    """For each output cell along one axis: the input cell it copies (−1: none). Forward map of a cell p:
    p → c + scale·(flip(p) − c) + move, c = (lo + hi)/2; inverted here and rounded to the nearest cell."""
    p = torch.arange(n, dtype=torch.float64) - move
    c = (lo + hi) / 2.0
    q = c + (p - c) / scale
    if flip:
        q = (lo + hi) - q
    idx = torch.floor(q + 0.5).long()
    return torch.where((idx >= 0) & (idx < n), idx, torch.full_like(idx, -1))


def check_inside(layer: Layer, latent_hw, ratio: int, who: str, index: int = 1):
    """The moved and scaled mask must stay on the canvas (the paper pastes, it does not crop)."""
    h, w = latent_hw
    y0, y1, x0, x1 = bbox(layer.mask)
    for axis, lo, hi, move, n, names in (("move_y", y0, y1, layer.move_y, h, ("top", "bottom")),
                                         ("move_x", x0, x1, layer.move_x, w, ("left", "right"))):
        c = (lo + hi) / 2.0
        new_lo = c + layer.scale * (lo - 0.5 - c) + move      # outer edges of the bbox cells, moved
        new_hi = c + layer.scale * (hi + 0.5 - c) + move
        if new_lo < -0.5 - 1e-6 or new_hi > n - 0.5 + 1e-6:
            over = max(-0.5 - new_lo, new_hi - (n - 0.5))
            side = names[0] if new_lo < -0.5 - 1e-6 else names[1]
            raise ValueError(f"{who}: layer {index} leaves the canvas at the {side} by about "
                             f"{int(math.ceil(over)) * ratio} px after its move/scale ({axis} = {move * ratio} px, "
                             f"scale {layer.scale:g}). Move it less or scale it down.")


def transform(layer: Layer, latent: torch.Tensor = None):
    """(latent, mask) of the layer after flip, scale and move: an exact gather of latent cells."""
    latent = layer.latent if latent is None else latent
    h, w = latent.shape[-2:]
    if layer.mask.shape[-2:] != (h, w):
        raise ValueError(f"layer mask grid {tuple(layer.mask.shape[-2:])} differs from its latent grid {(h, w)}")
    y0, y1, x0, x1 = bbox(layer.mask)
    iy = _source_index(h, y0, y1, layer.move_y, layer.scale, layer.flip_v)
    ix = _source_index(w, x0, x1, layer.move_x, layer.scale, layer.flip_h)
    valid = (iy >= 0)[:, None] & (ix >= 0)[None, :]
    gy, gx = iy.clamp(min=0), ix.clamp(min=0)
    moved = latent[..., gy[:, None], gx[None, :]]
    mask = layer.mask[..., gy[:, None], gx[None, :]] * valid.to(layer.mask.dtype)
    return moved, mask


def fuse(background: torch.Tensor, layers) -> torch.Tensor:
    """Paste (latent, mask) pairs over the background in z-order: canvas = canvas·(1 − m) + fg·m."""
    canvas = background
    for fg, m in layers:
        m = m.to(canvas)
        canvas = canvas * (1.0 - m) + fg.to(canvas) * m
    return canvas


# ---------------------------------------------------------------- zoom out / pan (pixel space, IMAGE = B,H,W,C)

def zoom_out(image: torch.Tensor, scale_w: float, scale_h: float, who="Sleight · DesignEdit zoom out"):
    """The image shrunk by (scale_w, scale_h) and centred over itself; mask = 1 on the border to refill.

    As the official `zooming`: the border keeps the original pixels (the removal regenerates it)."""
    if not (0.0 < scale_w <= 1.0 and 0.0 < scale_h <= 1.0):
        raise ValueError(f"{who}: scales must lie in (0, 1], got {scale_w}, {scale_h}. 0.8 shows 25% more scene.")
    b, h, w, c = image.shape
    nh, nw = max(1, int(h * scale_h)), max(1, int(w * scale_w))
    small = F.interpolate(image.movedim(-1, 1), size=(nh, nw), mode="area").movedim(1, -1)
    y, x = (h - nh) // 2, (w - nw) // 2
    out = image.clone()
    out[:, y:y + nh, x:x + nw] = small
    mask = torch.ones((b, h, w), dtype=torch.float32)
    mask[:, y:y + nh, x:x + nw] = 0.0
    return out, mask


def pan(image: torch.Tensor, move_x: int, move_y: int, who="Sleight · DesignEdit pan"):
    """The image content shifted by (move_x, move_y) px (right / down positive); mask = 1 on the uncovered
    strips, which keep the original pixels as in the official `panning`."""
    b, h, w, c = image.shape
    if abs(move_x) >= w or abs(move_y) >= h:
        raise ValueError(f"{who}: a move of ({move_x}, {move_y}) px leaves nothing of a {w}x{h} image; "
                         f"move less than the image size.")
    out = image.clone()
    mask = torch.zeros((b, h, w), dtype=torch.float32)
    ys = slice(max(move_y, 0), h + min(move_y, 0))
    yd = slice(max(-move_y, 0), h + min(-move_y, 0))
    xs = slice(max(move_x, 0), w + min(move_x, 0))
    xd = slice(max(-move_x, 0), w + min(-move_x, 0))
    out[:, ys, xs] = image[:, yd, xd]
    mask[:] = 1.0
    mask[:, ys, xs] = 0.0
    return out, mask
