"""Read a shapes-world picture back from its pixels: background, and per grid cell the object there
(colour, kind, size, or a sign and its letter). Deterministic; pure torch.

    readings = read(images)                  # images: (B, 3, S, S) in [0, 1], e.g. S = 64 or 128
    accuracy(scenes, readings)               # {"background": 1.0, "colour": 0.99, ...}

How: the background is the palette colour nearest the median of the outer frame. Pixels far from it are
foreground (stripes are background); each of the 9 grid cells holds at most one object. A white patch whose
outer ring is all white and which encloses dark pixels is a sign: its letter is read cell by cell from the
3x3 font. Otherwise the cell's colour is the palette colour that best explains its foreground pixels as
mixtures with the background, and the object's soft coverage (how far each pixel has moved from the
background toward that colour) is compared with a rendered template of every kind and size, centred on the
same centroid; the closest template names kind and size. With block=8 (images decoded from the analytic
TAESD's latents) the templates are averaged over the same 8x8 blocks; at 128 px a glyph cell is one such block,
so letters read back too (at 64 px they fall between blocks).
"""
from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F

from . import world

ATTRIBUTES = ("background", "count", "position", "colour", "kind", "size", "letter")
FG_DISTANCE = 0.2  # RGB distance from the background above which a pixel is foreground
CORE_DISTANCE = 0.15  # RGB distance to a palette colour below which a pixel votes for it
LUMA = torch.tensor([0.299, 0.587, 0.114])
MIN_AREA = 0.0017  # the least foreground (fraction of the canvas) that counts as an object: ~1/4 small star


@dataclasses.dataclass(frozen=True)
class Found:
    position: str
    colour: str
    kind: str  # one of world.KINDS, or "sign"
    size: str | None = None
    letter: str | None = None


@dataclasses.dataclass(frozen=True)
class Reading:
    background: str
    objects: tuple[Found, ...]


def _cell_bounds(size, block):
    # With block > 1 a whole block goes to the cell that holds its centre: a decoded latent cannot say more.
    edges = [0] + [block * math.ceil(e * size / block - 0.5) for e in world.CELL_EDGES] + [size]
    return [(edges[i], edges[i + 1]) for i in range(3)]


def _cells(size, block=1):
    """[(position name, (y0, y1), (x0, x1))] over the 3x3 grid."""
    bounds = _cell_bounds(size, block)
    out = []
    for name in world.POSITION_NAMES:
        (x, y), _ = world.POSITIONS[name]
        col, row = sum(x > e for e in world.CELL_EDGES), sum(y > e for e in world.CELL_EDGES)
        out.append((name, bounds[row], bounds[col]))
    return out


def _nearest(rgb):
    """(..., 3) -> palette index (...), distance (...)."""
    d = torch.cdist(rgb.reshape(-1, 3), world.PALETTE)
    dist, idx = d.min(1)
    return idx.view(rgb.shape[:-1]), dist.view(rgb.shape[:-1])


