"""Effect benchmarks on the shapes model (issue 8 §3): each landed trick against the same model without it,
same prompts and seeds, read back from pixels by shapes/evaluate.py.

    .venv/bin/python scripts/effects.py            # all tricks, printed
    .venv/bin/python scripts/effects.py --write    # ... and the summary in docs/BENCHMARKS.md
    make effects

- APG vs CFG at w = 10, 15: colour saturation and clipped channels (share of values at 0 or 1 after decoding)
  against adherence (mean of background / colour / kind / position accuracy). CFG 5 and the ground-truth
  renders of the same prompts are the reference rows.
- Prompt routing: "a C1 K in the centre on a B background" with "a C2 K ..." routed into every cross-attention
  layer of the cond rows: share of images whose centre shape reads C2, and the mean squared change inside the
  centre cell against outside it.
- Rare-to-Frequent: rare and held-out colour–shape pairs (world.RARE_PAIRS, world.HELD_OUT_PAIRS) with the
  frequent prompt the same colour on a circle: share whose centre object has the asked colour and kind.

Nodes run through their own `execute`, so this measures what a workflow gets. Numbers depend on how far the
model is trained: the checkpoint's training step is printed with them.
"""
import argparse
import json
import re
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import comfy_env  # noqa: E402

DOCS = comfy_env.ROOT / "docs" / "BENCHMARKS.md"
MARKERS = ("<!-- effects:start -->", "<!-- effects:end -->")
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


def run_apg(model, clip, vae, n, size, steps):
    adherence, _, evaluate, world = _shapes()
    from sleight.nodes.guidance import SleightAPG

    scenes = adherence.prompts(n)
    captions, seeds = [s.caption for s in scenes], list(range(n))
    apg = SleightAPG.execute(model, eta=0.0, momentum=-0.5, norm_threshold=15.0, start_percent=0.0,
                             end_percent=1.0, cfg_warmup_steps=0, cfg_warmup_scale=1.0,
                             scale_threshold_by_latent_size=True).result[0]
    truth = world.render(scenes, size)
    rows = [("ground truth", "—", saturation(truth), clipped(truth), adherence_score(evaluate, scenes, truth)[0])]
    for label, m, w in [("CFG", model, 5.0), ("CFG", model, 10.0), ("APG", apg, 10.0), ("CFG", model, 15.0),
                        ("APG", apg, 15.0)]:
        images = adherence.generate(m, clip, vae, captions, seeds, size=size, steps=steps, cfg=w)
        rows.append((label, w, saturation(images), clipped(images), adherence_score(evaluate, scenes, images)[0]))
    lines = ["| guidance | w | saturation | clipped | adherence |", "| --- | --- | --- | --- | --- |"]
    lines += [f"| {g} | {w} | {s:.3f} | {c:.1%} | {a:.1%} |" for g, w, s, c, a in rows]
    return "\n".join(lines), rows


def _centre_cell(size):
    third = size // 3
    return slice(third, size - third)


def run_routing(model, clip, vae, n_seeds, size, steps, cfg=5.0):
    adherence, _, evaluate, world = _shapes()
    from sleight.nodes.routing import SleightPromptRoute
    import tiny_models

    cases = [("red", "blue", "circle", "yellow"), ("green", "orange", "square", "white"),
             ("blue", "red", "triangle", "green"), ("white", "purple", "circle", "black")]
    hits = base_hits = 0
    inside, outside = [], []
    cell = _centre_cell(size)
    for c1, c2, kind, bg in cases:
        prompt = f"a large {c1} {kind} in the centre on a {bg} background"
        routed = f"a large {c2} {kind} in the centre on a {bg} background"
        m = SleightPromptRoute.execute(model, tiny_models.encode(clip, routed), layers="custom", custom_layers="*",
                                       start_percent=0.0, end_percent=1.0, rows="cond").result[0]
        seeds = list(range(n_seeds))
        base = adherence.generate(model, clip, vae, [prompt] * n_seeds, seeds, size=size, steps=steps, cfg=cfg)
        out = adherence.generate(m, clip, vae, [prompt] * n_seeds, seeds, size=size, steps=steps, cfg=cfg)
        for img, ref in zip(out, base):
            reading, ref_reading = evaluate.read(img[None], block=8)[0], evaluate.read(ref[None], block=8)[0]
            hits += any(f.position == "centre" and f.colour == c2 for f in reading.objects)
            base_hits += any(f.position == "centre" and f.colour == c2 for f in ref_reading.objects)
            diff = (img - ref).pow(2).mean(0)
            mask = torch.zeros_like(diff, dtype=torch.bool)
            mask[cell, cell] = True
            inside.append(float(diff[mask].mean()))
            outside.append(float(diff[~mask].mean()))
    total = len(cases) * n_seeds
    row = {"images": total, "routed colour, baseline": base_hits / total, "routed colour, routed": hits / total,
           "MSE inside centre cell": sum(inside) / total, "MSE outside": sum(outside) / total}
    lines = ["| images | centre reads the routed colour: baseline → routed | change inside centre cell | outside |",
             "| --- | --- | --- | --- |",
             f"| {total} | {row['routed colour, baseline']:.0%} → {row['routed colour, routed']:.0%} | "
             f"{row['MSE inside centre cell']:.4f} | {row['MSE outside']:.4f} |"]
    return "\n".join(lines), row


