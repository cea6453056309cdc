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

import comfy.sample  # noqa: E402

import tiny_models  # noqa: E402
from sleight.attention_patches import keymask  # noqa: E402
from sleight.attention_patches.core import families, router, schedule  # noqa: E402
from sleight.nodes.designedit import SleightDesignEditRemove  # noqa: E402
from sleight.nodes.guidance import SleightAPG  # noqa: E402
from sleight.nodes.prompt import SleightRareToFrequent  # noqa: E402
from sleight.samplers import routing, search, verifiers  # noqa: E402
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

    lat = comfy.sample.fix_empty_latent_channels(model, torch.zeros(1, 4, *families.detect(model).latent_size(size, size)))
    g = torch.Generator().manual_seed(0)
    src = SourceTrajectory(torch.randn(lat.shape, generator=g), tiny_models.encode(clip, ""),
                           noise=torch.randn(lat.shape, generator=g))
    mask = torch.zeros(1, size, size)
    mask[:, size // 4: size // 2, size // 4: size // 2] = 1
    return SleightDesignEditRemove.execute(model, src, mask, 20).result[0]


def patched(kind, name, model, clip, size):
    if kind == "keymask":        # DesignEdit key masking in every self-attention layer at every step
        m = model.clone()
        h, w = families.detect(model).latent_size(size, size)
        mask = torch.zeros(h, w)
        mask[: h // 2, : w // 2] = 1
        router.install(m, keymask.KeyMask(mask, schedule.StepWindow(0.0, 1.0)))
        return m
    if kind == "designedit":
        return designedit_remove(model, clip, size)
    if kind == "apg":
        return SleightAPG.execute(model, **APG_DEFAULTS).result[0]
    if kind == "r2f":
        return SleightRareToFrequent.execute(model, tiny_models.encode(clip, MAIN), tiny_models.encode(clip, OTHER),
                                             3, "alternate", -1.0, "auto", "0.3,0.15,0.15,0.15").result[0]
    if kind == "route-cross":    # every cross-attention layer of a cross_kv family (Wan), from 8 % of the schedule
        blocks = [layer.block for layer in families.layers(model, 64, 64) if layer.kind == "cross"]
        return routing.route(model, tiny_models.encode(clip, OTHER), blocks, schedule.Window(0.08, 1.0))
    if kind == "route-unet":     # the paper's SDXL text layers on the real 70-block layout
        return routing.route(model, tiny_models.encode(clip, OTHER), ["output.2.1", "output.2.2", "output.2.3"],
                             schedule.Window(0.08, 1.0))
    if kind == "addit":          # Add-it with the paper's defaults on a re-noised source (generated-image mode)
        from sleight.nodes.insertion import SleightAddIt
        from sleight.nodes.inversion import SleightSourceTrajectory
        clean = tiny_models.sample(name, model, clip, size=size, steps=2, cfg=5.0)
        traj = SleightSourceTrajectory.execute(model, {"samples": clean}, tiny_models.encode(clip, MAIN), 1).result[0]
        patched_model, _ = SleightAddIt.execute(model, clip, traj, MAIN + " and a cat", "cat", 0.0, -1.0, -1.0,
                                                10 / 30, 20 / 30).result
        return patched_model
    m = model.clone()
    if kind == "route-dit":      # every joint block: the side pass is the whole cost
        blocks = {layer.block for layer in families.layers(model, 64, 64)}
        routing.install_text_kv(m, tiny_models.encode(clip, OTHER), blocks, schedule.Window())
        return m
    router.install(m, Idle() if kind == "router-idle" else PassThrough())
    return m


INPAINT_KINDS = ("painta", "rasg", "painta-mem")


def hdpainter(kind, name, model, clip, size):
    """(baseline model, patched model, baseline sampler, patched sampler, positive) for HD-Painter kinds: latent-mask
    inpainting of a centred square hole; PAIntA at the paper levels (all layers on the one-level tiny SD1.5)."""
    import comfy.samplers
    from sleight.attention_patches import painta
    from sleight.nodes.inpaint import SleightPAIntA
    from sleight.samplers import rasg

    mask = torch.zeros(1, size, size)
    mask[:, size // 4: 3 * size // 4, size // 4: 3 * size // 4] = 1
    layers = painta.CUSTOM if name.startswith("sd15") else painta.AUTO
    m, pos = SleightPAIntA.execute(model, clip, "a red hat", mask, "", 0.5 if kind != "rasg" else 0.0, layers, "*").result
    euler = comfy.samplers.sampler_object("euler")
    if kind == "rasg":       # the plain sampler it replaces: DDIM-eta is euler_ancestral; compare with plain euler
        return model, m, euler, rasg.ksampler(eta=0.1), pos, mask
    return model, m, euler, euler, pos, mask


def timed_inpaint(model, sampler, pos, neg, mask, size, steps, cfg):
    import comfy.sample
    import comfy.samplers

    latent = comfy.sample.fix_empty_latent_channels(model, torch.zeros([1, 4, *families.detect(model).latent_size(size, size)]))
    noise = comfy.sample.prepare_noise(latent, 0)
    sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "normal", steps).cpu()
    t0 = time.perf_counter()
    comfy.sample.sample_custom(model, noise, cfg, sampler, sigmas, pos, neg, latent, noise_mask=mask,
                               disable_pbar=True, seed=0)
    return time.perf_counter() - t0


def peak_bytes(fn):
    """Peak bytes held by malloc (glibc mallinfo2: arena + mmapped) while fn runs, sampled every 0.2 ms by a thread.
    torch's CPU tensors come from malloc, so this sees them; tracemalloc does not (it tracks Python objects only)."""
    import ctypes
    import threading

    class MallInfo2(ctypes.Structure):
        _fields_ = [(f, ctypes.c_size_t) for f in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                    "fsmblks", "uordblks", "fordblks", "keepcost")]

    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = MallInfo2
    now = lambda: (lambda i: i.uordblks + i.hblkhd)(libc.mallinfo2())   # noqa: E731
    start, peak, done = now(), [0], [False]

    def watch():
        while not done[0]:
            peak[0] = max(peak[0], now())
            time.sleep(0.0002)

    th = threading.Thread(target=watch)
    th.start()
    try:
        fn()
    finally:
        done[0] = True
        th.join()
    return max(peak[0], now()) - start


def measure_inpaint(name, kind, size, steps, repeats, cfg=5.0):
    model, clip, _ = tiny_models.load(name)
    base_m, trick_m, base_s, trick_s, pos, mask = hdpainter(kind, name, model, clip, size)
    neg = tiny_models.encode(clip, "")
    run_b = lambda: timed_inpaint(base_m, base_s, pos, neg, mask, size, steps, cfg)    # noqa: E731
    run_t = lambda: timed_inpaint(trick_m, trick_s, pos, neg, mask, size, steps, cfg)  # noqa: E731
    run_b(), run_t()                                                                     # warm-up
    base, trick = [], []
    for i in range(repeats):
        pair = [(base, run_b), (trick, run_t)]
        for out, fn in (pair if i % 2 == 0 else pair[::-1]):
            out.append(peak_bytes(fn) if kind == "painta-mem" else fn())
    row = {"model": name, "patch": kind, "size": size, "steps": steps, "repeats": repeats,
           "baseline_s": min(base), "patched_s": min(trick), "ratio": min(trick) / min(base),
           "median_ratio": statistics.median(trick) / statistics.median(base)}
    if kind == "painta-mem":     # bytes, not seconds: report the peaks in MiB through the same columns
        row.update(patch="painta peak MiB (not s)", baseline_s=min(base) / 2**20, patched_s=min(trick) / 2**20)
    return row


VIDEO_FRAMES = 17    # video models: 17 frames (5 latent frames)


def timed(name, model, clip, size, steps, cfg):
    pos, neg = tiny_models.encode(clip, MAIN), tiny_models.encode(clip, "")
    t0 = time.perf_counter()
    tiny_models.sample(name, model, clip, size=size, steps=steps, cfg=cfg, positive=pos, negative=neg,
                       frames=VIDEO_FRAMES)
    return time.perf_counter() - t0


def measure(name, kind, size, steps, repeats, cfg=5.0):
    model, clip, _ = tiny_models.load(name)
    mem = kind.endswith("-mem")  # peak bytes above the resting state instead of seconds
    other = patched(kind.removesuffix("-mem"), name, model, clip, size)
    timed(name, model, clip, size, 1, cfg), timed(name, other, clip, size, 1, cfg)      # warm-up
    base, trick = [], []
    for i in range(repeats):     # ABBA order cancels slow drift of the machine
        pair = [(base, model), (trick, other)]
        for times, m in (pair if i % 2 == 0 else pair[::-1]):
            run = lambda: timed(name, m, clip, size, steps, cfg)  # noqa: E731
            times.append(peak_bytes(run) if mem else run())
    row = {"model": name, "patch": kind, "size": size, "steps": steps, "repeats": repeats,
           "baseline_s": min(base), "patched_s": min(trick), "ratio": min(trick) / min(base),
           "median_ratio": statistics.median(trick) / statistics.median(base)}
    if mem:
        row.update(patch=f"{kind} peak MiB (not s)", baseline_s=min(base) / 2**20, patched_s=min(trick) / 2**20)
    return row


DEFAULT_RUNS = ["apg:sd15", "apg:sdxl", "router-idle:sd15", "router-idle:sdxl", "router-pass:sdxl",
                "r2f:sd15", "r2f:sdxl", "route-unet:sdxl_layout", "route-dit:sd3", "route-dit:flux_dev:4",
                "painta:sd15_inpaint", "painta:sdxl", "painta-mem:sd15_inpaint", "rasg:sd15_inpaint", "rasg:sdxl",
                "addit:sd15", "addit-mem:sd15", "addit:flux_dev:4",
                "keymask:sd15", "keymask:sdxl", "keymask:sd3", "keymask:flux_dev:4", "designedit:sdxl",
                "route-dit:flux2", "addit:flux2", "addit-mem:flux2", "keymask:flux2", "painta:flux2",
                "route-dit:zimage", "addit:zimage", "addit-mem:zimage", "keymask:zimage", "painta:zimage",
                "apg:wan21_t2v", "route-cross:wan21_t2v"]


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


# ---------------------------------------------------------------- noise search (issue 7)

def _search_setup(name, size, steps):
    import comfy.samplers

    model, clip, vae = tiny_models.load(name)
    pos, neg = tiny_models.encode(clip, MAIN), tiny_models.encode(clip, "")
    sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "normal", steps).cpu()
    latent = comfy.sample.fix_empty_latent_channels(model, torch.zeros([1, 4, size // 8, size // 8]))
    return model, clip, vae, pos, neg, sigmas, latent


def _search(model, pos, neg, sigmas, latent, seed, n, b, checks, cfg=5.0, decode=None, early_percent=0.0, **kw):
    import comfy.samplers

    # early_percent 0: the first step's x0 (at 0.4 the tiny random models give 1 - 1e-9 for every candidate)
    settings = search.SearchSettings(mode="random", budget=n, batch_size=b, top_k=1, early_percent=early_percent, **kw)
    return search.NoiseSearch(model, pos, neg, cfg, comfy.samplers.ksampler("euler"), sigmas, latent, seed, settings,
                              checks, decode=decode).run()


def measure_search_time(name, n, b, size, steps, repeats, cfg=5.0):
    """Random search of n candidates in batches of b against ceil(n/b) x one batched sampling run of b rows."""
    import comfy.samplers

    model, _, _, pos, neg, sigmas, latent = _search_setup(name, size, steps)
    sampler = comfy.samplers.ksampler("euler")

    def batched_run():
        noise = torch.cat([comfy.sample.prepare_noise(latent, 100 + i) for i in range(b)])
        t0 = time.perf_counter()
        comfy.sample.sample_custom(model, noise, cfg, sampler, sigmas, pos, neg, latent.repeat(b, 1, 1, 1),
                                   disable_pbar=True, seed=100)
        return time.perf_counter() - t0

    def search_run():
        t0 = time.perf_counter()
        _search(model, pos, neg, sigmas, latent, 100, n, b, [verifiers.SelfConsistencyLatent()], cfg=cfg)
        return time.perf_counter() - t0

    batched_run(), search_run()                     # warm-up
    one, whole = [], []
    for i in range(repeats):
        pair = [(one, batched_run), (whole, search_run)]
        for times, fn in (pair if i % 2 == 0 else pair[::-1]):
            times.append(fn())
    calls = -(-n // b)
    return {"model": name, "n": n, "b": b, "size": size, "steps": steps, "batched_run_s": min(one),
            "search_s": min(whole), "ratio": min(whole) / (calls * min(one)),
            "median_ratio": statistics.median(whole) / (calls * statistics.median(one))}


def search_quality(name, size, steps, seeds, n_max=8):
    """One random search of n_max candidates per seed, every verifier scored on every candidate (ensemble mode
    keeps all raw scores): best-of-first-N for N = 1, 2, 4, 8 and the verifier-hacking cross table."""
    model, clip, vae, pos, neg, sigmas, latent = _search_setup(name, size, steps)
    cv = tiny_models.clip_vision()
    ref_latent = _search(model, tiny_models.encode(clip, OTHER), neg, sigmas, latent, 999, 1, 1,
                         [verifiers.SelfConsistencyLatent()]).top
    reference = vae.decode(ref_latent)
    checks = [verifiers.SelfConsistencyLatent(), verifiers.ReferenceSimilarity(cv, reference)]
    names = [c.name for c in checks]
    rows = []
    for seed in seeds:
        report = _search(model, pos, neg, sigmas, latent, seed, n_max, 4, checks, decode=vae.decode).report
        rows.append([[c["scores"][k] for k in names] for c in report["candidates"]])   # seed order: seed, seed+1, ...
    raw = torch.tensor(rows, dtype=torch.float64)                 # (seeds, n_max, verifiers)
    curve = {}
    for n in (1, 2, 4, 8):
        if n <= n_max:
            curve[n] = [float(raw[:, :n, j].max(1).values.mean()) for j in range(len(names))]
    cross = {}
    for label, pick in [("none (N = 1)", lambda r: 0)] + \
            [(f"{k}", (lambda j: lambda r: int(r[:, j].argmax()))(j)) for j, k in enumerate(names)] + \
            [("ensemble (rank average)", lambda r: int(verifiers.rank_average(r).argmax()))]:
        chosen = [r[pick(r)] for r in raw]
        cross[label] = [float(torch.stack(chosen)[:, j].mean()) for j in range(len(names))]
    return {"model": name, "size": size, "steps": steps, "seeds": list(seeds), "verifiers": names,
            "curve": curve, "cross": cross}


def search_tables(times, quality):
    lines = ["| model | N | batch b | one batched run, best (s) | search, best (s) | search / (⌈N/b⌉ × run) | ratio of medians |",
             "|---|---|---|---|---|---|---|"]
    for r in times:
        lines.append(f"| {r['model']} | {r['n']} | {r['b']} | {r['batched_run_s']:.3f} | {r['search_s']:.3f} | "
                     f"{r['ratio']:.3f}× | {r['median_ratio']:.3f}× |")
    for q in quality:
        v = q["verifiers"]
        lines += ["", f"Best verifier score of random search with N candidates ({q['model']}, {q['size']}², "
                      f"{q['steps']} steps, early x0 at the first step, mean over {len(q['seeds'])} seeds), shown as "
                      "1 − cosine (lower is better):", "",
                  "| N | " + " | ".join(f"1 − best {k}" for k in v) + " |", "|---" * (len(v) + 1) + "|"]
        for n, vals in q["curve"].items():
            lines.append(f"| {n} | " + " | ".join(f"{1 - x:.4e}" for x in vals) + " |")
        lines += ["", f"Verifier hacking ({q['model']}, N = 8): the candidate each verifier picks, scored by every "
                      "verifier (1 − cosine, lower is better):", "",
                  "| searched with | " + " | ".join(v) + " |", "|---" * (len(v) + 1) + "|"]
        for label, vals in q["cross"].items():
            lines.append(f"| {label} | " + " | ".join(f"{1 - x:.4e}" for x in vals) + " |")
    return "\n".join(lines)


def write_search_docs(text):
    doc = comfy_env.ROOT / "docs" / "BENCHMARKS.md"
    src = doc.read_text()
    start, end = "<!-- bench-search:start -->", "<!-- bench-search:end -->"
    if start not in src:
        src += ("\n## Noise search (`scripts/bench.py --search`)\n\n" + start + "\n" + end + "\n")
    head, rest = src.split(start, 1)
    doc.write_text(head + start + "\n" + text + "\n" + end + rest.split(end, 1)[1])


def main_search(a):
    names = sorted({r.split(":")[0] for r in a.search_runs} | set(a.search_quality))
    tiny_models.ensure_models(names=names)
    torch.set_grad_enabled(False)
    times = []
    for run in a.search_runs:                      # model:N:b
        name, n, b = run.split(":")
        times.append(measure_search_time(name, int(n), int(b), a.size, a.steps, a.repeats))
        print(f"search {run}: {times[-1]['ratio']:.3f}x", flush=True)
    quality = [search_quality(name, a.size, a.steps, range(a.seeds)) for name in a.search_quality]
    text = search_tables(times, quality) + (f"\n\n_{torch.__version__}, {torch.get_num_threads()} threads, CPU; "
                                            f"command: `scripts/bench.py --search`_")
    print(text)
    if a.write:
        write_search_docs(text)


def _plan_times(lm_model, ids, new_tokens, repeats):
    """(prefill seconds, seconds per new token) of the KV-cached decoder: the time to the first token, and the
    median gap between later tokens (one cached step each), medians over `repeats` runs."""
    from sleight.samplers import text_generation as tg

    prefills, gaps = [], []
    for _ in range(repeats):
        stamps = [time.perf_counter()]
        tg.decode_tokens(lm_model, ids, 1 + new_tokens, tg.greedy, set(), torch.device("cpu"), torch.float32,
                         on_token=lambda n: stamps.append(time.perf_counter()))
        prefills.append(stamps[1] - stamps[0])
        gaps += [b - a for a, b in zip(stamps[1:], stamps[2:])]
    return statistics.median(prefills), statistics.median(gaps)


def main_r2f_plan(a):
    """Sleight · R2F plan on the CPU: the tiny Qwen3 writing a plan, and Qwen3-4B-wide models of 1 and 2 blocks
    (real vocabulary and widths, random weights) whose difference is the cost of one of Qwen3-4B's 36 blocks."""
    import gc

    import comfy.ops
    from comfy.text_encoders import llama
    from sleight.samplers import r2f_plan
    from sleight.samplers import text_generation as tg

    torch.set_grad_enabled(False)
    clip = tiny_models.text_encoder("qwen3")
    lm = tg.language_model(clip, "bench")
    ids = lm.chat_ids(r2f_plan.SYSTEM, r2f_plan.user_message("A hairy hamburger on a wooden table"))
    answer = r2f_plan._answer("A hairy hamburger", r2f_plan._EXAMPLES[0][1])
    n_answer = lm.count(answer) + 1                                    # + <|im_end|>
    t = time.perf_counter()
    lm.generate(ids, n_answer)
    tiny_plan = time.perf_counter() - t
    tiny_prefill, tiny_token = _plan_times(lm.wrapper.transformer, ids, a.plan_tokens, a.repeats)
    seq, gaps = list(ids), []
    for _ in range(4):                                                 # the same without a cache: full recompute
        t = time.perf_counter()
        x, _ = lm.wrapper.transformer.model(torch.tensor([seq]), dtype=torch.float32)
        seq.append(int(torch.argmax(x[0, -1] @ lm.wrapper.transformer.model.embed_tokens.weight.T)))
        gaps.append(time.perf_counter() - t)
    no_cache_token = statistics.median(gaps)
    del clip, lm
    wide = {}
    for layers in (1, 2):
        model = llama.Qwen3_4B({"num_hidden_layers": layers}, torch.float32, "cpu", comfy.ops.manual_cast)
        tiny_models._randomize(model, f"bench-{layers}")
        wide[layers] = _plan_times(model, ids, a.plan_tokens, a.repeats)
        del model
        gc.collect()
    block = [wide[2][i] - wide[1][i] for i in (0, 1)]
    rest = [wide[1][i] - block[i] for i in (0, 1)]                     # embedding, final norm, tied head
    full = [rest[i] + 36 * block[i] for i in (0, 1)]
    rows = [("prompt (instruction + examples + input), tokens", f"{len(ids)}"),
            ("answer for one concept (the first example), tokens", f"{n_answer}"),
            ("tiny Qwen3: one-concept plan, prompt + answer", f"{tiny_plan:.2f} s"),
            ("tiny Qwen3: prompt (prefill)", f"{tiny_prefill * 1e3:.0f} ms"),
            ("tiny Qwen3: per new token, KV cache", f"{tiny_token * 1e3:.1f} ms"),
            ("tiny Qwen3: per new token, full recompute", f"{no_cache_token * 1e3:.1f} ms"),
            ("Qwen3-4B block (2560 wide), prompt", f"{block[0]:.2f} s"),
            ("Qwen3-4B block, per new token", f"{block[1] * 1e3:.0f} ms"),
            ("embedding + norm + tied head (151936 x 2560), per new token", f"{rest[1] * 1e3:.0f} ms"),
            ("Qwen3-4B (36 blocks) fp32: prompt", f"{full[0]:.0f} s"),
            ("Qwen3-4B fp32: per new token", f"{full[1]:.2f} s"),
            ("Qwen3-4B fp32: one-concept plan (prompt + answer)", f"{full[0] + n_answer * full[1]:.0f} s")]
    text = "| measured on this CPU | |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows)
    print(text + f"\n\n_{torch.__version__}, {torch.get_num_threads()} threads, CPU; command: "
                 f"`scripts/bench.py --r2f-plan`_")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", nargs="+", default=DEFAULT_RUNS, help="patch:model[:steps]")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=8)
    ap.add_argument("--write", action="store_true", help="update the table in docs/BENCHMARKS.md")
    ap.add_argument("--search", action="store_true", help="noise search: wall time, score vs N, verifier hacking")
    ap.add_argument("--search-runs", nargs="+", default=["sd15:8:4", "sd15:8:8"], help="model:N:b")
    ap.add_argument("--search-quality", nargs="*", default=["sd15"], help="models for the score tables")
    ap.add_argument("--seeds", type=int, default=4, help="seeds averaged in the score tables")
    ap.add_argument("--r2f-plan", action="store_true", help="Sleight · R2F plan: time to write a plan on the CPU")
    ap.add_argument("--plan-tokens", type=int, default=16, help="new tokens timed per run (--r2f-plan)")
    a = ap.parse_args()
    if a.search:
        return main_search(a)
    if a.r2f_plan:
        return main_r2f_plan(a)
    runs = [(r.split(":") + [a.steps])[:3] for r in a.runs]
    tiny_models.ensure_models(names=sorted({run[1] for run in runs}))
    torch.set_grad_enabled(False)
    rows = []
    for kind, name, steps in runs:
        fn = measure_inpaint if kind in INPAINT_KINDS else measure
        rows.append(fn(name, kind, a.size, int(steps), a.repeats))
        print(f"{kind:>12} on {name}: {rows[-1]['ratio']:.3f}×", flush=True)
    text = table(rows) + f"\n\n_{torch.__version__}, {torch.get_num_threads()} threads, CPU; command: `make bench`_"
    print(text)
    comfy_env.OUTPUT.mkdir(exist_ok=True)
    (comfy_env.OUTPUT / "bench.json").write_text(json.dumps(rows, indent=2))
    if a.write:
        write_docs(text)


if __name__ == "__main__":
    main()
