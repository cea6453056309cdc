"""A procedural world of coloured shapes with plain-English captions. Pure torch: no ComfyUI.

A scene is 1-3 shapes, and optionally a white sign in a corner with one black capital letter, on a 3x3 grid of named
positions over a plain (optionally striped) background. All geometry is in canvas units (0..1, y down), so
one scene renders with the same proportions at 64 or 128 px. Objects never overlap and each stays inside
its own cell of the grid (cell borders at 0.34 and 0.66), which is what lets the evaluator read them back.

    scenes = sample_scenes(32, seed=0)       # seeded specs
    images = render(scenes, 128)             # (32, 3, 128, 128) float in [0, 1]
    scenes[0].caption                        # "a small red circle at the top left and ... on a blue background"
"""
from __future__ import annotations

import dataclasses
import random

import torch

# ---------------------------------------------------------------- vocabulary

COLOURS = {  # sRGB; pairwise distances >= 0.38 in [0, 1] units so pixels classify without doubt
    "red": (220, 30, 30),
    "orange": (240, 125, 20),
    "yellow": (245, 225, 40),
    "green": (30, 160, 60),
    "blue": (30, 70, 220),
    "purple": (140, 50, 190),
    "white": (245, 245, 245),
    "black": (20, 20, 20),
}
COLOUR_NAMES = tuple(COLOURS)
KINDS = ("circle", "square", "triangle", "star")
POSITIONS = {  # name -> (x, y) centre; the phrase used in captions
    "top left": ((0.18, 0.18), "at the top left"),
    "top": ((0.5, 0.18), "at the top"),
    "top right": ((0.82, 0.18), "at the top right"),
    "left": ((0.18, 0.5), "on the left"),
    "centre": ((0.5, 0.5), "in the centre"),
    "right": ((0.82, 0.5), "on the right"),
    "bottom left": ((0.18, 0.82), "at the bottom left"),
    "bottom": ((0.5, 0.82), "at the bottom"),
    "bottom right": ((0.82, 0.82), "at the bottom right"),
}
POSITION_NAMES = tuple(POSITIONS)
SIZES = {"small": 0.08, "large": 0.14}  # bounding radius in canvas units
SIZE_NAMES = tuple(SIZES)
CELL_EDGES = (0.34, 0.66)  # the grid cells' borders; every object stays inside its cell
JITTER = 0.01  # max centre offset: 0.18 + JITTER + large radius < 0.34 keeps objects in their cells
SIGN_COLOUR, LETTER_COLOUR = "white", "black"
STRIPE_PERIOD, STRIPE_DUTY, STRIPE_MIX = 0.125, 0.25, 0.15

# ---------------------------------------------------------------- the data distribution (what the model sees)

# Colour-shape pairs drawn rarely (Rare-to-Frequent has a real target) and never (held out of training).
RARE_PAIRS = frozenset({("red", "star"), ("blue", "triangle"), ("white", "square")})
RARE_KEEP = 0.05  # a drawn rare pair survives with this probability: each appears in ~0.3 % of captions
HELD_OUT_PAIRS = frozenset({("yellow", "star"), ("purple", "square")})
SHAPE_COUNT_WEIGHTS = {1: 0.4, 2: 0.35, 3: 0.25}
SIGN_P = 0.3  # scenes that also carry a sign (in a corner)
STRIPED_P = 0.0  # striped backgrounds (the renderer and evaluator support them; training leaves them out)

# ---------------------------------------------------------------- letters: a 3x3 font at one latent per stroke

# Six letters whose 3x3 glyphs differ pairwise in >= 4 of 9 cells, so a reading with one wrong cell still names
# the right letter. At 128 px a glyph cell is one 8x8 block of the analytic TAESD's latent, so the model can
# draw letters exactly (a finer font falls between latents and decodes to grey).
_FONT = """
C ### #.. ###
J ..# ..# ###
S .## .#. ##.
V #.# #.# .#.
X #.# .#. #.#
Z ##. .#. .##
"""
GLYPHS = {line.split()[0]: torch.tensor([[c == "#" for c in row] for row in line.split()[1:]])
          for line in _FONT.strip().splitlines()}  # letter -> (3, 3) bool
