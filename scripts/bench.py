"""make bench: overhead of each Sleight patch as a ratio against plain sampling, measured in the same run.

Interleaves baseline and patched runs (same seed, same model, warm) and reports the ratio of the best
(least disturbed) times, and of the medians.
`--write` replaces the generated table in docs/BENCHMARKS.md.
"""
import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import comfy_env  # noqa: E402

comfy_env.bootstrap()
import torch  # noqa: E402

import tiny_models  # noqa: E402
from sleight.attention_patches import arch, keymask, router, textkv, textswap  # noqa: E402
from sleight.nodes.designedit import SleightDesignEditRemove  # noqa: E402
from sleight.nodes.guidance import SleightAPG  # noqa: E402
from sleight.nodes.prompt import SleightRareToFrequent  # noqa: E402
from sleight.samplers import schedule  # noqa: E402
from sleight.samplers.trajectory import SourceTrajectory  # noqa: E402

APG_DEFAULTS = dict(eta=0.0, momentum=-0.5, norm_threshold=15.0, start_percent=0.0, end_percent=1.0,
                    cfg_warmup_steps=0, cfg_warmup_scale=0.0, scale_threshold_by_latent_size=False)


class Idle:
    """An effect that looks at every call and applies to none: the router's bookkeeping cost."""

    order = 90

    def applies(self, call):
        return False


class PassThrough(Idle):
    """Applies everywhere and changes nothing: the cost of the normalised B,H,L,D path."""

    def applies(self, call):
        return True

    def run(self, call, attend):
        return attend(call)


MAIN, OTHER = "a red circle at the top left", "a hairy object at the top left"


def designedit_remove(model, clip, size):
    """The whole removal node (key masking + segmented sampling with blending) on a re-noised random source."""
    import comfy.sample

    lat = comfy.sample.fix_empty_latent_channels(model, torch.zeros(1, 4, size // 8, size // 8))
    g = torch.Generator().manual_seed(0)
    src = SourceTrajectory(torch.randn(lat.shape, generator=g), tiny_models.encode(clip, ""),
                           noise=torch.randn(lat.shape, generator=g))
    mask = torch.zeros(1, size, size)
    mask[:, size // 4: size // 2, size // 4: size // 2] = 1
    return SleightDesignEditRemove.execute(model, src, mask, 20).result[0]


def patched(kind, model, clip, size=128):
    if kind == "keymask":        # DesignEdit key masking in every self-attention layer at every step
        m = model.clone()
        mask = torch.zeros(size // 8, size // 8)
        mask[: size // 16, : size // 16] = 1
        router.install(m, keymask.KeyMask(mask, schedule.StepWindow(0.0, 1.0)))
        return m
    if kind == "designedit":
        return designedit_remove(model, clip, size)
    if kind == "apg":
        return SleightAPG.execute(model, **APG_DEFAULTS).result[0]
    if kind == "r2f":
        return SleightRareToFrequent.execute(model, tiny_models.encode(clip, MAIN), tiny_models.encode(clip, OTHER),
                                             3, "alternate", -1.0, "auto", "0.3,0.15,0.15,0.15").result[0]
    if kind == "route-unet":     # the paper's SDXL text layers on the real 70-block layout
        return textswap.route(model, tiny_models.encode(clip, OTHER), ["output.2.1", "output.2.2", "output.2.3"],
                              schedule.Window(0.08, 1.0))
    m = model.clone()
    if kind == "route-dit":      # every joint block: the side pass is the whole cost
        blocks = {layer.block for layer in arch.list_layers(model, 64, 64)}
        textkv.install_dit(m, tiny_models.encode(clip, OTHER), blocks, schedule.Window())
        return m
    router.install(m, Idle() if kind == "router-idle" else PassThrough())
    return m


def timed(model, clip, size, steps, cfg):
    pos, neg = tiny_models.encode(clip, MAIN), tiny_models.encode(clip, "")
    t0 = time.perf_counter()
    tiny_models.sample("bench", model, clip, size=size, steps=steps, cfg=cfg, positive=pos, negative=neg)
    return time.perf_counter() - t0


def measure(name, kind, size, steps, repeats, cfg=5.0):
    model, clip, _ = tiny_models.load(name)
    other = patched(kind, model, clip, size)
    timed(model, clip, size, 1, cfg), timed(other, clip, size, 1, cfg)      # warm-up
    base, trick = [], []
    for i in range(repeats):     # ABBA order cancels slow drift of the machine
        pair = [(base, model), (trick, other)]
        for times, m in (pair if i % 2 == 0 else pair[::-1]):
            times.append(timed(m, clip, size, steps, cfg))
    return {"model": name, "patch": kind, "size": size, "steps": steps, "repeats": repeats,
            "baseline_s": min(base), "patched_s": min(trick), "ratio": min(trick) / min(base),
            "median_ratio": statistics.median(trick) / statistics.median(base)}


DEFAULT_RUNS = ["apg:sd15", "apg:sdxl", "router-idle:sd15", "router-idle:sdxl", "router-pass:sdxl",
                "r2f:sd15", "r2f:sdxl", "route-unet:sdxl_layout", "route-dit:sd3", "route-dit:flux_dev:4",
                "keymask:sd15", "keymask:sdxl", "keymask:sd3", "keymask:flux_dev:4", "designedit:sdxl"]


def table(rows):
    lines = ["| patch | model | size | steps | plain, best (s) | patched, best (s) | ratio of best | ratio of medians |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['patch']} | {r['model']} | {r['size']}² | {r['steps']} | {r['baseline_s']:.3f} | "
                     f"{r['patched_s']:.3f} | {r['ratio']:.3f}× | {r['median_ratio']:.3f}× |")
    return "\n".join(lines)


def write_docs(text):
    doc = comfy_env.ROOT / "docs" / "BENCHMARKS.md"
    src = doc.read_text()
    start, end = "<!-- bench:start -->", "<!-- bench:end -->"
    head, rest = src.split(start, 1)
    doc.write_text(head + start + "\n" + text + "\n" + end + rest.split(end, 1)[1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", nargs="+", default=DEFAULT_RUNS, help="patch:model[:steps]")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=8)
    ap.add_argument("--write", action="store_true", help="update the table in docs/BENCHMARKS.md")
    a = ap.parse_args()
    runs = [(r.split(":") + [a.steps])[:3] for r in a.runs]
    tiny_models.ensure_models(names=sorted({run[1] for run in runs}))
    torch.set_grad_enabled(False)
    rows = []
    for kind, name, steps in runs:
        rows.append(measure(name, kind, a.size, int(steps), a.repeats))
        print(f"{kind:>12} on {name}: {rows[-1]['ratio']:.3f}×", flush=True)
    text = table(rows) + f"\n\n_{torch.__version__}, {torch.get_num_threads()} threads, CPU; command: `make bench`_"
    print(text)
    comfy_env.OUTPUT.mkdir(exist_ok=True)
    (comfy_env.OUTPUT / "bench.json").write_text(json.dumps(rows, indent=2))
    if a.write:
        write_docs(text)


if __name__ == "__main__":
    main()
