"""make bench-kernels: every attention effect at real sizes, against plain SDPA and the official formulations.

For each shape (SD1.5 512² and SDXL 1024² self-attention, Flux 1024² and 2048² joint attention, Wan 2.1 video
self-attention) and each effect, in one run:
- time of ours ÷ plain SDPA, median of --repeats, every kernel of a shape interleaved in a rotating order. Ours:
  the effect object through the real router (`Router.__call__`) on ComfyUI's own attention function, as a model
  calls it; plain: ComfyUI's attention function on the same q / k / v without Sleight;
- peak memory ÷ plain SDPA. Peak = the call's inputs (q, k, v as the model holds them, plus the state the effect
  reads: Add-it's source K/V, the routed text K/V, the block's hidden states) + the high-water mark above them
  during the call. CPU: the process's peak RSS (VmHWM, reset through /proc/self/clear_refs before each call, glibc
  told to unmap freed blocks at once, so the mark is the call's own); CUDA: torch.cuda.max_memory_allocated;
- the same two figures for a direct re-implementation of the official formulation (the scores materialised as
  the official code does), where its bytes fit --official-limit-gb, else the bytes it would need;
- correctness: max |ours − the direct formula| over a sample of queries.
On 2 CPU cores the heads are reduced for the timed pass (time ratios are per head alike), and memory is measured
in a second pass at the model's own heads with `dry_attention` standing in for the backend: everything around the
attention (copies, concatenations, gathers, outputs, splits) runs and is measured, the attention's arithmetic is
skipped (the SD1.5 rows, timed at their own 8 heads, show both measurements agree). `--device cuda` times the
models' own heads (never used by the tests). `--write` puts the table into docs/BENCHMARKS.md and the plot into
docs/bench_kernels.png.
"""
import argparse
import ctypes
import gc
import math
import re
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent))
import comfy_env  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "BENCHMARKS.md"
PLOT = ROOT / "docs" / "bench_kernels.png"
SIGMAS = None                 # the schedule every call's Forward sees (set in main: 50 steps)
STEP = 5                      # the step the calls belong to: inside every effect's window
GAMMA = 1.05                  # Add-it's official γ for generated images
TOKENS = (1, 2, 3, 4, 5)      # PAIntA's prompt tokens (positions in the text sequence)
SUBJECT = 3                   # Add-it's subject token
FULL_GPU_GB = 24              # "fits a 24 GB card" for the official formulations at full size


@dataclass(frozen=True)
class Case:
    name: str
    label: str
    kind: str                 # "self" (UNet-like: text through cross-attention) | "joint" (text in the sequence)
    grid: tuple               # image tokens (h, w); video: (frames · h, w)
    txt: int                  # text tokens in the sequence (joint) or in the cross-attention context (self)
    heads: int                # the model's heads at this layer
    dim: int                  # head dim
    cpu_heads: int            # heads timed on CPU (0: not timed on CPU, memory only)
    ctx_dim: int = 0          # cross-attention context width (self: PAIntA's relevance from the block's attn2)
    frames: int = 1           # video: the mask repeats per frame
    cpu_skip: tuple = ()      # effects not timed on CPU (time budget); their memory is still measured

    @property
    def tokens(self):
        return self.grid[0] * self.grid[1] + (self.txt if self.kind == "joint" else 0)


CASES = [
    Case("sd15-512", "SD1.5 512², 64² self-attention", "self", (64, 64), 77, 8, 40, 8, 768),
    Case("sdxl-1024", "SDXL 1024², 64² self-attention", "self", (64, 64), 77, 10, 64, 4, 2048),
    Case("flux-1024", "Flux.1/.2 1024², joint 512 + 4096", "joint", (64, 64), 512, 24, 128, 2),
    Case("flux-2048", "Flux.1/.2 2048², joint 512 + 16384", "joint", (128, 128), 512, 24, 128, 1,
         cpu_skip=("addit-record",)),
    Case("wan-33f", "Wan 2.1 480p × 33 frames, 9×30×52 self-attention", "self", (9 * 30, 52), 512, 12, 128, 1,
         4096, 9),
    Case("wan-81f", "Wan 2.1 480p × 81 frames, 21×30×52 self-attention", "self", (21 * 30, 52), 512, 12, 128, 0,
         4096, 21),
]
EFFECTS = {"self": ("keymask-zero", "keymask-exclude", "painta", "addit"),
           "joint": ("keymask-zero", "keymask-exclude", "painta", "addit", "addit-record", "routing")}
GOALS = {"keymask-zero": (1.05, 1.05), "keymask-exclude": (1.05, 1.05), "painta": (1.15, 1.10),
         "addit": (2.05, 1.10), "addit-record": (None, None), "routing": (1.05, None)}