LETTERS = tuple(GLYPHS)
GLYPH_CELLS = 3
SIGN_CELLS = 5  # the square sign in glyph cells: the glyph plus a one-cell margin
# A 5-cell sign on the cell grid fits inside a grid cell only at the corners (the middle cells are 5.3 latents
# wide, offset by a third of one), so signs go to the corners.
SIGN_POSITIONS = ("top left", "top right", "bottom left", "bottom right")


def sign_cell_px(size: int) -> int:
    """Pixels per glyph cell: 8 (one latent) at 128 px, 4 at 64 px, so the sign is 40 or 20 pixels square."""
    return max(1, size // 16)


# ---------------------------------------------------------------- scene specs


@dataclasses.dataclass(frozen=True)
class Shape:
    kind: str
    colour: str
    position: str
    size: str
    dx: float = 0.0
    dy: float = 0.0

    @property
    def phrase(self) -> str:
        return f"a {self.size} {self.colour} {self.kind} {POSITIONS[self.position][1]}"


@dataclasses.dataclass(frozen=True)
class Sign:
    letter: str
    position: str  # one of SIGN_POSITIONS
    dx: float = 0.0  # always 0: a sign sits on the glyph-cell grid (kept so centre_of reads shapes and signs alike)
    dy: float = 0.0

    @property
    def phrase(self) -> str:
        return f"a sign with the letter {self.letter} {POSITIONS[self.position][1]}"


@dataclasses.dataclass(frozen=True)
class Scene:
    background: str
    shapes: tuple[Shape, ...]
    sign: Sign | None = None
    striped: bool = False

    @property
    def objects(self) -> tuple:
        return self.shapes + ((self.sign,) if self.sign else ())

    @property
    def caption(self) -> str:
        phrases = [o.phrase for o in self.objects]
        things = phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]
        ground = f"{'striped ' if self.striped else ''}{self.background} background"
        return f"{things} on {'an' if ground[0] in 'aeiou' else 'a'} {ground}"

    def pairs(self) -> set[tuple[str, str]]:
        return {(s.colour, s.kind) for s in self.shapes}


def _jitter(rng):
    return rng.uniform(-JITTER, JITTER), rng.uniform(-JITTER, JITTER)


def _draw_pair(rng, background):
    while True:
        colour = rng.choice([c for c in COLOUR_NAMES if c != background])
        kind = rng.choice(KINDS)
        if (colour, kind) in HELD_OUT_PAIRS:
            continue
        if (colour, kind) in RARE_PAIRS and rng.random() >= RARE_KEEP:
            continue
        return colour, kind


def sample_scene(rng: random.Random, sign_p: float = SIGN_P, striped_p: float = STRIPED_P,
                 max_shapes: int = max(SHAPE_COUNT_WEIGHTS)) -> Scene:
    background = rng.choice(COLOUR_NAMES)
    counts = [n for n in SHAPE_COUNT_WEIGHTS if n <= max_shapes]
    n = rng.choices(counts, weights=[SHAPE_COUNT_WEIGHTS[c] for c in counts])[0]
    with_sign = background != SIGN_COLOUR and rng.random() < sign_p
    sign = Sign(rng.choice(LETTERS), rng.choice(SIGN_POSITIONS)) if with_sign else None
    slots = rng.sample([p for p in POSITION_NAMES if sign is None or p != sign.position], n)
    shapes = []
    for slot in slots:
        colour, kind = _draw_pair(rng, background)
        shapes.append(Shape(kind, colour, slot, rng.choice(SIZE_NAMES), *_jitter(rng)))
    return Scene(background, tuple(shapes), sign, rng.random() < striped_p)


def sample_scenes(n: int, seed: int, **kwargs) -> list[Scene]:
    rng = random.Random(seed)
    return [sample_scene(rng, **kwargs) for _ in range(n)]


