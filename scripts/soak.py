"""make soak: a bounded long run against one real ComfyUI server, to see memory that grows from prompt to prompt.

100 prompts cycle through every example workflow (the tiny models, as `make demo` runs them, seeds shifted on
every pass so ComfyUI's cache never answers), one prompt that fails while a node patches the model, and one
interrupted in the middle of sampling. The server process's resident memory (RSS, with its children) is sampled
after every 10 prompts. The first 20 prompts are the warm-up (every model loaded once, caches filled); the run
fails if RSS after the last prompt exceeds RSS after the warm-up by 50 MB or more.

    .venv/bin/python scripts/soak.py [--prompts 100] [--every 10] [--warmup 20] [--limit-mb 50]
"""
import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import comfy_env  # noqa: E402
import demo  # noqa: E402
from comfy_server import ComfyServer  # noqa: E402

OUT = comfy_env.OUTPUT / "soak"


def rss_mb(pid):
    """Resident memory of a process and its children, in MB (from /proc, as `ps` reports it)."""
    import psutil

    proc = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)]) / 2 ** 20


def shifted(prompt, offset):
    prompt = json.loads(json.dumps(prompt))
    for node in prompt.values():
        for key in ("seed", "noise_seed"):
            if isinstance(node["inputs"].get(key), int):
                node["inputs"][key] += offset
    return prompt


def bad_apg(seed):
    """A prompt that fails at patch time: Sleight · APG with its window backwards."""
    prompt, _ = demo.tiny_prompt(json.loads((demo.API_TWINS / "sleight-apg.api.json").read_text()))
    prompt["5"]["inputs"].update(start_percent=0.9, end_percent=0.1)
    return shifted(prompt, seed)


def long_apg(seed):
    """A prompt to interrupt: the APG workflow with 500 steps on its guided sampler (node 7)."""
    prompt, _ = demo.tiny_prompt(json.loads((demo.API_TWINS / "sleight-apg.api.json").read_text()))
    prompt["7"]["inputs"]["steps"] = 500
    return shifted(prompt, seed)


def schedule(n):
    """[(label, kind, prompt)]: the example workflows, a failing and an interrupted prompt, cycled to n prompts."""
    flows = [(stem, demo.tiny_prompt(p)[0]) for stem, p in demo.workflows()]
    out, round_ = [], 0
    while len(out) < n:
        round_ += 1
        out += [(stem, "ok", shifted(p, 10_000 * round_)) for stem, p in flows]
        out += [("apg-window-backwards", "error", bad_apg(10_000 * round_)),
                ("apg-interrupted", "interrupt", long_apg(10_000 * round_))]
    return out[:n]


def run_one(client, kind, prompt):
    if kind != "interrupt":
        return client.run(prompt, check=False).status
    fired = []

    def interrupt(data):
        if str(data.get("node")) == "7" and not fired:
            fired.append(True)
            client.interrupt()

    return client.run(prompt, on_progress=interrupt, check=False).status


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=int, default=100)
    ap.add_argument("--every", type=int, default=10, help="sample RSS after every this many prompts")
    ap.add_argument("--warmup", type=int, default=20, help="prompts before the reference sample")
    ap.add_argument("--limit-mb", type=float, default=50.0)
    args = ap.parse_args(argv)

    import tiny_models

    jobs = schedule(args.prompts)
    needed = sorted({m for _, p in demo.workflows() for m in demo.tiny_prompt(p)[1]})
    tiny_models.ensure_models(names=needed)
    OUT.mkdir(parents=True, exist_ok=True)
    expected = {"ok": "execution_success", "error": "execution_error", "interrupt": "execution_interrupted"}
    samples, wrong, t0 = [], [], time.monotonic()
    with ComfyServer(log_path=OUT / "server.log") as server:
        pid = server.proc.pid
        samples.append((0, rss_mb(pid)))
        print(f"ComfyUI ready in {server.startup_s:.1f} s, RSS {samples[0][1]:.0f} MB; {len(jobs)} prompts")
        for i, (label, kind, prompt) in enumerate(jobs, 1):
            status = run_one(server.client, kind, prompt)
            if status != expected[kind]:
                wrong.append((i, label, status))
                print(f"  prompt {i} ({label}): {status}, expected {expected[kind]}")
            if i % args.every == 0:
                samples.append((i, rss_mb(pid)))
                print(f"  after {i:>3} prompts: RSS {samples[-1][1]:7.1f} MB   ({time.monotonic() - t0:.0f} s)")
    warm = dict(samples).get(args.warmup, samples[0][1])
    after = [mb for i, mb in samples if i >= args.warmup]
    growth, spread = samples[-1][1] - warm, max(after) - min(after)
    report = {"prompts": len(jobs), "seconds": round(time.monotonic() - t0, 1),
              "rss_mb": [[i, round(mb, 1)] for i, mb in samples], "warmup_prompts": args.warmup,
              "growth_after_warmup_mb": round(growth, 1), "spread_after_warmup_mb": round(spread, 1),
              "unexpected": wrong}
    (OUT / "soak.json").write_text(json.dumps(report, indent=1))
    print(f"growth after warm-up (prompt {args.warmup} -> {samples[-1][0]}): {growth:+.1f} MB "
          f"(range after warm-up {spread:.1f} MB), limit {args.limit_mb:.0f} MB; {report['seconds']:.0f} s; "
          f"report: {(OUT / 'soak.json').relative_to(comfy_env.ROOT)}")
    if wrong or growth >= args.limit_mb:
        sys.exit(1)


if __name__ == "__main__":
    main()