def _background(img):
    s = img.shape[-1]
    w = max(1, s // 32)
    frame = torch.cat([img[:, :w].reshape(3, -1), img[:, -w:].reshape(3, -1),
                       img[:, :, :w].reshape(3, -1), img[:, :, -w:].reshape(3, -1)], 1)
    idx, _ = _nearest(frame.median(1).values)
    return int(idx)


def _read_letter(white, dark):
    """Read the glyph of the sign whose white pixels are `white` (bool maps of the cell): the letter whose
    glyph differs least from which glyph cells are dark at their centres."""
    ys, xs = torch.nonzero(white, as_tuple=True)
    top, bottom, left, right = int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1
    ch, cw = (bottom - top) / world.SIGN_CELLS, (right - left) / world.SIGN_CELLS
    centres = torch.arange(world.GLYPH_CELLS) + 1.5  # glyph cell i sits one cell in from the sign's edge
    cy, cx = (top + centres * ch).long(), (left + centres * cw).long()
    bits = dark[cy.clamp(max=white.shape[0] - 1)][:, cx.clamp(max=white.shape[1] - 1)]
    dist = {letter: int((glyph != bits).sum()) for letter, glyph in world.GLYPHS.items()}
    return min(dist, key=lambda k: (dist[k], k))


def _is_sign(white, dark):
    ys, xs = torch.nonzero(white, as_tuple=True)
    if len(ys) == 0:
        return False
    top, bottom, left, right = int(ys.min()), int(ys.max()), int(xs.min()), int(xs.max())
    if bottom - top < 3 or right - left < 3:
        return False
    box_w, box_b = white[top:bottom + 1, left:right + 1], dark[top:bottom + 1, left:right + 1]
    ring = torch.cat([box_w[0], box_w[-1], box_w[:, 0], box_w[:, -1]]).float().mean()
    inner = box_b[1:-1, 1:-1].float().mean()
    return bool(ring > 0.9 and inner > 0.05)


def _colour(pixels, bg):
    """(c, mass): the palette colour c != bg that best explains foreground pixels as mixtures of bg and c, and
    the object area those mixtures add up to (pixels)."""
    back = world.PALETTE[bg]
    diff = world.PALETTE - back  # (K, 3)
    alpha = (((pixels - back) @ diff.T) / (diff * diff).sum(1).clamp(min=1e-6)).clamp(0, 1)  # (P, K)
    residual = (pixels[:, None] - back - alpha[..., None] * diff).norm(dim=-1).sum(0)
    residual[bg] = float("inf")
    best = int(residual.argmin())
    return best, float(alpha[:, best].sum())


def read(images: torch.Tensor, block: int = 1) -> list[Reading]:
    """Readings of (B, 3, S, S) images in [0, 1]. block: the VAE's pixels per latent when the images are
    decoded latents (8 for the analytic TAESD): shapes are then compared with templates seen the same way."""
    images = images.detach().float().cpu().clamp(0, 1)
    size = images.shape[-1]
    min_px = MIN_AREA * size * size
    white_i = world.COLOUR_NAMES.index(world.SIGN_COLOUR)
    backgrounds, found, pending = [], [], []  # pending: shapes awaiting template matching
    for b, img in enumerate(images):
        bg = _background(img)
        backgrounds.append(bg)
        rgb = img.permute(1, 2, 0)
        luma = rgb @ LUMA
        plain, stripe = world.PALETTE[bg], world.stripe_colour(world.PALETTE[bg])
        # Decoded latents average each object into its blocks' background: accept fainter foreground.
        far = torch.minimum((rgb - plain).norm(dim=-1), (rgb - stripe).norm(dim=-1)) > FG_DISTANCE / min(block, 2)
        nearest, dist = _nearest(rgb)
        core = dist < CORE_DISTANCE
        objects = []
        for name, (y0, y1), (x0, x1) in _cells(size, block):
            fg = far[y0:y1, x0:x1]
            if fg.sum() < min_px:
                continue
            near, cor = nearest[y0:y1, x0:x1], core[y0:y1, x0:x1]
            white, dark = fg & cor & (near == white_i), luma[y0:y1, x0:x1] < 0.5  # the letter is black
            if _is_sign(white, dark):
                objects.append(Found(name, world.SIGN_COLOUR, "sign", None, _read_letter(white, dark)))
                continue
            colour, mass = _colour(rgb[y0:y1, x0:x1][fg], bg)
            if mass < min_px * min(block, 2):  # faint spill of a neighbour's block in decoded latents
                continue
            objects.append(None)
            pending.append((b, len(objects) - 1, name, colour, (y0, y1), (x0, x1), bg))
        found.append(objects)

    for (b, k, name, colour, *_), (kind, size_name) in zip(pending, _match_templates(images, pending, block)):
        found[b][k] = Found(name, world.COLOUR_NAMES[colour], kind, size_name)
    return [Reading(world.COLOUR_NAMES[bg], tuple(objs)) for bg, objs in zip(backgrounds, found)]


def _match_templates(images, pending, block, chunk=256):
    """(kind, size) of each pending shape: the template of least L1 distance to its soft coverage.

    Coverage is compared inside the object's grid cell, over a window widened to whole blocks so that
    templates can be averaged over the same blocks as a decoded latent is."""
    if not pending:
        return []
    size = images.shape[-1]
    windows = [((y0 // block) * block, -(-y1 // block) * block, (x0 // block) * block, -(-x1 // block) * block)
               for *_, (y0, y1), (x0, x1), _ in pending]
    height = max(w[1] - w[0] for w in windows)
    width = max(w[3] - w[2] for w in windows)
    candidates = [(k, s) for k in world.KINDS for s in world.SIZE_NAMES]
    out = []
    for start in range(0, len(pending), chunk):
        part, wins = pending[start:start + chunk], windows[start:start + chunk]
        alpha = torch.zeros(len(part), height, width)
        xs = torch.zeros(len(part), 1, width)
        ys = torch.zeros(len(part), height, 1)
        valid = torch.zeros(len(part), height, width, dtype=torch.bool)
        for i, ((b, _, _, colour, (y0, y1), (x0, x1), bg), (wy0, _, wx0, _)) in enumerate(zip(part, wins)):
            back = world.PALETTE[bg]
            diff = world.PALETTE[colour] - back
            crop = images[b, :, y0:y1, x0:x1].permute(1, 2, 0)
            cell = (slice(y0 - wy0, y1 - wy0), slice(x0 - wx0, x1 - wx0))
            alpha[i][cell] = (((crop - back) @ diff) / (diff @ diff)).clamp(0, 1)
            valid[i][cell] = True
            xs[i, 0] = (torch.arange(width) + wx0 + 0.5) / size
            ys[i, :, 0] = (torch.arange(height) + wy0 + 0.5) / size
        mass = alpha.sum((1, 2)).clamp(min=1e-6)
        cx = (alpha * xs).sum((1, 2)) / mass
        cy = (alpha * ys).sum((1, 2)) / mass
        errors = []
        for kind, size_name in candidates:
            r = torch.full((len(part),), world.SIZES[size_name])
            tmpl = world.coverage([kind] * len(part), cx, cy - world.CENTROID_DY[kind] * r, r, xs, ys, 1.0 / size)
            if block > 1:
                tmpl = F.interpolate(F.avg_pool2d(tmpl[:, None], block), scale_factor=block, mode="nearest")[:, 0]
            errors.append(((tmpl - alpha).abs() * valid).sum((1, 2)))
        best = torch.stack(errors, 1).argmin(1)
        out.extend(candidates[int(i)] for i in best)
    return out


# ---------------------------------------------------------------- scoring against the spec


def _match(obj, available):
    """The detected object that stands for `obj`: by identity first (colour and kind, then colour, then kind),
    preferring one in the asked cell; none of the same colour or kind means it is missing. A picture full of
    spurious objects does not score positions for free: the asked red circle must be the one in the cell."""
    if isinstance(obj, world.Sign):
        # A sign whose letter is lost (block=8) may read as a white object: its cell still places it.
        identities = [lambda f: f.kind == "sign", lambda f: f.position == obj.position]
    else:
        identities = [lambda f: (f.colour, f.kind) == (obj.colour, obj.kind), lambda f: f.colour == obj.colour,
                      lambda f: f.kind == obj.kind]
    for same in identities:
        found = [f for f in available if same(f)]
        for f in sorted(found, key=lambda f: f.position != obj.position):
            return f
    return None


def score(scene: world.Scene, reading: Reading) -> dict[str, list[bool]]:
    """Per attribute, one verdict per thing the spec asks for (background and count once per image)."""
    out = {a: [] for a in ATTRIBUTES}
    out["background"].append(reading.background == scene.background)
    out["count"].append(len(reading.objects) == len(scene.objects))
    available = list(reading.objects)
    for obj in scene.objects:
        f = _match(obj, available)
        if f is not None:
            available.remove(f)
        out["position"].append(f is not None and f.position == obj.position)
        if isinstance(obj, world.Sign):
            out["letter"].append(f is not None and f.letter == obj.letter)
        else:
            out["colour"].append(f is not None and f.colour == obj.colour)
            out["kind"].append(f is not None and f.kind == obj.kind)
            out["size"].append(f is not None and f.size == obj.size)
    return out


def accuracy(scenes, readings) -> dict[str, float]:
    """Mean verdict per attribute over many images (attributes nobody asked for are left out)."""
    total = {a: [] for a in ATTRIBUTES}
    for scene, reading in zip(scenes, readings):
        for a, verdicts in score(scene, reading).items():
            total[a] += verdicts
    return {a: sum(v) / len(v) for a, v in total.items() if v}