def rejitter(scene: Scene, rng: random.Random) -> Scene:
    """The same caption with fresh sub-cell offsets (training draws a new placement every time)."""
    offsets = [_jitter(rng) for _ in scene.shapes]
    shapes = tuple(dataclasses.replace(s, dx=dx, dy=dy) for s, (dx, dy) in zip(scene.shapes, offsets))
    return dataclasses.replace(scene, shapes=shapes)  # a sign sits on the glyph-cell grid: no offset


# ---------------------------------------------------------------- geometry (shared with the evaluator)


def colour_tensor(names) -> torch.Tensor:
    return torch.tensor([COLOURS[n] for n in names], dtype=torch.float32) / 255.0


PALETTE = colour_tensor(COLOUR_NAMES)  # (K, 3)

# Outlines in units of the bounding radius, y down. Every kind fits |x|, |y| <= 1.
_TRIANGLE = torch.tensor([[0.0, -1.0], [0.98, 0.85], [-0.98, 0.85]])
_STAR_INNER = 0.42


def _star_kites() -> list[torch.Tensor]:
    """A 5-point star as 5 convex kites (centre, inner, outer, inner), which tile it without overlap."""
    angle = torch.deg2rad(torch.arange(10) * 36.0 - 90.0)
    radius = torch.tensor([1.0, _STAR_INNER] * 5)
    pts = torch.stack([radius * torch.cos(angle), radius * torch.sin(angle)], 1)
    return [torch.stack([torch.zeros(2), pts[(2 * k - 1) % 10], pts[2 * k], pts[2 * k + 1]]) for k in range(5)]


def _half_planes(poly: torch.Tensor):
    """Outward unit normals n and offsets c of a convex polygon (either winding): inside iff n.p - c <= 0."""
    edges = poly.roll(-1, 0) - poly
    normals = torch.stack([edges[:, 1], -edges[:, 0]], 1)
    normals = normals / normals.norm(dim=1, keepdim=True)
    if (normals[0] * (poly.mean(0) - poly[0])).sum() > 0:  # the other winding: flip to point outward
        normals = -normals
    return normals, (normals * poly).sum(1)


_POLYGONS = {"triangle": [_half_planes(_TRIANGLE)], "star": [_half_planes(k) for k in _star_kites()]}
# The area centroid relative to the centre, in units of the radius (the evaluator aligns templates with it).
CENTROID_DY = {"circle": 0.0, "square": 0.0, "triangle": float(_TRIANGLE[:, 1].mean()), "star": 0.0}
_SQUARE_HALF = 0.8


def _cover(sdf, px):
    """Anti-aliased coverage from a signed distance (canvas units; px = one pixel)."""
    return (0.5 - sdf / px).clamp(0.0, 1.0)


def coverage(kinds, cx, cy, r, xs, ys, px) -> torch.Tensor:
    """Coverage in [0, 1] of N shapes. kinds: list of N names; cx, cy, r: (N,); xs: (N or 1, 1, W) and
    ys: (N or 1, H, 1) pixel-centre coordinates in canvas units; px: one pixel in canvas units. -> (N, H, W)."""
    x = xs - cx[:, None, None]
    y = ys - cy[:, None, None]
    rr = r[:, None, None]
    out = torch.zeros(x.shape[0], y.shape[1], x.shape[2])
    for kind in set(kinds):
        idx = torch.tensor([i for i, k in enumerate(kinds) if k == kind])
        xi, yi, ri = x[idx], y[idx], rr[idx]
        if kind == "circle":
            cov = _cover(torch.sqrt(xi * xi + yi * yi) - ri, px)
        elif kind == "square":
            qx, qy = xi.abs() - _SQUARE_HALF * ri, yi.abs() - _SQUARE_HALF * ri
            outside = torch.sqrt(qx.clamp(min=0) ** 2 + qy.clamp(min=0) ** 2)
            cov = _cover(outside + torch.maximum(qx, qy).clamp(max=0), px)
        else:  # union of convex pieces that share edges: their coverages add up
            cov = 0
            for normals, offsets in _POLYGONS[kind]:
                sdf = torch.stack([n[0] * xi + n[1] * yi - c * ri for n, c in zip(normals, offsets)]).amax(0)
                cov = cov + _cover(sdf, px)
            cov = cov.clamp(max=1.0)
        out[idx] = cov
    return out


