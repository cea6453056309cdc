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

The sections live in effects_guidance.py, effects_prompt.py and effects_edit.py; their shared measuring pieces in
effect_metrics.py.

Nodes run through their own `execute`, so this measures what a workflow gets. Numbers depend on how far the
model is trained: the checkpoint's training step is printed with them.
"""
import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import doc_blocks  # noqa: E402
from effect_metrics import DOCS, _shapes  # noqa: E402
from effects_edit import (ADDIT_CASES, DESIGN_CASES, HDPAINTER_CASES, run_addit, run_addit_real,  # noqa: E402
                          run_designedit, run_hdpainter)
from effects_guidance import run_apg, run_search  # noqa: E402
from effects_prompt import LETTER_CASES, run_letters, run_r2f, run_routing  # noqa: E402


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
