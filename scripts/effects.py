"""Effect benchmarks on the shapes model (issue 8 §3): each landed trick against the same model without it,
same prompts and seeds, read back from pixels by shapes/evaluate.py.

    .venv/bin/python scripts/effects.py            # all tricks, printed
    .venv/bin/python scripts/effects.py --write    # ... and the summary in docs/BENCHMARKS.md
    make effects

- APG vs CFG at w = 10, 15: colour saturation and clipped channels (share of values at 0 or 1 after decoding)
  against adherence (mean of background / colour / kind / position accuracy). APG with the paper's defaults
  (η 0, β −0.5, r 15 scaled to the latent size) and without its reverse momentum (β 0), at 20 and 50 euler steps
  (--apg-steps; the momentum acts across steps). CFG 5 and the ground-truth renders of the same prompts are the
  reference rows.
- Prompt routing: "a C1 K in the centre on a B background" with "a C2 K ..." routed into every cross-attention
  layer of the cond rows: share of images whose centre shape reads C2, and the mean squared change inside the
  centre cell against outside it.
- Text-layer routing of letters (--kind-size px: at 128 px a glyph stroke is one latent): a sign with letter A in
  a corner beside a red circle, letter B routed from 0.08 of the schedule into the layer Find text layers ranks
  first (the change inside the sign's cell minus outside, one case and seed), and into every layer. Share of
  signs that read A and B, and the mean squared change inside the sign's cell against outside it.
- Rare-to-Frequent: rare and held-out colour–shape pairs (world.RARE_PAIRS, world.HELD_OUT_PAIRS). The model gets
  their colour right and their kind wrong, so the frequent prompt keeps the kind in the nearest common colour
  (blue triangle -> purple triangle). The paper's SDXL setting (alternate to level 3) and its interpolation kept on
  every step: share whose centre object has the asked colour and kind, at --kind-size px.
- Add-it (at --kind-size px, as it reads the new shape's kind): a generated one-shape source (re-noised source
  trajectory, same seed) and the target prompt = the source caption plus a second shape in another cell,
  subject = its colour and kind. Against the plain target prompt with the same seed: share where the subject is
  read anywhere and in the asked cell, share where the source object is still read in its cell, the MSE against
  the source image outside the new shape's cell, and how much of the new and of the source shape's cell Add-it's
  blending mask (its MASK output) covers: with the attention mask, and with that cell given as the mask.
  On a real source (addit_real): the same scenes rendered, VAE-encoded and inverted, against SDEdit from the
  encoded source with the target caption at denoise 0.6 and 0.8.
- DesignEdit (at --kind-size px: at 64 px a small shape is under one latent): a generated two-shape source,
  DDIM-inverted with the empty prompt as the paper does. Remove: the mask is one shape's grid cell (widened to
  whole latent cells); share where no object is read in that cell, share where the other shape is kept, MSE
  outside the mask, against the source itself, a plain regeneration from the caption without that shape,
  DesignEdit with its key masking switched off (paste-back only) and with the masked keys excluded (−∞ logits)
  instead of zeroed (the official code). The paper inverts with the empty prompt and samples with it as both
  positive and negative; the rows marked "prompt" do the same with the caption of what should stay.
  Move and move + enlarge x1.75: remove the shape's cell and paste it back as a layer (its mask: the shape's
  own pixels, what a user paints) at the centre cell; share read at the destination, gone from the origin,
  other shape kept, MSE outside both cells, against the regeneration from the target caption.
- HD-Painter (at --kind-size px), the paper's protocol (the prompt names only the object, the mask is where it
  goes): a generated two-shape scene; the hole is one of its empty cells (whole latent cells, a latent noise
  mask: the shapes model is a plain SD1.5, not an inpainting model) and the prompt asks for a shape and the
  background without saying where. Share whose hole holds an object of the asked colour and kind, of the asked
  colour, any object, and the MSE outside the hole: plain inpainting vs PAIntA vs PAIntA + RASG at eta 0.1 (the
  official CLI's, the node's default) and 0.25 (the official evaluation's), same conditioning (PAIntA's) and
  seeds; a reference row gives plain inpainting the prompt that also says where, and a control runs RASG's
  DDIM-eta loop with random noise in place of the guidance.
- Noise search (random mode, the node's default): mean best verifier score and evaluator adherence of the
  chosen sample for N = 1, 2, 4, 8. Verifiers: latent self-consistency (the node's, without CLIP vision; the
  CLIP verifiers need a CLIP-vision model and ours has random weights, so they are not measured) and an
  oracle, the evaluator's adherence to the prompt. samplers/search.NoiseSearch takes any callable verifier
  (name, needs_early, __call__(Candidates) -> scores), so the oracle is written as one (`OracleAdherence`). Random
  search's candidates are the seeds seed..seed+N-1 whatever the verifier, so one node run with budget 8 and
  top_k 8 yields every N (best of the first N candidates, ties to the earlier one, as search.order does) and
  the oracle's choice among the same candidates, without sampling them again.

Sources and plain regenerations are sampled as KSampler does (euler / normal, cfg 5, empty negative); each
edit uses its paper's sampler settings (noted per section) and the node defaults, which are the papers'.

Nodes run through their own `execute`, so this measures what a workflow gets. Numbers depend on how far the
model is trained: the checkpoint's training step is printed with them.
"""
import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import comfy_env  # noqa: E402
import doc_blocks  # noqa: E402

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


