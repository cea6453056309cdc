"""Prompt adherence of the shapes model, read back from pixels by the evaluator (issue 8 §2).

    .venv/bin/python shapes/adherence.py                       # 100 prompts x 2 seeds, cfg 5, 20 steps, 128 px
    .venv/bin/python shapes/adherence.py --write               # ... and update the table in docs/BENCHMARKS.md

Prompts are fresh scenes of the training distribution (their own seed, so mostly captions the model never
saw), without signs and without stripes (left out of training); the targets are read on those. Letters are read
on their own prompts, scenes that all carry a sign (--letters prompts x --seeds; 0: skip).
Each prompt is sampled as KSampler does (euler / normal, empty negative prompt) with one noise per seed,
decoded by the checkpoint's VAE through ComfyUI, and scored per attribute by `evaluate.accuracy`.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import comfy_env  # noqa: E402
import doc_blocks  # noqa: E402

PROMPT_SEED = 7  # the training pool uses train.CAPTION_SEED
TARGETS = {"background": 0.90, "colour": 0.80, "kind": 0.70, "position": 0.80}  # issue 8 §2
DOCS = ROOT / "docs" / "BENCHMARKS.md"


def prompts(n: int, seed: int = PROMPT_SEED, max_shapes: int = 3, signs: bool = False):
    """n scenes without stripes; without signs, or (signs) each with a sign (so never on a white background)."""
    from sleight.shapes import world

    if not signs:
        return world.sample_scenes(n, seed, sign_p=0.0, striped_p=0.0, max_shapes=max_shapes)
    scenes = world.sample_scenes(4 * n, seed, sign_p=1.0, striped_p=0.0, max_shapes=max_shapes)
    return [s for s in scenes if s.sign is not None][:n]


def generate(model, clip, vae, captions, seeds, size=128, steps=20, cfg=5.0, batch=50, sampler="euler",
             scheduler="normal"):
    """(N, 3, size, size) images in [0, 1]: caption i sampled from seed i, `batch` rows per sampler call."""
    import comfy.sample

    def encode(texts):
        conds = [clip.encode_from_tokens(clip.tokenize(t), return_pooled=True) for t in texts]
        return [[torch.cat([c for c, _ in conds]), {"pooled_output": torch.cat([p for _, p in conds])}]]

    images = []
    for i in range(0, len(captions), batch):
        texts, rows = captions[i:i + batch], seeds[i:i + batch]
        latent = torch.zeros([len(texts), 4, size // 8, size // 8])
        noise = torch.cat([comfy.sample.prepare_noise(latent[:1], s) for s in rows])
        out = comfy.sample.sample(model, noise, steps, cfg, sampler, scheduler, encode(texts),
                                  encode([""] * len(texts)), latent, denoise=1.0, disable_pbar=True, seed=rows[0])
        images.append(vae.decode(out).movedim(-1, 1).float().cpu())
    return torch.cat(images)


def measure(model, clip, vae, n_prompts=100, n_seeds=2, max_shapes=3, signs=False, **kwargs):
    """({attribute: accuracy}, images) over n_prompts x n_seeds images (signs: prompts that carry a sign)."""
    from sleight.shapes import evaluate

    scenes = prompts(n_prompts, max_shapes=max_shapes, signs=signs)
    pairs = [(s, seed) for s in scenes for seed in range(n_seeds)]
    images = generate(model, clip, vae, [s.caption for s, _ in pairs], [seed for _, seed in pairs], **kwargs)
    acc = evaluate.accuracy([s for s, _ in pairs], evaluate.read(images, block=8))
    return acc, images


def by_noise(model, clip, n_prompts=16, size=64, timesteps=(999, 900, 700, 500, 300, 100), seed=0, max_shapes=3):
    """Does the model use its prompt, noise level by noise level? One denoising prediction x̂0 from ground-truth
    scenes noised to t, with the caption and with the empty prompt, read by the evaluator:
    {t: {"prompt": accuracy, "empty": accuracy}}. Equal columns at high t: the prompt is ignored where the
    background and layout are decided."""
    from sleight.shapes import analytic_taesd, evaluate, world

    sys.path.insert(0, str(ROOT / "shapes"))
    import train

    scenes = prompts(n_prompts, max_shapes=max_shapes)
    unet = model.model.diffusion_model
    dtype = next(unet.parameters()).dtype
    cond = train.encode_captions(clip, [s.caption for s in scenes])
    empty = train.encode_captions(clip, [""]).expand_as(cond)
    x0 = analytic_taesd.encode(world.render(scenes, size))
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed))
    alphas = 1.0 / (1.0 + model.model.model_sampling.sigmas.float() ** 2)
    out = {}
    for t in timesteps:
        a = alphas[t]
        xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
        out[t] = {}
        for name, context in (("prompt", cond), ("empty", empty)):
            eps = unet(xt.to(dtype), torch.full((len(scenes),), float(t)), context=context.to(dtype)).float()
            x0_hat = ((xt - (1 - a).sqrt() * eps) / a.sqrt()).clamp(-1, 1)
            out[t][name] = evaluate.accuracy(scenes, evaluate.read(analytic_taesd.decode(x0_hat).clamp(0, 1), block=8))
    return out


def grounding(model, n_prompts=48, size=128, timesteps=(800, 500, 200), seed=0):
    """Does each shape's word attend to its place? From ground-truth scenes noised to t, the share of the cross-
    attention of each shape's colour and kind tokens that falls inside its grid cell (train.cell_share), per
    cross-attention layer: {t: {layer: share}}. A cell is 10 to 14 % of the latent, so about that is no grounding."""
    from sleight.shapes import analytic_taesd, world

    sys.path.insert(0, str(ROOT / "shapes"))
    import train

    clip = train.load_clip()
    scenes = prompts(n_prompts)
    unet = model.model.diffusion_model
    dtype = next(unet.parameters()).dtype
    cond = train.encode_captions(clip, [s.caption for s in scenes]).to(dtype)
    x0 = analytic_taesd.encode(world.render(scenes, size))
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed))
    alphas = 1.0 / (1.0 + model.model.model_sampling.sigmas.float() ** 2)
    blocks = train.cross_attention_blocks(unet)
    targets, weights = train.grounding_targets(train.grounding_tokens(clip, scenes), [False] * len(scenes),
                                               *x0.shape[-2:])
    out = {}
    for t in timesteps:
        a, recorder = alphas[t], train.AttentionRecorder()
        xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
        with torch.no_grad():
            unet(xt.to(dtype), torch.full((len(scenes),), float(t)), context=cond,
                 transformer_options=recorder.options(blocks))
        assert all(p.shape[2] == targets.shape[2] for p in recorder.probs), "a cross-attention layer below full size"
        out[t] = {f"{b[0]}.{b[1]}": float(train.grounded_mean(train.cell_share(p.float(), targets), weights))
                  for b, p in zip(blocks, recorder.probs)}
    return out


def table(acc: dict, meta: dict) -> str:
    lines = ["| attribute | accuracy | target |", "| --- | --- | --- |"]
    for a, v in acc.items():
        target = f"≥ {TARGETS[a]:.0%}" if a in TARGETS else "—"
        name = "letter (on the letter images, each with a sign)" if a == "letter" else a
        lines.append(f"| {name} | {v:.1%} | {target} |")
    lines.append("")
    lines.append(", ".join(f"{k} {v}" for k, v in meta.items()))
    return "\n".join(lines)


def write_docs(text, path=DOCS):
    doc_blocks.write_block(path, "adherence", "Shapes model: prompt adherence (issue 8)", text)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--prompts", type=int, default=100)
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--cfg", type=float, default=5.0)
    p.add_argument("--letters", type=int, default=50, help="prompts with a sign, read for their letter (0: skip)")
    p.add_argument("--batch", type=int, default=50)
    p.add_argument("--device", default="cpu")
    p.add_argument("--checkpoint", type=Path)
    p.add_argument("--json", type=Path, help="also write the result here")
    p.add_argument("--sheet", type=Path, help="save the first 20 images as one PNG strip here")
    p.add_argument("--write", action="store_true", help="update the table in docs/BENCHMARKS.md")
    p.add_argument("--max-shapes", type=int, default=3, help="1: one-shape prompts (for a --simple training run)")
    p.add_argument("--by-noise", action="store_true",
                   help="instead: one-step x̂0 accuracy from noised ground truth, with the prompt and without, per t")
    p.add_argument("--grounding", action="store_true",
                   help="instead: the share of each shape's word's cross-attention inside its cell, per layer and t")
    args = p.parse_args(argv)

    comfy_env.bootstrap(cpu=args.device == "cpu")
    sys.path.insert(0, str(ROOT / "shapes"))
    import train

    model, clip, vae = train.load(args.checkpoint or train.CHECKPOINT, cpu=args.device == "cpu")
    _, ckpt_meta = train.read_checkpoint(args.checkpoint or train.CHECKPOINT)
    if args.grounding:
        with torch.inference_mode():
            rows = grounding(model, args.prompts)
        layers = list(next(iter(rows.values())))
        print("| t | " + " | ".join(layers) + " |\n| --- |" + " --- |" * len(layers))
        for t, r in rows.items():
            print(f"| {t} | " + " | ".join(f"{r[name]:.0%}" for name in layers) + " |")
        return
    if args.by_noise:
        with torch.inference_mode():
            rows = by_noise(model, clip, args.prompts, max_shapes=args.max_shapes)
        print("| t | background: prompt / empty | colour | kind | position |\n| --- | --- | --- | --- | --- |")
        for t, r in rows.items():
            print(f"| {t} | " + " | ".join(f"{r['prompt'][a]:.0%} / {r['empty'][a]:.0%}"
                                           for a in ("background", "colour", "kind", "position")) + " |")
        return
    t = time.perf_counter()
    acc, images = measure(model, clip, vae, args.prompts, args.seeds, size=args.size, steps=args.steps,
                          cfg=args.cfg, batch=args.batch, max_shapes=args.max_shapes)
    meta = {"images": args.prompts * args.seeds}
    if args.letters:
        signed, _ = measure(model, clip, vae, args.letters, args.seeds, size=args.size, steps=args.steps,
                            cfg=args.cfg, batch=args.batch, max_shapes=args.max_shapes, signs=True)
        acc["letter"] = signed["letter"]
        from sleight.shapes import world

        meta.update({"letter images": args.letters * args.seeds, "letter by chance": f"{1 / len(world.LETTERS):.0%}"})
    meta.update({"size": f"{args.size} px", "steps": args.steps, "cfg": args.cfg, "sampler": "euler/normal",
                 "trained": train.describe(ckpt_meta), "seconds": round(time.perf_counter() - t)})
    text = table(acc, meta)
    print(text)
    if args.json:
        args.json.write_text(json.dumps({"accuracy": acc, "meta": meta}, indent=1))
    if args.sheet:
        from PIL import Image

        strip = images[:20].permute(2, 0, 3, 1).reshape(args.size, -1, 3)
        Image.fromarray((strip.clamp(0, 1) * 255).round().byte().numpy()).save(args.sheet)
    if args.write:
        write_docs(text)


if __name__ == "__main__":
    main()
