"""Effect benchmarks of the sampling tricks on the shapes model (scripts/effects.py): APG against CFG, and
inference-time noise search with the self-consistency and an oracle verifier."""
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from effect_metrics import (  # noqa: E402
    _encoder, _shapes, adherence_score, clipped, md_table, saturation)


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