def run_apg(model, clip, vae, n, size, step_counts):
    adherence, _, evaluate, world = _shapes()
    from sleight.nodes.guidance import SleightAPG

    scenes = adherence.prompts(n)
    captions, seeds = [s.caption for s in scenes], list(range(n))
    def apg(beta):
        return SleightAPG.execute(model, eta=0.0, momentum=beta, norm_threshold=15.0, start_percent=0.0,
                                  end_percent=1.0, cfg_warmup_steps=0, cfg_warmup_scale=1.0,
                                  scale_threshold_by_latent_size=True).result[0]

    paper, no_momentum = apg(-0.5), apg(0.0)
    truth = world.render(scenes, size)
    rows = [("ground truth", "—", "—", saturation(truth), clipped(truth),
             adherence_score(evaluate, scenes, truth)[0])]
    for steps in step_counts:
        for label, m, w in [("CFG", model, 5.0), ("CFG", model, 10.0), ("APG", paper, 10.0),
                            ("APG β 0", no_momentum, 10.0), ("CFG", model, 15.0), ("APG", paper, 15.0),
                            ("APG β 0", no_momentum, 15.0)]:
            images = adherence.generate(m, clip, vae, captions, seeds, size=size, steps=steps, cfg=w)
            rows.append((label, w, steps, saturation(images), clipped(images),
                         adherence_score(evaluate, scenes, images)[0]))
    lines = ["| guidance | w | steps | saturation | clipped | adherence |", "| --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {g} | {w} | {n} | {s:.3f} | {c:.1%} | {a:.1%} |" for g, w, n, s, c, a in rows]
    return "\n".join(lines), rows


# ---------------------------------------------------------------- shared measuring pieces


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


def run_routing(model, clip, vae, n_seeds, size, steps, cfg=5.0):
    adherence, _, evaluate, world = _shapes()
    from sleight.nodes.routing import SleightPromptRoute
    import tiny_models

    cases = [("red", "blue", "circle", "yellow"), ("green", "orange", "square", "white"),
             ("blue", "red", "triangle", "green"), ("white", "purple", "circle", "black")]
    hits = base_hits = 0
    inside, outside = [], []
    cell = cell_mask(size, "centre")
    for c1, c2, kind, bg in cases:
        prompt = f"a large {c1} {kind} in the centre on a {bg} background"
        routed = f"a large {c2} {kind} in the centre on a {bg} background"
        m = SleightPromptRoute.execute(model, tiny_models.encode(clip, routed), layers="custom", custom_layers="*",
                                       start_percent=0.0, end_percent=1.0, rows="cond").result[0]
        seeds = list(range(n_seeds))
        base = adherence.generate(model, clip, vae, [prompt] * n_seeds, seeds, size=size, steps=steps, cfg=cfg)
        out = adherence.generate(m, clip, vae, [prompt] * n_seeds, seeds, size=size, steps=steps, cfg=cfg)
        hits += sum(has(r, "centre", c2) for r in evaluate.read(out, block=8))
        base_hits += sum(has(r, "centre", c2) for r in evaluate.read(base, block=8))
        mse_in, mse_out = masked_mse(out, base, cell)
        inside += mse_in.tolist()
        outside += mse_out.tolist()
    total = len(cases) * n_seeds
    row = {"images": total, "routed colour, baseline": base_hits / total, "routed colour, routed": hits / total,
           "MSE inside centre cell": sum(inside) / total, "MSE outside": sum(outside) / total}
    return md_table(["images", "centre reads the routed colour: baseline → routed", "change inside centre cell",
                     "outside"],
                    [(total, f"{row['routed colour, baseline']:.0%} → {row['routed colour, routed']:.0%}",
                      f"{row['MSE inside centre cell']:.4f}", f"{row['MSE outside']:.4f}")]), row


# (letter asked, letter routed, the sign's corner, background); a red circle in the centre stays the same.
LETTER_CASES = [("C", "X", "top left", "blue"), ("J", "S", "top right", "green"),
                ("V", "Z", "bottom left", "orange"), ("X", "C", "bottom right", "purple")]


def run_letters(model, clip, vae, n_seeds, size, steps, cfg=5.0):
    """The text-layer routing of Staniszewski et al. on this model: Find text layers localises the layer that
    changes the sign most (inside minus outside the sign's cell, the first case, seed 0; top 1), then the routed
    letter goes into that layer only, from the paper's step 4 of 50 (0.08), and into every layer for comparison."""
    _, _, evaluate, world = _shapes()
    from sleight.samplers import find_layers
    from sleight.nodes.routing import SleightPromptRoute
    import tiny_models

    centre = world.Shape("circle", "red", "centre", "large")

    def caption(letter, corner, bg):
        return world.Scene(bg, (centre,), world.Sign(letter, corner)).caption

    def letter_at(reading, corner):
        return next((f.letter for f in reading.objects if f.kind == "sign" and f.position == corner), None)

    negative = tiny_models.encode(clip, "")
    a, b, corner, bg = LETTER_CASES[0]
    _, found, _ = find_layers.find_layers(
        model, tiny_models.encode(clip, caption(a, corner, bg)), tiny_models.encode(clip, caption(b, corner, bg)),
        negative, 0, steps, cfg, "euler", "normal", size, size, top_k=1, mask=cell_mask(size, corner, snap=8))
    variants = [(f"found layer {found}", found), ("every layer", "*")]
    seeds = list(range(n_seeds))
    counts = {"baseline": [0, 0], **{name: [0, 0] for name, _ in variants}}  # [reads asked, reads routed]
    mse = {name: ([], []) for name, _ in variants}
    for a, b, corner, bg in LETTER_CASES:
        prompt, routed = tiny_models.encode(clip, caption(a, corner, bg)), tiny_models.encode(clip, caption(b, corner, bg))
        base = decode(vae, sample(model, prompt, negative, seeds, size, steps, cfg))
        outs = {"baseline": base}
        for name, spec in variants:
            m = SleightPromptRoute.execute(model, routed, layers="custom", custom_layers=spec, start_percent=0.08,
                                           end_percent=1.0, rows="cond").result[0]
            outs[name] = decode(vae, sample(m, prompt, negative, seeds, size, steps, cfg))
            inside, outside = masked_mse(outs[name], base, cell_mask(size, corner, snap=8))
            mse[name][0].extend(inside.tolist())
            mse[name][1].extend(outside.tolist())
        for name, images in outs.items():
            letters = [letter_at(r, corner) for r in evaluate.read(images, block=8)]
            counts[name][0] += letters.count(a)
            counts[name][1] += letters.count(b)
    total = len(LETTER_CASES) * n_seeds
    rows = [("plain prompt (letter A)", f"{counts['baseline'][0] / total:.0%}", f"{counts['baseline'][1] / total:.0%}",
             "—", "—")]
    for name, _ in variants:
        rows.append((f"letter B routed into {name}", f"{counts[name][0] / total:.0%}", f"{counts[name][1] / total:.0%}",
                     _mse(sum(mse[name][0]) / total), _mse(sum(mse[name][1]) / total)))
    raw = {"images": total, "found layer": found, "counts": counts,
           "mse": {k: [sum(v[0]) / total, sum(v[1]) / total] for k, v in mse.items()}}
    return md_table(["", "sign reads letter A", "sign reads letter B", "change inside the sign's cell", "outside"],
                    rows), raw


