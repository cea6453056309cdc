"""Masks on pixel, latent and token grids: the one place every trick resizes, dilates, blurs and checks a mask.

Shapes: a ComfyUI MASK is (H, W) or (B, H, W) in pixels; on a latent or token grid masks are (B, 1, h, w).
"""
import math

import torch
import torch.nn.functional as F


def as_4d(mask) -> torch.Tensor:
    """(H, W) / (B, H, W) / (B, 1, H, W) → float (B, 1, H, W)."""
    m = torch.as_tensor(mask).float()
    if m.ndim == 2:
        return m[None, None]
    if m.ndim == 3:
        return m[:, None]
    return m


def to_grid(mask, size, mode: str = "bilinear") -> torch.Tensor:
    """A mask resized to a grid (h, w): (B, 1, h, w). `bilinear` for soft weights, `area` for coverage,
    `nearest` for cells. A video token grid (t, h, w) gets (B, 1, t, h, w): the mask on every frame."""
    if len(size) == 3:
        return to_grid(mask, size[-2:], mode).unsqueeze(2).expand(-1, -1, size[0], -1, -1)
    m = as_4d(mask)
    if tuple(m.shape[-2:]) == tuple(size):
        return m
    corners = {"align_corners": False} if mode in ("bilinear", "bicubic") else {}
    return F.interpolate(m, size=tuple(size), mode=mode, **corners)


def dilate(mask, radius: int) -> torch.Tensor:
    """Grow a (B, 1, H, W) mask by `radius` cells (square kernel of side 2·radius + 1)."""
    if radius <= 0:
        return mask
    return F.max_pool2d(mask, 2 * radius + 1, stride=1, padding=radius)


def cv2_sigma(kernel: int) -> float:
    """OpenCV's default Gaussian sigma for a kernel size: 0.3·((k − 1)/2 − 1) + 0.8."""
    return 0.3 * ((kernel - 1) * 0.5 - 1) + 0.8


def gaussian_blur(x, sigma: float, radius: int, pad: str = "replicate") -> torch.Tensor:
    """Separable Gaussian blur of a (B, 1, H, W) mask, kernel exp(−t²/2σ²) over t = −radius..radius."""
    t = torch.arange(2 * radius + 1, dtype=torch.float32) - radius
    g = torch.exp(-t ** 2 / (2 * sigma ** 2))
    g = (g / g.sum()).to(x)
    if pad == "reflect" and min(x.shape[-2:]) <= radius:
        pad = "replicate"                   # reflect padding needs more cells than the radius
    x = F.pad(x, (radius, radius, radius, radius), mode=pad)
    x = F.conv2d(x, g.reshape(1, 1, 1, -1))
    return F.conv2d(x, g.reshape(1, 1, -1, 1))


def otsu_threshold(values, bins: int = 256) -> float:
    """Otsu's threshold of a 1-d tensor (maximises the between-class variance over a histogram)."""
    v = values.float().flatten()
    lo, hi = float(v.min()), float(v.max())
    if hi <= lo:
        return hi
    hist = torch.histc(v, bins=bins, min=lo, max=hi)
    centers = lo + (torch.arange(bins, dtype=torch.float32) + 0.5) * (hi - lo) / bins
    w0 = torch.cumsum(hist, 0)
    w1 = w0[-1] - w0
    m0 = torch.cumsum(hist * centers, 0)
    mu0 = m0 / w0.clamp(min=1e-12)
    mu1 = (m0[-1] - m0) / w1.clamp(min=1e-12)
    between = w0 * w1 * (mu0 - mu1) ** 2
    between[(w0 == 0) | (w1 == 0)] = -1
    i = int(torch.argmax(between))
    return float(lo + (i + 1) * (hi - lo) / bins)      # upper edge of the last bin of the lower class


# ---------------------------------------------------------------- pixel masks ↔ the latent grid