# ---------------------------------------------------------------------------------------------- measuring

class Meter:
    """Time and peak memory of one call: CUDA allocator statistics, or the process's RSS high-water mark on CPU."""

    def __init__(self, device):
        self.device = device
        if device.type == "cpu":
            libc = ctypes.CDLL("libc.so.6")
            libc.mallopt(-3, 1 << 16)      # M_MMAP_THRESHOLD: blocks ≥ 64 KiB are mapped, and unmapped when freed
            libc.mallopt(-1, 1 << 16)      # M_TRIM_THRESHOLD: the heap's free top goes back at once

    @staticmethod
    def _status(key):
        with open("/proc/self/status") as f:
            return int(re.search(key + r":\s+(\d+)", f.read()).group(1)) * 1024

    def __call__(self, fn):
        import torch

        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
        else:
            base = self._status("VmRSS")
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")               # reset VmHWM to the current RSS
        t0 = time.perf_counter()
        out = fn()
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - t0
        peak = (torch.cuda.max_memory_allocated() if self.device.type == "cuda" else self._status("VmHWM")) - base
        return elapsed, max(peak, 0), out


def nbytes(*ts):
    return sum(t.numel() * t.element_size() for t in ts if t is not None)


# ---------------------------------------------------------------------------------------------- a shape