def pixel_centres(size: int) -> torch.Tensor:
    return (torch.arange(size, dtype=torch.float32) + 0.5) / size


def centre_of(obj) -> tuple[float, float]:
    (x, y), _ = POSITIONS[obj.position]
    return x + obj.dx, y + obj.dy


def stripe_colour(rgb: torch.Tensor) -> torch.Tensor:
    """Stripes mix a little toward black on light backgrounds and toward white on dark ones."""
    luma = (rgb * torch.tensor([0.299, 0.587, 0.114])).sum(-1, keepdim=True)
    target = (luma < 0.5).float()
    return (1 - STRIPE_MIX) * rgb + STRIPE_MIX * target


def sign_box(sign: Sign, size: int) -> tuple[int, int, int, int]:
    """(top, left, height, width) in whole pixels, snapped to the glyph-cell grid so each stroke is whole latents."""
    cell = sign_cell_px(size)
    side = SIGN_CELLS * cell
    cx, cy = centre_of(sign)
    return round((cy * size - side / 2) / cell) * cell, round((cx * size - side / 2) / cell) * cell, side, side


# ---------------------------------------------------------------- rendering


def render(scenes: list[Scene], size: int = 64) -> torch.Tensor:
    """(B, 3, size, size) float32 in [0, 1]."""
    b = len(scenes)
    centres = pixel_centres(size)
    xs, ys = centres.view(1, 1, size), centres.view(1, size, 1)
    bg = colour_tensor([s.background for s in scenes])
    img = bg[:, :, None, None].expand(b, 3, size, size).clone()
    striped = torch.tensor([s.striped for s in scenes])
    if striped.any():
        band = ((xs + ys) / STRIPE_PERIOD).frac() < STRIPE_DUTY  # (1, S, S)
        stripe = stripe_colour(bg)[:, :, None, None].expand(b, 3, size, size)
        mask = band[None] & striped[:, None, None, None]
        img = torch.where(mask, stripe, img)

    shapes = [(i, s) for i, scene in enumerate(scenes) for s in scene.shapes]
    if shapes:
        rows = torch.tensor([i for i, _ in shapes])
        cx, cy = (torch.tensor(v) for v in zip(*(centre_of(s) for _, s in shapes)))
        r = torch.tensor([SIZES[s.size] for _, s in shapes])
        cov = coverage([s.kind for _, s in shapes], cx, cy, r, xs, ys, 1.0 / size)[:, None]
        col = colour_tensor([s.colour for _, s in shapes])[:, :, None, None]
        # Objects never overlap, so blending them one after another in any order is exact.
        for k in range(len(shapes)):
            img[rows[k]] = img[rows[k]] * (1 - cov[k]) + col[k] * cov[k]

    cell = sign_cell_px(size)
    sign_rgb, letter_rgb = colour_tensor([SIGN_COLOUR, LETTER_COLOUR])
    for i, scene in enumerate(scenes):
        if scene.sign is None:
            continue
        top, left, h, w = sign_box(scene.sign, size)
        img[i, :, top:top + h, left:left + w] = sign_rgb[:, None, None]
        glyph = GLYPHS[scene.sign.letter].repeat_interleave(cell, 0).repeat_interleave(cell, 1)
        g, n = cell, GLYPH_CELLS * cell  # the glyph starts one cell in
        patch = img[i, :, top + g:top + g + n, left + g:left + g + n]
        img[i, :, top + g:top + g + n, left + g:left + g + n] = torch.where(glyph, letter_rgb[:, None, None], patch)
    return img