def frequent_colour(world, colour, kind, background):
    """The frequent stand-in for a rare (colour, kind) pair: the same kind in the nearest colour (sRGB) that is common
    with it. The kind is kept because it is what the model fails to draw for these pairs (it gets the colour right)."""
    common = [c for c in world.COLOUR_NAMES if c not in (colour, background)
              and (c, kind) not in world.RARE_PAIRS | world.HELD_OUT_PAIRS]
    return min(common, key=lambda c: sum((a - b) ** 2 for a, b in zip(world.COLOURS[c], world.COLOURS[colour])))


# (column, mode, visual detail level, stop_percent): the paper's SDXL setting at level 3 (alternate for 10 of 50
# steps) and at its highest level 5 (30 of 50), and the interpolation it uses for Flux schnell kept on every step:
# this model settles the kind late, so only the longer schedules reach it
R2F_VARIANTS = (("alternate, level 3", "alternate", 3, -1.0), ("alternate, level 5", "alternate", 5, -1.0),
                ("interpolate, all steps", "interpolate", 3, 1.0))


def run_r2f(model, clip, vae, n_seeds, size, steps, cfg=5.0):
    adherence, _, evaluate, world = _shapes()
    from sleight.nodes.prompt import SleightRareToFrequent
    from sleight.samplers.r2f import DEFAULT_ALPHAS
    import tiny_models

    pairs = [(p, "rare") for p in sorted(world.RARE_PAIRS)] + [(p, "held out") for p in sorted(world.HELD_OUT_PAIRS)]
    names = [name for name, *_ in R2F_VARIANTS]
    lines = ["| pair | kind | frequent prompt's colour | baseline | " + " | ".join(f"R2F {n}" for n in names) + " |",
             "| --- | --- | --- | --- | " + " | ".join("---" for _ in names) + " |"]
    rows = []
    for (colour, kind), what in pairs:
        bg = "black" if colour != "black" else "white"
        prompt = f"a large {colour} {kind} in the centre on a {bg} background"
        stand_in = frequent_colour(world, colour, kind, bg)
        frequent = f"a large {stand_in} {kind} in the centre on a {bg} background"
        models = [model] + [SleightRareToFrequent.execute(
            model, tiny_models.encode(clip, prompt), tiny_models.encode(clip, frequent), visual_detail_level=level,
            mode=mode, stop_percent=stop, level_map="sdxl", alphas=DEFAULT_ALPHAS).result[0]
            for _, mode, level, stop in R2F_VARIANTS]
        seeds = list(range(n_seeds))
        score = []
        for mm in models:
            images = adherence.generate(mm, clip, vae, [prompt] * n_seeds, seeds, size=size, steps=steps, cfg=cfg)
            score.append(sum(has(r, "centre", colour, kind) for r in evaluate.read(images, block=8)) / n_seeds)
        rows.append({"pair": f"{colour} {kind}", "kind": what, "frequent": frequent, "baseline": score[0],
                     **{name: v for name, v in zip(names, score[1:])}})
        lines.append(f"| {colour} {kind} | {what} | {stand_in} | " + " | ".join(f"{v:.0%}" for v in score) + " |")
    n = len(pairs)
    lines.append("| **all** | | | " + " | ".join(f"**{sum(r[k] for r in rows) / n:.0%}**"
                                                 for k in ["baseline"] + names) + " |")
    return "\n".join(lines), rows


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


# (source shape, added shape, background); no rare or held-out pair, the added shape in an empty cell
ADDIT_CASES = [(("circle", "red", "top left", "large"), ("square", "blue", "right", "large"), "yellow"),
               (("triangle", "green", "bottom", "large"), ("circle", "orange", "top", "large"), "white"),
               (("square", "orange", "left", "large"), ("star", "purple", "bottom right", "large"), "black"),
               (("star", "white", "centre", "large"), ("triangle", "red", "top left", "large"), "blue")]