class Shape:
    """One case's tensors, as the model hands them to attention: q, k, v (B, L, H·D), B = 1 row."""

    def __init__(self, case, heads, dtype, device, torch, backend):
        self.case, self.heads, self.dim, self.dtype, self.device = case, heads, case.dim, dtype, device
        self.backend = backend                # ComfyUI's attention function, or `dry_attention`
        g = torch.Generator(device="cpu").manual_seed(0)

        def rnd(*shape):
            return torch.randn(*shape, generator=g).to(dtype=dtype, device=device)

        L, C = case.tokens, heads * case.dim
        self.q, self.k, self.v = rnd(1, L, C), rnd(1, L, C), rnd(1, L, C)
        self.n_img = case.grid[0] * case.grid[1]
        self.img = slice(case.tokens - self.n_img, case.tokens)
        self.txt = slice(0, case.txt) if case.kind == "joint" else None
        # Add-it's source row: its image K/V, as the router caches them; routing: the routed prompt's text K/V
        self.k_src, self.v_src = rnd(1, heads, self.n_img, case.dim), rnd(1, heads, self.n_img, case.dim)
        if case.kind == "joint":
            self.k_route, self.v_route = rnd(1, heads, case.txt, case.dim), rnd(1, heads, case.txt, case.dim)
        # the hole / removed region: a centred box of half the width and height in every frame (25 % of tokens)
        gh, gw = case.grid[0] // case.frames, case.grid[1]
        frame = torch.zeros(gh, gw)
        frame[gh // 4: gh // 4 + gh // 2, gw // 4: gw // 4 + gw // 2] = 1.0
        self.mask = frame.repeat(case.frames, 1)                   # (grid h, grid w), 1 = hole / remove
        self.hole = self.mask.flatten() > 0.5
        if case.kind == "self":                                    # the block PAIntA's relevance reads
            self.x = rnd(1, L, C)
            self.context = rnd(1, case.txt, case.ctx_dim)
        # the queries whose outputs are checked against the direct formulas
        pick = torch.randperm(L, generator=g)[:96]
        holes = self.img.start + self.hole.nonzero().flatten()
        self.sample = torch.cat([pick, holes[torch.randperm(len(holes), generator=g)[:32]]]).unique().sort().values

    def bhld(self, t):
        return t.view(t.shape[0], t.shape[1], self.heads, -1).transpose(1, 2)

    @property
    def input_bytes(self):
        return nbytes(self.q, self.k, self.v)


def family_of(case):
    from sleight.attention_patches.core.families.flux import Flux
    from sleight.attention_patches.core.families.unet import UNet

    return Flux("Flux", 2, 8) if case.kind == "joint" else UNet("SD1.5", 1, 8)


class Harness:
    """Calls through the real router, with a Forward and a RunState like a sampling run's."""

    def __init__(self, shape, effect, torch):
        from sleight.attention_patches.core import router, runstate

        self.router, self.runstate = router, runstate
        self.shape, self.family = shape, family_of(shape.case)
        conds = {"positive": [{"uuid": "cond"}], router.SOURCE_ROLE: [{"uuid": "src"}],
                 router.ROUTE_ROLE: [{"uuid": "route"}]}
        self.run = runstate.RunState(SimpleNamespace(conds=conds))
        self.routes = router.Router((effect,))
        self.sigma = float(SIGMAS[STEP])

    def options(self, uuid):
        case, router = self.shape.case, self.router
        gh, gw = case.grid
        fwd = router.Forward(family=self.family, latent_size=(2 * gh, 2 * gw) if case.kind == "joint" else (gh, gw),
                             txt_len=case.txt if case.kind == "joint" else 0, batch=1, sigma=self.sigma,
                             sample_sigmas=SIGMAS, model_sampling=None, cond_or_uncond=[0], uuids=[uuid],
                             run=self.run)
        if case.kind == "joint":
            return {router.KEY: fwd, "block_type": "double", "block_index": 7}
        return {router.KEY: fwd, "block": ("output", 2), "block_index": 1,
                "activations_shape": (1, self.shape.heads * case.dim, gh, gw)}

    def __call__(self, uuid="cond", q=None, k=None, v=None, options=None):
        s = self.shape
        return self.routes(s.backend, s.q if q is None else q, s.k if k is None else k, s.v if v is None else v,
                           s.heads, transformer_options=options or self.options(uuid))


def plain(shape, k=None, v=None):
    return shape.backend(shape.q, shape.k if k is None else k, shape.v if v is None else v, shape.heads)


def dry_attention(q, k, v, heads, mask=None, skip_reshape=False, skip_output_reshape=False, **kwargs):
    """ComfyUI's attention function without the arithmetic: an output of the right shape and layout (written, so
    its pages count), for measuring the memory of everything around the backend at the model's own head count."""
    import torch

    b, lq = q.shape[0], (q.shape[2] if skip_reshape else q.shape[1])
    d = v.shape[-1] if skip_reshape else v.shape[-1] // heads
    out = torch.zeros(b, lq, heads, d, dtype=q.dtype, device=q.device)
    return out.transpose(1, 2) if skip_output_reshape else out.reshape(b, lq, heads * d)


# ---------------------------------------------------------------------------------------------- the official formulations

def official_designedit(shape, keep, torch):
    """DesignEdit `ca_forward`: keys from the masked hidden states, einsum over q.clone(), k.clone(), softmax."""
    q, k, v = (shape.bhld(t) for t in (shape.q, shape.k, shape.v))
    k = k * keep[None, None, :, None].to(k.dtype)
    sim = torch.einsum("bhid,bhjd->bhij", q.clone(), k.clone()) * q.shape[-1] ** -0.5
    attn = sim.softmax(dim=-1)
    return attn @ v


def official_hdpainter(shape, hole, c, torch):
    """HD-Painter: the plain attention with its scores kept (its output feeds the relevance), then
    softmax(S ⊙ [(1−M)c + M])·V with M = m mᵀ + (1 − m) built as an L×L matrix."""
    q, k, v = (shape.bhld(t) for t in (shape.q, shape.k, shape.v))
    sim = torch.einsum("bhid,bhjd->bhij", q, k) * q.shape[-1] ** -0.5
    y = sim.softmax(dim=-1) @ v                       # the plain self-attention output (official attn1)
    m = hole.to(q.dtype)[None, :, None]
    big_m = m @ m.transpose(1, 2) + (1 - m)
    factor = (1 - big_m) * c.to(q.dtype)[:, None, :] + big_m
    out = (sim * factor[:, None]).softmax(dim=-1) @ v
    return out, y


def official_addit(shape, torch, record=None):
    """Add-it `apply_extended_attention` (extend_type "pixels"): key[1] *= γ, K/V concatenated, one SDPA; at the
    recording steps `apply_standard_attention`: the probabilities over the extended keys materialised."""
    q, k, v = (shape.bhld(t) for t in (shape.q, shape.k, shape.v))
    k_ext = torch.cat([shape.k_src, k * GAMMA], dim=2)
    v_ext = torch.cat([shape.v_src, v], dim=2)
    if record is None:
        return torch.nn.functional.scaled_dot_product_attention(q, k_ext, v_ext)
    empty = torch.empty(q.shape[1], q.shape[2], k_ext.shape[2], dtype=q.dtype, device=q.device)
    scores = torch.baddbmm(empty, q[0], k_ext[0].transpose(-1, -2), beta=0, alpha=q.shape[-1] ** -0.5)
    del empty
    probs = scores.softmax(dim=-1)
    del scores
    out = torch.bmm(probs, v_ext[0])
    return out, (probs[:, shape.img] @ record.to(probs.dtype)).mean(0)      # the subject's map


def official_bytes(effect, shape, heads, itemsize):
    """Bytes the official formulation's L×L tensors need at once (a lower bound: the matrices only)."""
    L, n_src = shape.case.tokens, shape.n_img
    mats = {"keymask-zero": 2 * heads * L * L, "keymask-exclude": 2 * heads * L * L,
            "painta": 3 * heads * L * L + 2 * L * L, "addit-record": 2 * heads * L * (L + n_src)}
    return mats.get(effect, 0) * itemsize


# ---------------------------------------------------------------------------------------------- the effects

class Kernel:
    """One effect on one shape: ours (through the router), its inputs, the official formulation, the check."""

    baseline = "plain"
    state_bytes = 0

    def __init__(self, name, shape, torch):
        self.name, self.shape, self.torch = name, shape, torch

    def official(self):
        return None

    def check(self):
        return float("nan")


def diff(got, want, shape, torch):
    """max |got − want| over the sample queries; got (1, L, H·D) as the router returns it, want (1, H, n, D)."""
    got = shape.bhld(got)[:, :, shape.sample]
    return float((got.double() - want.double()).abs().max())


class KeyMaskKernel(Kernel):
    def __init__(self, name, shape, torch):
        super().__init__(name, shape, torch)
        from sleight.attention_patches import keymask
        from sleight.attention_patches.core import schedule

        self.keymask, self.mode = keymask, name.split("-")[1]
        self.effect = keymask.KeyMask(shape.mask, schedule.StepWindow(0.02, 0.78), mode=self.mode)
        self.harness = Harness(shape, self.effect, torch)

    def ours(self):
        return self.harness()

    def official(self):
        keep = self.torch.ones(self.shape.case.tokens)
        keep[self.shape.img] = 1 - self.shape.mask.flatten()
        if self.mode == "exclude":      # the official code has only the zero mode: the same L×L work
            keep = keep.clamp_min(1e-6)
        return lambda: official_designedit(self.shape, keep.to(self.shape.device), self.torch)

    def check(self):
        s, torch = self.shape, self.torch
        q, k, v = (s.bhld(t).double() for t in (s.q, s.k, s.v))
        want = self.keymask.reference(q[:, :, s.sample], k, v, s.mask.flatten().double(), [0], s.img, self.mode)
        return diff(self.ours(), want, s, torch)


class PAIntAKernel(Kernel):
    """Joint families: PAIntA through the router (relevance from the same call). Self-attention families: the
    UNet path (attn1 runs plainly through the router and is kept; the block's middle patch computes the relevance
    from attn2's weights and re-runs the hole queries with scaled keys), against attn1 + to_out."""

    def __init__(self, name, shape, torch):
        super().__init__(name, shape, torch)
        from sleight.attention_patches import painta
        from sleight.attention_patches.core import schedule

        self.painta = painta
        case = shape.case
        target = painta.InpaintTarget(shape.mask, TOKENS, case.txt)
        family = family_of(case)
        if case.kind == "joint":
            self.effect = painta.PAIntA(target, ["double.7"], schedule.Window(0.0, 1.0), family)
        else:
            from comfy.ldm.modules.attention import BasicTransformerBlock

            torch.manual_seed(0)
            C = shape.heads * case.dim
            self.block = BasicTransformerBlock(C, shape.heads, case.dim, context_dim=case.ctx_dim,
                                               operations=torch.nn).to(dtype=shape.dtype, device=shape.device)
            self.effect = painta.BlockPAIntA(target, ["output.2.1"], schedule.Window(0.0, 1.0), family,
                                             shape.context, {"output.2.1": self.block})
            self.state_bytes = nbytes(shape.x)
        self.harness = Harness(shape, self.effect, torch)

    def plain(self):
        if self.shape.case.kind == "joint":
            return plain(self.shape)
        return self.shape.x + self.block.attn1.to_out(plain(self.shape))

    def ours(self):
        if self.shape.case.kind == "joint":
            return self.harness()
        to = self.harness.options("cond")
        n = self.block.attn1.to_out(self.harness(options=to))       # attn1 as the block runs it
        extra = {**to, self.harness.runstate.RUN_KEY: self.harness.run}
        self.effect.attn1_output(n, extra)
        return self.effect.middle(self.shape.x + n, extra)

    def relevance(self):
        """c (1, L_img) by the direct formula: head-averaged softmax over the text keys, summed over the tokens."""
        s, torch, painta = self.shape, self.torch, self.painta
        if s.case.kind == "joint":
            q_img = s.bhld(s.q)[:, :, s.img].double()
            k_txt = s.bhld(s.k)[:, :, s.txt].double()
        else:
            y = self.plain()                                  # x + plain attn1 (SDPA is the definition here)
            q_img = s.bhld(self.block.attn2.to_q(self.block.norm2(y))).double()
            k_txt = s.bhld(self.block.attn2.to_k(s.context)).double()
        p = torch.softmax(q_img @ k_txt.transpose(-1, -2) * q_img.shape[-1] ** -0.5, dim=-1)
        return painta.relevance(p.mean(1)[..., list(TOKENS)].sum(-1).float(), s.case.grid)

    def factors(self):
        """(hole over every key, c over every key): text keys are never scaled."""
        s, torch = self.shape, self.torch
        c_img = self.relevance()
        hole = torch.zeros(s.case.tokens, dtype=torch.bool)
        hole[s.img] = s.hole
        c = torch.ones(1, s.case.tokens, dtype=torch.float64)
        c[:, s.img] = c_img.double()
        return hole, c

    def official(self):
        hole, c = self.factors()
        hole, c = hole.to(self.shape.device), c.to(self.shape.device)
        return lambda: official_hdpainter(self.shape, hole, c, self.torch)

    def check(self):
        s, torch = self.shape, self.torch
        hole, c = self.factors()
        q, k, v = (s.bhld(t).double() for t in (s.q, s.k, s.v))
        if s.case.kind == "joint":
            want = self.painta.reference_painta(q[:, :, s.sample], k, v, hole, c, queries=s.sample)
            return diff(self.ours(), want, s, torch)
        # the block: x + to_out(attention), hole queries reweighted, the others plain
        sample = s.sample
        want = self.painta.reference_painta(q[:, :, sample], k, v, hole, c, queries=sample)
        o = want.to(s.dtype).transpose(1, 2).reshape(1, len(sample), -1)
        expect = s.x[:, sample] + self.block.attn1.to_out(o)
        got = self.ours()[:, sample]
        return float((got.double() - expect.double()).abs().max())


class AddItKernel(Kernel):
    baseline = "concat"

    def __init__(self, name, shape, torch):
        super().__init__(name, shape, torch)
        from sleight.attention_patches import extended

        self.extended, self.record = extended, name == "addit-record"
        case = shape.case
        block = ("double.7", "joint") if case.kind == "joint" else ("output.2.1", "self")
        self.effect = extended.AddItAttention(GAMMA, {block: 1.0}, {block} if self.record else set(), set(),
                                              [SUBJECT], case.grid)
        self.harness = Harness(shape, self.effect, torch)
        st = self.effect.state(self.harness.run)
        st.record_steps = {STEP} if self.record else set()
        # the source row's call (not timed): the router caches its image K/V for the target's call
        k_src, v_src = (t.transpose(1, 2).reshape(1, shape.n_img, -1) for t in (shape.k_src, shape.v_src))
        q_src = torch.zeros_like(shape.q)
        k_full, v_full = shape.k.clone(), shape.v.clone()
        k_full[:, shape.img], v_full[:, shape.img] = k_src, v_src
        self.harness("src", q_src, k_full, v_full)
        del q_src, k_full, v_full
        self.state_bytes = nbytes(shape.k_src, shape.v_src)
        self.k_cat = torch.cat([k_src, shape.k], dim=1)
        self.v_cat = torch.cat([v_src, shape.v], dim=1)

    def ours(self):
        st = self.effect.state(self.harness.run)
        st.maps, st.count = None, 0
        return self.harness()

    def concat(self):
        return plain(self.shape, self.k_cat, self.v_cat)

    def weights(self):
        w = self.torch.zeros(self.shape.n_img + self.shape.case.tokens)
        w[self.shape.n_img + SUBJECT] = 1.0
        return w

    def official(self):
        if not self.record:
            return lambda: official_addit(self.shape, self.torch)
        w = self.weights().to(self.shape.device)
        return lambda: official_addit(self.shape, self.torch, w)

    def check(self):
        s, torch = self.shape, self.torch
        q, k, v = (s.bhld(t).double() for t in (s.q, s.k, s.v))
        ks, vs = s.k_src.double(), s.v_src.double()
        got = self.ours()
        err = diff(got, self.extended.reference(q[:, :, s.sample], ks, vs, k, v, GAMMA), s, torch)
        if self.record:                       # the subject map: mean over heads of the mass on the subject token
            st = self.effect.state(self.harness.run)
            img = [i for i in s.sample.tolist() if s.img.start <= i < s.img.stop]
            k_ext = torch.cat([ks, GAMMA * k], 2)
            p = torch.softmax(q[:, :, img] @ k_ext.transpose(-1, -2) * q.shape[-1] ** -0.5, -1)
            want = (p * self.weights().double()).sum(-1).mean(1)[0]
            got_map = st.maps.flatten()[[i - s.img.start for i in img]]
            err = max(err, float((got_map.double() - want).abs().max()))
        return err


class RoutingKernel(Kernel):
    def __init__(self, name, shape, torch):
        super().__init__(name, shape, torch)
        from sleight.attention_patches import textkv
        from sleight.attention_patches.core import schedule

        self.textkv = textkv
        self.effect = textkv.TextKVSwap(["double.7"], schedule.Window(0.0, 1.0))
        self.harness = Harness(shape, self.effect, torch)
        k_r, v_r = (t.transpose(1, 2).reshape(1, shape.case.txt, -1) for t in (shape.k_route, shape.v_route))
        k_full, v_full = shape.k.clone(), shape.v.clone()
        k_full[:, shape.txt], v_full[:, shape.txt] = k_r, v_r
        self.harness("route", torch.zeros_like(shape.q), k_full, v_full)     # the side row: records its text K/V
        del k_full, v_full
        self.state_bytes = nbytes(shape.k_route, shape.v_route)

    def ours(self):
        return self.harness()

    def check(self):
        s = self.shape
        q, k, v = (s.bhld(t).double() for t in (s.q, s.k, s.v))
        want = self.textkv.reference(q[:, :, s.sample], k, v, s.k_route.double(), s.v_route.double(), s.txt)
        return diff(self.ours(), want, s, self.torch)


def make_kernel(name, shape, torch):
    if name.startswith("keymask"):
        return KeyMaskKernel(name, shape, torch)
    if name == "painta":
        return PAIntAKernel(name, shape, torch)
    if name.startswith("addit"):
        return AddItKernel(name, shape, torch)
    return RoutingKernel(name, shape, torch)


# ---------------------------------------------------------------------------------------------- one shape

def measure(calls, inputs, repeats, meter):
    """{key: (median time, median peak bytes incl. inputs, (max − min) / median of the times)}, the calls
    interleaved in an order that rotates every repeat."""
    keys = list(calls)
    times, peaks = {key: [] for key in keys}, {key: [] for key in keys}
    for rep in range(repeats):
        for key in keys[rep % len(keys):] + keys[:rep % len(keys)]:
            t, p, out = meter(calls[key])
            del out
            times[key].append(t)
            peaks[key].append(p + inputs[key])
    return {key: (statistics.median(times[key]), statistics.median(peaks[key]),
                  (max(times[key]) - min(times[key])) / statistics.median(times[key])) for key in keys}


def baseline_of(kn):
    return ("painta", "plain") if kn.name == "painta" and kn.shape.case.kind == "self" else ("plain", "plain")


def calls_of(shape, kernels, officials=None, concat=False):
    calls, inputs = {("plain", "plain"): lambda: plain(shape)}, {("plain", "plain"): shape.input_bytes}
    for kn in kernels:
        if baseline_of(kn) != ("plain", "plain"):
            calls[baseline_of(kn)], inputs[baseline_of(kn)] = kn.plain, shape.input_bytes + kn.state_bytes
        if concat and kn.baseline == "concat" and ("concat", "plain") not in calls:
            calls[("concat", "plain")] = kn.concat
            inputs[("concat", "plain")] = nbytes(shape.q, kn.k_cat, kn.v_cat)
        calls[(kn.name, "ours")], inputs[(kn.name, "ours")] = kn.ours, shape.input_bytes + kn.state_bytes
        if officials and officials.get(kn.name) is not None:
            calls[(kn.name, "official")] = officials[kn.name]
            inputs[(kn.name, "official")] = shape.input_bytes + kn.state_bytes
    return calls, inputs


def run_case(case, args, meter, torch):
    """One shape: the timed pass (real attention, the heads measured) and the memory pass (the model's heads,
    `dry_attention`). Returns one row per effect."""
    from comfy.ldm.modules.attention import attention_pytorch

    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    item = torch.tensor([], dtype=dtype).element_size()
    timed = case.heads if args.full_heads else case.cpu_heads
    names = [e for e in EFFECTS[case.kind] if e in args.effects]
    rows = {e: {"case": case.name, "label": case.label, "effect": e, "tokens": case.tokens, "timed_heads": timed,
                "heads": case.heads, "dim": case.dim} for e in names}
    if timed:
        shape = Shape(case, timed, dtype, device, torch, attention_pytorch)
        kernels = [make_kernel(e, shape, torch) for e in names if args.full_heads or e not in case.cpu_skip]
        officials = {}
        for kn in kernels:
            rows[kn.name]["err"] = kn.check()
            need = official_bytes(kn.name, shape, timed, item)
            if need > args.official_limit_gb * 2 ** 30:
                rows[kn.name]["off_need_gb"] = need / 2 ** 30
            else:
                officials[kn.name] = kn.official()
        got = measure(*calls_of(shape, kernels, officials), args.repeats, meter)
        for kn in kernels:
            row, base, ours = rows[kn.name], got[baseline_of(kn)], got[(kn.name, "ours")]
            row.update(time=ours[0] / base[0], mem_timed=ours[1] / base[1], plain_s=base[0], ours_s=ours[0],
                       spread=max(ours[2], base[2]))
            if (kn.name, "official") in got:
                off = got[(kn.name, "official")]
                row.update(off_time=off[0] / base[0], off_mem=off[1] / base[1])
        del shape, kernels, officials, got
    # the memory pass: the model's own heads in the model's 16-bit dtype; attention's arithmetic skipped,
    # everything around it measured
    mem_dtype = getattr(torch, args.memory_dtype)
    shape = Shape(case, case.heads, mem_dtype, device, torch, dry_attention)
    kernels = [make_kernel(e, shape, torch) for e in names]
    got = measure(*calls_of(shape, kernels, concat=True), 2, meter)
    for kn in kernels:
        row, base, ours = rows[kn.name], got[baseline_of(kn)], got[(kn.name, "ours")]
        row.update(mem=ours[1] / base[1], ours_mb=ours[1] / 2 ** 20, plain_mb=base[1] / 2 ** 20)
        if kn.baseline == "concat":
            row["mem_concat"] = ours[1] / got[("concat", "plain")][1]
        full = official_bytes(kn.name, shape, case.heads, torch.tensor([], dtype=mem_dtype).element_size())
        if full:     # the official L×L tensors at the model's heads and dtype, against ours there
            row.update(off_full_gb=full / 1e9, off_vs_ours=full / ours[1])
    return [rows[e] for e in names]


# ---------------------------------------------------------------------------------------------- output

def cell(value, goal=None):
    if value is None:
        return "—"
    mark = "" if goal is None else (" ✓" if value <= goal + 5e-3 else " ✗")
    return f"{value:.2f}×{mark}"


HEADER = ("| shape | effect | tokens | heads timed (model) | time × SDPA | memory × SDPA, model's heads, 16-bit "
          "| memory × SDPA, heads timed | official: time / memory × SDPA | official L×L at full size, 16-bit "
          "| max abs diff |")


def format_row(row):
    t_goal, m_goal = GOALS[row["effect"]]
    mem = cell(row["mem"], None if "mem_concat" in row else m_goal)
    if "mem_concat" in row:
        mem += f" ({cell(row['mem_concat'], m_goal)} of SDPA over [K_src ; K])"
    if "off_mem" in row:
        off = f"{row['off_time']:.2f}× / {row['off_mem']:.1f}×"
    elif "off_need_gb" in row:
        off = f"not run: needs {row['off_need_gb']:.1f} GiB > {ARGS.official_limit_gb:g} GiB limit"
    else:
        off = "—"
    full = "—"
    if "off_full_gb" in row:
        fits = "fits" if row["off_full_gb"] <= FULL_GPU_GB else f"> {FULL_GPU_GB} GB"
        full = f"{row['off_full_gb']:.1f} GB ({fits}): {row['off_vs_ours']:.0f}× ours"
    err = f"{row['err']:.1e}" if "err" in row else "—"
    timed = row["timed_heads"] if "time" in row else "—"
    return (f"| {row['case']} | {row['effect']} | {row['tokens']} | {timed} ({row['heads']}) "
            f"| {cell(row.get('time'), t_goal)} | {mem} | {cell(row.get('mem_timed'))} | {off} | {full} | {err} |")


def plot(rows, path):
    """Time (heads timed) and memory (model's heads) ratio of each effect against token count: a PIL chart."""
    from PIL import Image, ImageDraw

    W, H, pad = 900, 380, 60
    img = Image.new("RGB", (W, H), "white")
    d = ImageDraw.Draw(img)
    colors = {"keymask-zero": (31, 119, 180), "keymask-exclude": (148, 103, 189), "painta": (214, 39, 40),
              "addit": (44, 160, 44), "addit-record": (140, 86, 75), "routing": (255, 127, 14)}
    toks = [r["tokens"] for r in rows]
    lo, hi = math.log2(min(toks)) - 0.2, math.log2(max(toks)) + 0.2
    pw = (W - 3 * pad) // 2
    for p, (title, key, y0, y1) in enumerate((("time × SDPA", "time", 0.8, 2.6),
                                              ("memory × SDPA (model's heads)", "mem", 0.8, 2.6))):
        x_off = pad + p * (pw + pad)
        d.rectangle([x_off, pad, x_off + pw, H - pad], outline="black")
        d.text((x_off + pw // 2 - 60, pad - 20), title, fill="black")

        def xy(t, val):
            return (x_off + (math.log2(t) - lo) / (hi - lo) * pw,
                    H - pad - (min(max(val, y0), y1) - y0) / (y1 - y0) * (H - 2 * pad))

        for ref in (1.0, 1.1, 1.5, 2.0, 2.5):
            _, yy = xy(min(toks), ref)
            d.line([x_off, yy, x_off + pw, yy], fill=(210, 210, 210))
            d.text((x_off - 28, yy - 6), f"{ref:.1f}", fill="black")
        for t in sorted(set(toks)):
            x, _ = xy(t, y0)
            d.text((x - 14, H - pad + 6), f"{t / 1000:.1f}k", fill="black")
        for effect, color in colors.items():
            pts = sorted((r["tokens"], r[key]) for r in rows if r["effect"] == effect and r.get(key) is not None)
            pts = [xy(t, v) for t, v in pts]
            if len(pts) > 1:
                d.line(pts, fill=color, width=2)
            for x, y in pts:
                d.ellipse([x - 3, y - 3, x + 3, y + 3], fill=color)
    x = pad
    for effect, color in colors.items():
        d.rectangle([x, H - 22, x + 10, H - 12], fill=color)
        d.text((x + 14, H - 23), effect, fill="black")
        x += 130
    d.text((W - 250, 8), "tokens on a log scale; ratios clipped to 0.8-2.6", fill=(90, 90, 90))
    img.save(path, optimize=True)


def write_doc(rows, header_lines, command):
    text = DOC.read_text()
    start, end = "<!-- bench-kernels:start -->", "<!-- bench-kernels:end -->"
    body = "\n".join([start, *header_lines, "", HEADER, "|" + "---|" * 10, *[format_row(r) for r in rows], "",
                      f"![time and memory ratio against tokens]({PLOT.name})", "", f"_command: `{command}`_", end])
    if start in text:
        text = text[:text.index(start)] + body + text[text.index(end) + len(end):]
    else:
        text = text.rstrip("\n") + "\n\n## Attention kernels at real sizes (`make bench-kernels`)\n\n" + body + "\n"
    DOC.write_text(text)


def main(argv=None):
    global SIGMAS, ARGS
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--dtype", default=None, help="float32 (CPU default) or bfloat16 / float16 (CUDA default bf16)")
    ap.add_argument("--memory-dtype", default="bfloat16", help="dtype of the memory pass (the models' own)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--cases", nargs="*", default=None, help=f"of {[c.name for c in CASES]}")
    ap.add_argument("--effects", nargs="*", default=sorted(GOALS))
    ap.add_argument("--full-heads", action="store_true", help="time the models' own head counts (default on CUDA)")
    ap.add_argument("--official-limit-gb", type=float, default=None,
                    help="run an official formulation only below this (default 2 on CPU, 60 %% of free on CUDA)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    ap.add_argument("--write", action="store_true", help="update docs/BENCHMARKS.md and docs/bench_kernels.png")
    args = ARGS = ap.parse_args(argv)
    comfy_env.bootstrap(cpu=args.device == "cpu")
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    cuda = args.device == "cuda"
    args.dtype = args.dtype or ("bfloat16" if cuda else "float32")
    args.full_heads = args.full_heads or cuda
    if args.official_limit_gb is None:
        args.official_limit_gb = 0.6 * torch.cuda.mem_get_info()[0] / 2 ** 30 if cuda else 2.0
    default = [c.name for c in CASES if args.full_heads or c.cpu_heads]     # CPU: the memory-only case on request
    cases = [c for c in CASES if c.name in (args.cases or default)]
    SIGMAS = torch.linspace(1.0, 0.0, 51)
    meter = Meter(torch.device(args.device))
    header = [f"_torch {torch.__version__}, {args.device}, {torch.get_num_threads()} threads, one batch row; time: "
              f"{args.dtype}, median of {args.repeats} interleaved repeats, at the heads timed; memory: "
              f"{args.memory_dtype}, at the model's heads (attention's arithmetic skipped, everything around it "
              f"measured)_"]
    print("\n".join(header))
    print(HEADER, flush=True)
    rows, t0 = [], time.perf_counter()
    with torch.inference_mode():
        for case in cases:
            for row in run_case(case, args, meter, torch):
                rows.append(row)
                print(format_row(row), flush=True)
    spreads = [r["spread"] for r in rows if "spread" in r]
    noise = (f"largest spread of one kernel's repeated times, (max − min) / median: {max(spreads):.0%}, median "
             f"spread {statistics.median(spreads):.0%}") if spreads else "no timed rows"
    print(f"# {time.perf_counter() - t0:.0f} s; {noise}", flush=True)
    if args.write:
        command = "make bench-kernels" + (f" ARGS='{' '.join(argv or sys.argv[1:])}'" if (argv or sys.argv[1:]) else "")
        write_doc(rows, header + [f"_{noise}_"], command)
        plot(rows, PLOT)
    return rows


ARGS = None

if __name__ == "__main__":
    main()
