"""Effect benchmarks of the editing tricks on the shapes model (scripts/effects.py): Add-it on generated and real
sources, DesignEdit removal / move / enlarge, HD-Painter."""
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from effect_metrics import (  # noqa: E402
    _encoder, _move_px, _mse, _pct, _scene, _shapes, cell_mask, covered, decode, has, masked_mse, md_table,
    mean_of, object_mask, sample)


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
