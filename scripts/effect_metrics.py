"""The measuring pieces every effect benchmark of scripts/effects.py shares: the shapes world loaded, image
statistics, the evaluator's readings, cell masks, masked errors, sampling as KSampler does, tables."""
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import comfy_env  # noqa: E402

DOCS = comfy_env.ROOT / "docs" / "BENCHMARKS.md"


CORE = ("background", "colour", "kind", "position")


def _shapes():
    comfy_env.bootstrap()
    sys.path.insert(0, str(comfy_env.ROOT / "shapes"))
    import adherence
    import train
    from sleight.shapes import evaluate, world
    return adherence, train, evaluate, world


def saturation(images):
    top, bottom = images.amax(1), images.amin(1)
    return float(((top - bottom) / top.clamp_min(1e-6)).mean())


def clipped(images):
    return float(((images <= 1 / 255) | (images >= 254 / 255)).float().mean())


def adherence_score(evaluate, scenes, images):
    acc = evaluate.accuracy(scenes, evaluate.read(images, block=8))
    return sum(acc[a] for a in CORE) / len(CORE), acc


def has(reading, position=None, colour=None, kind=None, size=None):
    """Whether the evaluator's reading holds an object with every given attribute (None: any), e.g. the asked
    colour and kind in the centre cell; has(reading, position) alone: the cell is not empty."""
    return any((position is None or f.position == position) and (colour is None or f.colour == colour)
               and (kind is None or f.kind == kind) and (size is None or f.size == size) for f in reading.objects)


def cell_mask(size, *positions, snap=1):
    """(1, size, size) mask (1 inside) of the named grid cells (world.CELL_EDGES), widened outward to whole
    snap x snap blocks: snap=8 gives whole latent cells, exactly what a latent mask can hold."""
    comfy_env.import_pack()
    from sleight.shapes import world

    edges = (0.0, *world.CELL_EDGES, 1.0)
    mask = torch.zeros(1, size, size)
    for name in positions:
        (x, y), _ = world.POSITIONS[name]
        (r0, r1), (c0, c1) = ([snap * math.floor(edges[i] * size / snap), snap * math.ceil(edges[i + 1] * size / snap)]
                              for i in (sum(v > e for e in world.CELL_EDGES) for v in (y, x)))
        mask[:, r0:r1, c0:c1] = 1.0
    return mask


def covered(mask, cell):
    """The share of `cell` ((1, S, S), 1 inside) that `mask` ((1, S, S) in [0, 1]) covers; NaN without a mask."""
    return math.nan if mask is None else float((mask * cell).sum() / cell.sum())


def masked_mse(a, b, mask):
    """Per image, the mean squared difference of (B, 3, S, S) images inside and outside `mask` ((1 or B, S, S),
    > 0.5 = inside): two (B,) tensors, NaN where a region is empty."""
    diff = (a.float() - b.float()).pow(2).mean(1)
    inside = (mask > 0.5).expand_as(diff)

    def mean(region):
        n = region.sum((1, 2))
        return torch.where(n > 0, (diff * region).sum((1, 2)) / n.clamp_min(1), math.nan)

    return mean(inside), mean(~inside)


def mean_of(records):
    """{key: mean over the records, NaNs left out} of a list of per-image dicts (bools count as 0 / 1)."""
    out = {}
    for key in records[0]:
        values = [float(r[key]) for r in records if not math.isnan(float(r[key]))]
        out[key] = sum(values) / len(values) if values else math.nan
    return out


def md_table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(["---"] * len(header)) + " |"]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows])


def sample(model, positive, negative, seeds, size, steps, cfg, sampler="euler", scheduler="normal", latent=None,
           noise_mask=None, sigmas=None, denoise=1.0):
    """Output latents, one per seed, as KSampler makes them (or SamplerCustom when `sampler` is a SAMPLER object
    and `sigmas` are given): from the empty latent or `latent`'s rows, `noise_mask` as SetLatentNoiseMask."""
    import comfy.sample

    if latent is None:
        latent = torch.zeros([len(seeds), 4, size // 8, size // 8])
    noise = torch.cat([comfy.sample.prepare_noise(latent[:1], s) for s in seeds])
    if sigmas is not None:
        return comfy.sample.sample_custom(model, noise, cfg, sampler, sigmas, positive, negative, latent,
                                          noise_mask=noise_mask, disable_pbar=True, seed=seeds[0]).cpu()
    return comfy.sample.sample(model, noise, steps, cfg, sampler, scheduler, positive, negative, latent, denoise=denoise,
                               noise_mask=noise_mask, disable_pbar=True, seed=seeds[0]).cpu()


def decode(vae, latents):
    return vae.decode(latents).movedim(-1, 1).float().cpu()


def _pct(v):
    return "—" if math.isnan(v) else f"{v:.0%}"


def _mse(v):
    return "—" if math.isnan(v) else f"{v:.4f}"


def _encoder(clip):
    """CLIPTextEncode, each text encoded once."""
    import tiny_models

    cache = {}

    def encode(text):
        if text not in cache:
            cache[text] = tiny_models.encode(clip, text)
        return cache[text]

    return encode


def _scene(world, background, *shapes):
    """A world.Scene of (kind, colour, position, size) tuples."""
    return world.Scene(background, tuple(world.Shape(*shape) for shape in shapes))


def object_mask(evaluate, world, image, cell):
    """(1, S, S): the pixels of `cell` far from the image's read background (the evaluator's foreground test for
    decoded latents), i.e. the object as a user would paint it; the whole cell when none are."""
    bg = world.PALETTE[world.COLOUR_NAMES.index(evaluate.read(image[None], block=8)[0].background)]
    far = ((image - bg[:, None, None]).norm(dim=0) > evaluate.FG_DISTANCE / 2)[None] & (cell > 0.5)
    return far.float() if bool(far.any()) else cell


def _move_px(world, origin, destination, size, axis):
    """The shift between two cells' centres along axis 0 (x) or 1 (y), in pixels snapped to the latent grid."""
    return 8 * round((world.POSITIONS[destination][0][axis] - world.POSITIONS[origin][0][axis]) * size / 8)