def check_size(mask, latent_hw, ratio: int, who: str, name: str = "mask"):
    """A pixel MASK (B,H,W) must be the image the latent was encoded from: H // ratio, W // ratio = latent grid."""
    h, w = mask.shape[-2:]
    lh, lw = latent_hw
    if (h // ratio, w // ratio) != (lh, lw):
        raise ValueError(f"{who}: the {name} is {w}x{h} pixels but the latent is {lw * ratio}x{lh * ratio} "
                         f"({lw}x{lh} latent cells). Use a mask of the same image, or resize it to the image size.")


def dilate_box(mask, size: int) -> torch.Tensor:
    """cv2.dilate with a size×size ones kernel and its default anchor (size // 2): each output pixel is the max of
    the input at offsets −(size // 2) … size − 1 − size // 2 (20 px: −10 … +9), on a (B, 1, H, W) mask."""
    if size <= 1:
        return mask
    lo, hi = size // 2, size - 1 - size // 2
    return F.max_pool2d(F.pad(mask, (lo, hi, lo, hi)), size, stride=1)


def dilate_cross(mask, iterations: int = 1) -> torch.Tensor:
    """scipy.ndimage.binary_dilation with its default (4-connected) structure, `iterations` times."""
    for _ in range(iterations):
        p = F.pad(mask, (1, 1, 1, 1))
        mask = torch.stack([mask, p[..., :-2, 1:-1], p[..., 2:, 1:-1], p[..., 1:-1, :-2], p[..., 1:-1, 2:]]).amax(0)
    return mask


def pixel_to_latent(mask, latent_hw, ratio: int, dilation: int = 0, feather: int = 0,
                    who: str = "Sleight · DesignEdit", name: str = "mask") -> torch.Tensor:
    """A pixel MASK → (1, 1, h, w) on the latent grid, 1 = edit. Several masks in a batch are united.

    As the official DesignEdit code (`utils.attend_mask` and the KMSA's `new_mask[new_mask > 0] = 1`): every pixel
    above 0 counts, dilated by cv2.dilate with a `dilation`×`dilation` ones kernel (20 for removal and layers, 30
    for zoom and pan), resized to the latent grid with cv2's nearest neighbour (cell i takes pixel ratio·i), the
    cells above 0 marked. `feather` > 0 (ours, not the paper's) softens instead: a Gaussian of σ = feather / 2 px
    after the dilation, and each cell the mean of its pixels.
    """
    m = torch.as_tensor(mask).float()
    if m.ndim == 2:
        m = m.unsqueeze(0)
    check_size(m, latent_hw, ratio, who, name)
    m = (m.amax(dim=0, keepdim=True) > 0).float().unsqueeze(0)        # (1, 1, H, W)
    m = dilate_box(m, dilation)
    lh, lw = latent_hw
    if feather > 0:
        sigma = feather / 2.0
        m = gaussian_blur(m, sigma, max(1, int(math.ceil(3 * sigma))))
        return F.adaptive_avg_pool2d(m[..., : lh * ratio, : lw * ratio], (lh, lw)).clamp(0.0, 1.0)
    return (m[..., ::ratio, ::ratio][..., :lh, :lw] > 0).float()


def user_to_latent(mask, latent_hw, downscale: int, batch: int, who: str):
    """A ComfyUI MASK (B,H,W) at the image's pixel size (or latent size) → (B,1,h,w) coverage on the latent grid."""
    if mask.ndim == 2:
        mask = mask[None]
    h, w = latent_hw
    if tuple(mask.shape[-2:]) not in ((h * downscale, w * downscale), (h, w)):
        raise ValueError(f"{who}: the mask is {mask.shape[-1]}x{mask.shape[-2]} but the image is "
                         f"{w * downscale}x{h * downscale}; resize the mask to the image size.")
    if mask.shape[0] not in (1, batch):
        raise ValueError(f"{who}: the mask batch ({mask.shape[0]}) must be 1 or the latent batch ({batch}).")
    m = F.interpolate(mask[:, None].float(), size=(h, w), mode="area")
    return m.expand(batch, -1, -1, -1) if m.shape[0] == 1 else m


def for_latent(mask, x) -> torch.Tensor:
    """A (B, 1, h, w) latent-grid mask shaped to broadcast over a latent x: (B, C, h, w), or (B, C, T, h, w) for
    video (the same mask on every frame)."""
    return mask.unsqueeze(2) if x.ndim == 5 and mask.ndim == 4 else mask


def latent_to_pixel(mask_latent, downscale: int) -> torch.Tensor:
    """(B,1,h,w) latent mask → ComfyUI MASK (B, h·s, w·s)."""
    return F.interpolate(mask_latent.float(), scale_factor=downscale, mode="nearest")[:, 0]