def run_addit(model, clip, vae, n_seeds, size, steps, cfg=5.0):
    _, _, evaluate, world = _shapes()
    from sleight.nodes.inversion import SleightSourceTrajectory

    encode, seeds = _encoder(clip), list(range(n_seeds))
    labels = ("plain target prompt", "Add-it", "Add-it, mask given: the new shape's cell")
    records = {label: [] for label in labels}
    for src_shape, new_shape, bg in ADDIT_CASES:
        source, target = _scene(world, bg, src_shape), _scene(world, bg, src_shape, new_shape)
        kept, added = source.shapes[0], target.shapes[1]
        new_cell, src_cell = cell_mask(size, added.position, snap=8), cell_mask(size, kept.position, snap=8)
        src_latents = sample(model, encode(source.caption), encode(""), seeds, size, steps, cfg)
        src_images = decode(vae, src_latents)
        plain = decode(vae, sample(model, encode(target.caption), encode(""), seeds, size, steps, cfg))
        for i, seed in enumerate(seeds):
            # A generated source: re-noised with the seed that made it, and the edit sampled from that seed too.
            traj = SleightSourceTrajectory.execute(model, {"samples": src_latents[i:i + 1]}, encode(source.caption),
                                                   seed).result[0]
            images, masks = {"plain target prompt": plain[i:i + 1]}, {}
            images.update(addit_edits(model, clip, vae, encode, traj, target.caption, added, new_cell, seed, size,
                                      steps, cfg, masks))
            for label, image in images.items():
                records[label].append(addit_record(evaluate, image, src_images[i:i + 1], kept, added, new_cell,
                                                   src_cell, masks.get(label)))
    return addit_table(records), {"images per row": len(ADDIT_CASES) * n_seeds,
                                  **{label: mean_of(recs) for label, recs in records.items()}}


def addit_edits(model, clip, vae, encode, trajectory, prompt, added, new_cell, seed, size, steps, cfg, masks):
    """Add-it at the node's defaults (the paper's for the source's kind), with its attention mask and with the new
    shape's cell given as its mask: {label: image}; each run's blending mask goes into `masks`."""
    from sleight.nodes.insertion import SleightAddIt, SleightAddItMask

    images = {}
    for label, given in (("Add-it", None), ("Add-it, mask given: the new shape's cell", new_cell)):
        m, positive = SleightAddIt.execute(model, clip, trajectory, prompt, f"{added.colour} {added.kind}", gamma=0.0,
                                           structure_transfer=-1.0, blend_at=-1.0, double_stream_end=10 / 30,
                                           single_stream_end=20 / 30, mask=given, dilation=1,
                                           auto_gamma_at=5 / 30).result
        out = sample(m, positive, encode(""), [seed], size, steps, cfg)
        images[label], masks[label] = decode(vae, out), SleightAddItMask.execute(m, {"samples": out}).result[0]
    return images


def addit_record(evaluate, image, source, kept, added, new_cell, src_cell, mask=None):
    """One edited image: the new shape read anywhere / in its cell, the source's shape kept, the MSE against the
    source outside the new shape's cell, and how much of each cell Add-it's blending mask covers (NaN: no mask)."""
    reading = evaluate.read(image, block=8)[0]
    return {"subject anywhere": has(reading, None, added.colour, added.kind),
            "subject in its cell": has(reading, added.position, added.colour, added.kind),
            "source object kept": has(reading, kept.position, kept.colour, kept.kind),
            "MSE outside the new cell": float(masked_mse(image, source, new_cell)[1][0]),
            "mask covers the new cell": covered(mask, new_cell), "mask covers the source's cell": covered(mask, src_cell)}


def addit_table(records):
    rows = {label: mean_of(recs) for label, recs in records.items()}
    return md_table(["", "subject anywhere", "subject in its cell", "source object kept",
                     "MSE outside the new shape's cell", "mask covers the new shape's cell",
                     "mask covers the source shape's cell"],
                    [(label, _pct(r["subject anywhere"]), _pct(r["subject in its cell"]), _pct(r["source object kept"]),
                      _mse(r["MSE outside the new cell"]), _pct(r["mask covers the new cell"]),
                      _pct(r["mask covers the source's cell"])) for label, r in rows.items()])


SDEDIT_DENOISE = (0.6, 0.8)


def run_addit_real(model, clip, vae, n_seeds, size, steps, cfg=5.0):
    """Add-it on a real source: each case's source scene rendered, VAE-encoded and inverted (Sleight · Invert, the
    sampling schedule, 2 fixed-point iterations as the official code), against SDEdit from the same latent with
    the target caption. The MSE is against the encoded source decoded again (what any edit could keep)."""
    _, _, evaluate, world = _shapes()
    from sleight.nodes.inversion import SleightInvert

    encode, seeds = _encoder(clip), list(range(n_seeds))
    labels = [f"SDEdit, denoise {d}" for d in SDEDIT_DENOISE] + ["Add-it", "Add-it, mask given: the new shape's cell"]
    records = {label: [] for label in labels}
    for src_shape, new_shape, bg in ADDIT_CASES:
        source, target = _scene(world, bg, src_shape), _scene(world, bg, src_shape, new_shape)
        kept, added = source.shapes[0], target.shapes[1]
        new_cell, src_cell = cell_mask(size, added.position, snap=8), cell_mask(size, kept.position, snap=8)
        latent = vae.encode(world.render([source], size).movedim(1, -1)).cpu()
        reference = decode(vae, latent)
        traj = SleightInvert.execute(model, {"samples": latent}, encode(source.caption), steps, "normal", 1.0,
                                     2).result[0]
        for seed in seeds:
            images, masks = {}, {}
            for d in SDEDIT_DENOISE:
                images[f"SDEdit, denoise {d}"] = decode(vae, sample(model, encode(target.caption), encode(""), [seed],
                                                                   size, steps, cfg, latent=latent, denoise=d))
            images.update(addit_edits(model, clip, vae, encode, traj, target.caption, added, new_cell, seed, size,
                                      steps, cfg, masks))
            for label, image in images.items():
                records[label].append(addit_record(evaluate, image, reference, kept, added, new_cell, src_cell,
                                                   masks.get(label)))
    return addit_table(records), {"images per row": len(ADDIT_CASES) * n_seeds,
                                  **{label: mean_of(recs) for label, recs in records.items()}}