def run_r2f(model, clip, vae, n_seeds, size, steps, cfg=5.0, level=3):
    adherence, _, evaluate, world = _shapes()
    from sleight.nodes.prompt import SleightRareToFrequent
    import tiny_models

    pairs = [(p, "rare") for p in sorted(world.RARE_PAIRS)] + [(p, "held out") for p in sorted(world.HELD_OUT_PAIRS)]
    lines = ["| pair | kind | baseline | R2F |", "| --- | --- | --- | --- |"]
    rows = []
    for (colour, kind), what in pairs:
        bg = "black" if colour != "black" else "white"
        prompt = f"a large {colour} {kind} in the centre on a {bg} background"
        frequent = f"a large {colour} circle in the centre on a {bg} background"
        m = SleightRareToFrequent.execute(model, tiny_models.encode(clip, prompt), tiny_models.encode(clip, frequent),
                                          visual_detail_level=level, mode="alternate", stop_percent=-1.0,
                                          level_map="sdxl", alphas="0.3, 0.15, 0.15, 0.15").result[0]
        seeds = list(range(n_seeds))
        score = []
        for mm in (model, m):
            images = adherence.generate(mm, clip, vae, [prompt] * n_seeds, seeds, size=size, steps=steps, cfg=cfg)
            found = [evaluate.read(img[None], block=8)[0] for img in images]
            score.append(sum(any(f.position == "centre" and (f.colour, f.kind) == (colour, kind)
                                 for f in r.objects) for r in found) / n_seeds)
        rows.append({"pair": f"{colour} {kind}", "kind": what, "baseline": score[0], "r2f": score[1]})
        lines.append(f"| {colour} {kind} | {what} | {score[0]:.0%} | {score[1]:.0%} |")
    return "\n".join(lines), rows


def write_docs(text, path=DOCS):
    doc = path.read_text()
    start, end = MARKERS
    block = f"{start}\n{text}\n{end}"
    if start in doc:
        doc = re.sub(re.escape(start) + ".*?" + re.escape(end), lambda _: block, doc, flags=re.S)
    else:
        doc += f"\n## Effects on the shapes model (issue 8, `make effects`)\n\n{block}\n"
    path.write_text(doc)


@torch.inference_mode()
def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", nargs="+", choices=["apg", "routing", "r2f"], default=["apg", "routing", "r2f"])
    p.add_argument("--prompts", type=int, default=24, help="APG: prompts (one seed each)")
    p.add_argument("--seeds", type=int, default=8, help="routing and R2F: seeds per case")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", type=Path)
    p.add_argument("--write", action="store_true")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    _, train, _, _ = _shapes()
    model, clip, vae = train.load()
    meta = train.read_checkpoint()[1]
    t = time.perf_counter()
    parts, raw = [], {}
    if "apg" in args.only:
        text, raw["apg"] = run_apg(model, clip, vae, args.prompts, args.size, args.steps)
        parts.append(f"**APG vs CFG** ({args.prompts} prompts, one seed each):\n\n{text}")
    if "routing" in args.only:
        text, raw["routing"] = run_routing(model, clip, vae, args.seeds, args.size, args.steps)
        parts.append(f"**Prompt routing** (a second colour routed into every cross-attention layer, cond rows):\n\n{text}")
    if "r2f" in args.only:
        text, raw["r2f"] = run_r2f(model, clip, vae, args.seeds, args.size, args.steps)
        parts.append(f"**Rare-to-Frequent** (alternate, level 3 of the SDXL map; share of {args.seeds} seeds whose "
                     f"centre object has the asked colour and kind):\n\n{text}")
    parts.append(f"_shapes model at training step {meta['step']} ({meta['samples']} samples); {args.size} px, "
                 f"{args.steps} steps, euler/normal; {time.perf_counter() - t:.0f} s; command: `make effects`_")
    text = "\n\n".join(parts)
    print(text)
    if args.json:
        args.json.write_text(json.dumps(raw, indent=1, default=str))
    if args.write:
        write_docs(text)


if __name__ == "__main__":
    main()