# (shape A: removed / moved to the centre, shape B: kept, background); A small in a corner so that the layer,
# moved and enlarged x1.75 about its centre, stays on the canvas and clear of B
DESIGN_CASES = [(("circle", "red", "top left", "small"), ("square", "blue", "bottom", "large"), "yellow"),
                (("triangle", "green", "top right", "small"), ("circle", "orange", "left", "large"), "white"),
                (("circle", "purple", "bottom left", "small"), ("triangle", "white", "top", "large"), "black"),
                (("star", "orange", "bottom right", "small"), ("square", "green", "top left", "large"), "blue")]
ENLARGE = 1.75  # small -> large (world.SIZES: 0.08 -> 0.14)


def object_mask(evaluate, world, image, cell):
    """(1, S, S): the pixels of `cell` far from the image's read background (the evaluator's foreground test for
    decoded latents), i.e. the object as a user would paint it; the whole cell when none are."""
    bg = world.PALETTE[world.COLOUR_NAMES.index(evaluate.read(image[None], block=8)[0].background)]
    far = ((image - bg[:, None, None]).norm(dim=0) > evaluate.FG_DISTANCE / 2)[None] & (cell > 0.5)
    return far.float() if bool(far.any()) else cell


def _move_px(world, origin, destination, size, axis):
    """The shift between two cells' centres along axis 0 (x) or 1 (y), in pixels snapped to the latent grid."""
    return 8 * round((world.POSITIONS[destination][0][axis] - world.POSITIONS[origin][0][axis]) * size / 8)


def run_designedit(model, clip, vae, n_seeds, size, steps, cfg=5.0):
    _, _, evaluate, world = _shapes()
    from sleight.nodes.designedit import SleightDesignEditLayer, SleightDesignEditLayers, SleightDesignEditRemove
    from sleight.nodes.inversion import SleightInvert

    encode, seeds, dest = _encoder(clip), list(range(n_seeds)), "centre"
    # The paper: DDIM 50 steps (here --steps), ddim_uniform, cfg 7.5, the empty prompt as positive and negative.
    edit_cfg, empty = 7.5, encode("")
    remove_defaults = dict(refine_mask=None, key_mode="zero keys (official)", feather=0, mask_start=0.02,
                           mask_end=0.78, refine_end=0.5, blend_end=0.82, proximal_strength=0.1,
                           proximal_start_percent=0.6)
    dilation = round(20 * size / 1024)  # the paper's 20 px dilation at 1024 px (SDXL), scaled to this size
    records = {}

    def record(edit, method, image, src, mask, a, b, size_name=None):
        """One edited image: A at the destination (move rows), A's cell emptied, B kept, MSE outside `mask`."""
        reading = evaluate.read(image, block=8)[0]
        records.setdefault((edit, method), []).append({
            "at destination": has(reading, dest, a.colour, a.kind, size_name) if edit != "remove" else math.nan,
            "origin emptied": not has(reading, a.position), "other kept": has(reading, b.position, b.colour, b.kind),
            "MSE outside": float(masked_mse(image, src, mask)[1][0])})

    for a_shape, b_shape, bg in DESIGN_CASES:
        source = _scene(world, bg, a_shape, b_shape)
        a, b = source.shapes
        origin, both = cell_mask(size, a.position, snap=8), cell_mask(size, a.position, dest, snap=8)
        targets = {"remove": world.Scene(bg, (b,))}
        for scale, size_name in ((1.0, "small"), (ENLARGE, "large")):
            targets[scale] = world.Scene(bg, (world.Shape(a.kind, a.colour, dest, size_name), b))
        src_latents = sample(model, encode(source.caption), empty, seeds, size, steps, cfg)
        src_images = decode(vae, src_latents)
        regen = {key: decode(vae, sample(model, encode(scene.caption), empty, seeds, size, steps, cfg))
                 for key, scene in targets.items()}
        move_x, move_y = (_move_px(world, a.position, dest, size, axis) for axis in (0, 1))
        for i, seed in enumerate(seeds):
            src, latent = src_images[i:i + 1], {"samples": src_latents[i:i + 1]}
            layer_mask = object_mask(evaluate, world, src[0], origin)
            layers = {scale: SleightDesignEditLayer.execute(latent, layer_mask, move_x, move_y, scale,
                                                            "none").result[0] for scale in (1.0, ENLARGE)}
            inverted = {}

            def designedit(text, layer=None, **overrides):
                """The source edited with `text` as the inversion prompt, the positive and the negative (as the
                paper does with ""), `layer` pasted in, the remove node's settings overridden."""
                if text not in inverted:
                    inverted[text] = SleightInvert.execute(model, latent, encode(text), steps, "ddim_uniform", 1.0,
                                                           0).result[0]
                m = SleightDesignEditRemove.execute(model, inverted[text], origin, dilation,
                                                    **{**remove_defaults, **overrides}).result[0]
                if layer is not None:
                    m = SleightDesignEditLayers.execute(m, layer).result[0]
                return decode(vae, sample(m, encode(text), encode(text), [seed], size, steps, edit_cfg, "ddim",
                                          "ddim_uniform", latent=latent["samples"]))

            def removal(method, image):
                record("remove", method, image, src, origin, a, b)

            no_key_mask = dict(mask_start=1.0, mask_end=1.0)  # the key-mask window emptied: only the blending
            excluded = dict(key_mode="exclude keys")
            kept = targets["remove"].caption
            removal("source image", src)
            removal("regeneration without it", regen["remove"][i:i + 1])
            removal("paste-back only (no key masking)", designedit("", **no_key_mask))
            removal("DesignEdit", designedit(""))
            removal("DesignEdit, masked keys excluded (−∞)", designedit("", **excluded))
            removal("paste-back only, prompt: the caption without it", designedit(kept, **no_key_mask))
            removal("DesignEdit, prompt: the caption without it", designedit(kept))
            removal("DesignEdit, prompt: the caption without it, masked keys excluded", designedit(kept, **excluded))
            for scale, size_name in ((1.0, None), (ENLARGE, "large")):
                edit = "move to the centre" if scale == 1.0 else f"move to the centre, enlarge ×{ENLARGE}"
                if scale == 1.0:
                    record(edit, "source image", src, src, both, a, b)
                record(edit, "regeneration from the target caption", regen[scale][i:i + 1], src, both, a, b, size_name)
                record(edit, "DesignEdit", designedit("", layers[scale]), src, both, a, b, size_name)
                record(edit, "DesignEdit, prompt: the target caption",
                       designedit(targets[scale].caption, layers[scale]), src, both, a, b, size_name)
    rows = {key: mean_of(recs) for key, recs in records.items()}
    table = md_table(["edit", "", "at the destination", "origin cell emptied", "other shape kept",
                      "MSE outside the edited cells"],
                     [(edit, method, _pct(r["at destination"]), _pct(r["origin emptied"]), _pct(r["other kept"]),
                       _mse(r["MSE outside"])) for (edit, method), r in rows.items()])
    return table, {"images per row": len(DESIGN_CASES) * n_seeds, **{" / ".join(k): v for k, v in rows.items()}}


# (two shapes of the source, background, the shape asked for in the hole, the hole: an empty cell)
HDPAINTER_CASES = [
    (("circle", "red", "centre", "large"), ("square", "blue", "top left", "small"), "yellow", ("star", "green"),
     "bottom left"),
    (("triangle", "white", "centre", "large"), ("circle", "orange", "bottom right", "small"), "black",
     ("circle", "blue"), "top right"),
    (("star", "purple", "centre", "large"), ("square", "green", "top right", "large"), "white", ("square", "red"),
     "bottom left"),
    (("square", "orange", "centre", "large"), ("star", "white", "left", "small"), "blue", ("triangle", "yellow"),
     "bottom right"),
    (("circle", "green", "left", "large"), ("triangle", "red", "right", "large"), "white", ("square", "blue"), "top"),
    (("square", "blue", "top", "large"), ("circle", "yellow", "bottom", "large"), "black", ("star", "orange"),
     "right"),
    (("triangle", "yellow", "bottom right", "small"), ("circle", "purple", "top left", "large"), "green",
     ("circle", "white"), "centre"),
    (("star", "white", "centre", "small"), ("square", "red", "bottom left", "large"), "purple",
     ("triangle", "orange"), "bottom"),
]


def run_hdpainter(model, clip, vae, n_seeds, size, steps, cfg=5.0):
    _, _, evaluate, world = _shapes()
    import comfy.samplers
    from sleight.attention_patches import painta
    from sleight.nodes.inpaint import SleightPAIntA, SleightRASG

    encode, seeds = _encoder(clip), list(range(n_seeds))
    # The paper: DDIM 50 steps (here --steps), cfg 7.5, the quality suffix on the prompt for every row (the
    # baseline gets PAIntA's conditioning, as in the example workflow); RASG eta 0.1 (CLI) or 0.25 (evaluation).
    edit_cfg, etas = 7.5, (0.1, 0.25)
    sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "ddim_uniform", steps).cpu()
    reference = "plain inpainting, the prompt also says where"
    control = f"PAIntA + DDIM eta {etas[-1]} with random noise (RASG without its guidance)"
    records = {label: [] for label in (reference, "plain inpainting", "PAIntA", control,
                                       *(f"PAIntA + RASG, eta {eta}" for eta in etas))}
    def inpaint(painted, positive, src_latents, hole, sampler="ddim", **kw):
        return sample(painted, positive, encode(""), seeds, size, steps, edit_cfg, sampler, "ddim_uniform",
                      latent=src_latents, noise_mask=hole, **kw)

    for shape, other, bg, (kind, colour), cell in HDPAINTER_CASES:
        hole = cell_mask(size, cell, snap=8)  # whole latent cells: the latent noise mask is exactly the hole
        source = _scene(world, bg, shape, other)
        src_latents = sample(model, encode(source.caption), encode(""), seeds, size, steps, cfg)
        src_images = decode(vae, src_latents)
        # The paper's prompt is the object's class alone; the shapes model only knows captions, so it keeps the
        # background and leaves out the position, which the mask gives.
        painted, positive = SleightPAIntA.execute(model, clip, f"a large {colour} {kind} on a {bg} background", hole,
                                                  painta.PAPER_SUFFIX, 0.5, painta.AUTO, "*").result
        where = world.POSITIONS[cell][1]
        placed = SleightPAIntA.execute(model, clip, f"a large {colour} {kind} {where} on a {bg} background", hole,
                                       painta.PAPER_SUFFIX, 0.5, painta.AUTO, "*").result[1]
        outs = {reference: inpaint(model, placed, src_latents, hole),
                "plain inpainting": inpaint(model, positive, src_latents, hole),
                "PAIntA": inpaint(painted, positive, src_latents, hole),
                # RASG's loop is ComfyUI's euler_ancestral (DDIM-eta) with the gradient as its noise
                control: inpaint(painted, positive, src_latents, hole,
                                 comfy.samplers.ksampler("euler_ancestral", {"eta": etas[-1]}), sigmas=sigmas),
                **{f"PAIntA + RASG, eta {eta}": inpaint(painted, positive, src_latents, hole,
                                                        SleightRASG.execute(eta).result[0], sigmas=sigmas)
                   for eta in etas}}
        for label, latents in outs.items():
            images = decode(vae, latents)
            outside = masked_mse(images, src_images, hole)[1]
            for reading, mse in zip(evaluate.read(images, block=8), outside.tolist()):
                records[label].append({"asked shape": has(reading, cell, colour, kind),
                                       "asked colour": has(reading, cell, colour),
                                       "any object": has(reading, cell), "MSE outside": mse})
    rows = {label: mean_of(recs) for label, recs in records.items()}
    table = md_table(["", "hole has the asked colour and kind", "asked colour", "any object", "MSE outside the hole"],
                     [(label, _pct(r["asked shape"]), _pct(r["asked colour"]), _pct(r["any object"]),
                       _mse(r["MSE outside"])) for label, r in rows.items()])
    return table, {"images per row": len(HDPAINTER_CASES) * n_seeds, **rows}


class OracleAdherence:
    """A search verifier (samplers/verifiers.py protocol) that knows the answer: the shapes evaluator's adherence of
    each decoded candidate to the prompt's scene (mean of background / colour / kind / position accuracy)."""

    name = "oracle_adherence"
    needs_early = False

    def __init__(self, evaluate, scene):
        self.evaluate, self.scene = evaluate, scene

    def __call__(self, candidates):
        images = candidates.images("final").movedim(-1, 1).float().cpu()
        return torch.tensor([adherence_score(self.evaluate, [self.scene], img[None])[0] for img in images],
                            dtype=torch.float64)


def run_search(model, clip, vae, n_prompts, size, steps, cfg=5.0, budget=8):
    adherence, _, evaluate, _ = _shapes()
    import comfy.samplers
    from sleight.nodes.search import SleightNoiseSearch
    from sleight.samplers import search, verifiers

    encode = _encoder(clip)
    ns = [n for n in (1, 2, 4, 8, 16, 32) if n <= budget]
    sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "normal", steps).cpu()
    picked = {(v, n): [] for v in ("self-consistency (latent)", "oracle: evaluator adherence") for n in ns}
    for scene in adherence.prompts(n_prompts):
        # cfg 5 and euler / normal: how this model samples everywhere else, so N = 1 is the plain sample of seed 0.
        _, top, report, _ = SleightNoiseSearch.execute(
            model, encode(scene.caption), encode(""), {"samples": torch.zeros(1, 4, size // 8, size // 8)},
            comfy.samplers.sampler_object("euler"), sigmas, cfg, seed=0, mode="random", budget=budget,
            batch_size=budget, top_k=budget, verifier="self_consistency", early_percent=0.4, cosine=0.95,
            neighbours=4, branches=2, branch_start_percent=0.5, renoise_steps=1, denoise_steps=2).result
        ranked = json.loads(report)["top"]                     # every candidate, best first, with its seed
        oracle = OracleAdherence(evaluate, scene)(verifiers.Candidates(top["samples"], decode=vae.decode)).tolist()
        by_seed = {c["seed"]: (c["scores"]["self_consistency_latent"], adh) for c, adh in zip(ranked, oracle)}
        for n in ns:
            first = [by_seed[s] for s in range(n)]             # random search with budget n: seeds 0..n-1
            for v, col in (("self-consistency (latent)", 0), ("oracle: evaluator adherence", 1)):
                best = first[search.order([f[col] for f in first])[0]]
                picked[v, n].append((best[col], best[1]))
    rows = {k: (sum(s for s, _ in v) / len(v), sum(a for _, a in v) / len(v)) for k, v in picked.items()}
    table = md_table(["verifier", "N", "mean best score", "adherence of the chosen sample"],
                     [(v, n, f"{score:.4f}" if "oracle" not in v else f"{score:.1%}", f"{adh:.1%}")
                      for (v, n), (score, adh) in rows.items()])
    return table, {f"{v}, N={n}": {"best score": score, "adherence": adh} for (v, n), (score, adh) in rows.items()}


def write_docs(text, path=DOCS):
    doc_blocks.write_block(path, "effects", "Effects on the shapes model (issue 8, `make effects`)", text)


SECTIONS = ["apg", "routing", "letters", "r2f", "addit", "addit_real", "designedit", "hdpainter", "search"]


@torch.inference_mode()
def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", nargs="+", choices=SECTIONS, default=SECTIONS)
    p.add_argument("--prompts", type=int, default=24, help="APG: prompts (one seed each)")
    p.add_argument("--seeds", type=int, default=8, help="routing and R2F: seeds per case")
    p.add_argument("--edit-seeds", type=int, default=4, help="Add-it, DesignEdit, HD-Painter: seeds per case (4 cases)")
    p.add_argument("--search-prompts", type=int, default=16, help="noise search: prompts")
    p.add_argument("--search-budget", type=int, default=8, help="noise search: the largest N (N = 1, 2, 4, ...)")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--kind-size", type=int, default=128,
                   help="letters, R2F, Add-it, DesignEdit and HD-Painter: letters and kinds read back at about 128 px")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--apg-steps", type=int, nargs="+", default=[20, 50],
                   help="APG: sampling steps, one table block each (its momentum acts across steps)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", type=Path)
    p.add_argument("--checkpoint", type=Path, help="another shapes checkpoint (a training run's) to measure; "
                   "not with --write")
    p.add_argument("--write", action="store_true")
    args = p.parse_args(argv)
    if args.checkpoint and args.write:
        p.error("--write records the committed model: measure another --checkpoint without it")
    torch.set_num_threads(args.threads)
    _, train, _, _ = _shapes()
    checkpoint = args.checkpoint or train.CHECKPOINT
    model, clip, vae = train.load(checkpoint)
    from sleight.samplers.r2f import DEFAULT_ALPHAS
    meta = train.read_checkpoint(checkpoint)[1]
    t = time.perf_counter()
    kind_edit = (model, clip, vae, args.edit_seeds, args.kind_size, args.steps)
    sections = {
        "apg": (lambda: run_apg(model, clip, vae, args.prompts, args.size, args.apg_steps),
                f"**APG vs CFG** ({args.prompts} prompts, one seed each, euler / normal"),
        "routing": (lambda: run_routing(model, clip, vae, args.seeds, args.size, args.steps),
                    "**Prompt routing** (a second colour routed into every cross-attention layer, cond rows"),
        "letters": (lambda: run_letters(model, clip, vae, args.seeds, args.kind_size, args.steps),
                    f"**Text-layer routing of letters** ({args.kind_size} px, where a glyph stroke is one latent; "
                    f"{len(LETTER_CASES)} cases x {args.seeds} seeds; a sign with letter A in a corner and a red "
                    "circle in the centre; letter B routed from 0.08 of the schedule, cond rows"),
        "r2f": (lambda: run_r2f(model, clip, vae, args.seeds, args.kind_size, args.steps),
                f"**Rare-to-Frequent** ({args.kind_size} px; the frequent prompt keeps the kind in a common colour; "
                f"alpha {DEFAULT_ALPHAS} in interpolate mode; share of {args.seeds} seeds whose centre object has the "
                "asked colour and kind"),
        "addit": (lambda: run_addit(*kind_edit),
                  f"**Add-it** ({args.kind_size} px; a shape added to a generated one-shape source; "
                  f"{len(ADDIT_CASES) * args.edit_seeds} "
                  "images per row; paper settings for a generated source: gamma 1.05, structure transfer 2/30, "
                  "blending from 15/30; sampled euler / normal, cfg 5, the source's seed; MSE against the source "
                  "outside the new shape's cell; how much of each shape's cell Add-it's blending mask covers"),
        "addit_real": (lambda: run_addit_real(*kind_edit),
                       f"**Add-it on a real source** ({args.kind_size} px; the same cases, each source scene rendered, "
                       f"VAE-encoded and inverted with the source caption (Sleight · Invert, fixed-point 2); "
                       f"{len(ADDIT_CASES) * args.edit_seeds} images per row; paper settings for a real source: gamma "
                       "1.1, structure transfer 4/30, blending from 18/30; SDEdit: KSampler from the encoded source "
                       "with the target caption; MSE against the encoded source decoded"),
        "designedit": (lambda: run_designedit(*kind_edit),
                       f"**DesignEdit** ({args.kind_size} px; generated two-shape sources, DDIM-inverted; "
                       f"{len(DESIGN_CASES) * args.edit_seeds} images per row; ddim, ddim_uniform, cfg 7.5, the empty "
                       "prompt unless a row names one; key masking steps 0.02-0.78, blending to 0.82, proximal "
                       "guidance 0.1; shares read by the evaluator, MSE against the source"),
        "hdpainter": (lambda: run_hdpainter(*kind_edit),
                      f"**HD-Painter** ({args.kind_size} px; hole = an empty cell as a latent noise mask, the "
                      f"prompt names the shape and the background, not where; {len(HDPAINTER_CASES)} cases x "
                      f"{args.edit_seeds} seeds; ddim, cfg 7.5; PAIntA until 0.5 of the schedule with the paper's "
                      "quality suffix"),
        "search": (lambda: run_search(model, clip, vae, args.search_prompts, args.size, args.steps,
                                      budget=args.search_budget),
                   f"**Noise search** (random, best of N seeds; {args.search_prompts} prompts; euler / normal, cfg 5; "
                   "self-consistency at 0.4 of the schedule; one search of the largest N per prompt, each N the best "
                   "of its first N candidates"),
    }
    parts, raw = [], {}
    for name in SECTIONS:
        if name not in args.only:
            continue
        run, title = sections[name]
        start = time.perf_counter()
        text, raw[name] = run()
        took = time.perf_counter() - start
        print(f"[effects] {name}: {took:.0f} s", file=sys.stderr, flush=True)
        parts.append(f"{title}; {took:.0f} s):\n\n{text}")
    parts.append(f"_shapes model after {train.describe(meta)}; {args.size} px, "
                 f"{args.steps} steps, euler/normal unless noted; {time.perf_counter() - t:.0f} s; command: "
                 "`make effects`_")
    text = "\n\n".join(parts)
    print(text)
    if args.json:
        args.json.write_text(json.dumps(raw, indent=1, default=str))
    if args.write:
        write_docs(text)


if __name__ == "__main__":
    main()
