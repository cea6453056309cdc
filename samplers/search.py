"""Inference-time search over sampling noises (Ma et al. 2025, arXiv 2501.09732; techniques.md §7).

Three algorithms, all with ComfyUI's own sampling (the user's SAMPLER and SIGMAS, a CFGGuider):
- random: N initial noises, seeds seed, seed+1, ...; candidate i is exactly what a sampler with seed+i makes.
- zero_order: neighbours of a pivot noise on the sphere at cosine lambda with the pivot's norm kept
  (tt-scale-flux `generate_neighbors`); move to the best neighbour if it beats the pivot, else a fresh pivot.
- paths: N paths to an intermediate step, M branches each re-noised forward by renoise_steps and denoised by
  denoise_steps, the best N kept by the verifier on the predicted x0, repeated to the end.
Candidates run in batches; a running pool keeps only the top-k latents (all of them with several verifiers,
whose rank average needs the whole field); one progress bar over the whole search; interruptible; the same
seed gives the same search.
"""
import math
from dataclasses import dataclass

import torch

import comfy.model_management
import comfy.sample
import comfy.samplers
import comfy.utils

from ..attention_patches.core import comfy_compat
from . import verifiers as V

MODES = ("random", "zero_order", "paths")


@dataclass(frozen=True)
class SearchSettings:
    mode: str = "random"
    budget: int = 4                  # random / zero_order: candidates sampled; paths: N paths
    batch_size: int = 4
    top_k: int = 4
    early_percent: float = 0.4       # where the self-consistency x0 is taken (ComfyUI percent)
    cosine: float = 0.95             # zero-order neighbourhood (tt-scale-flux threshold)
    neighbours: int = 4              # zero-order neighbours per round (tt-scale-flux default)
    branches: int = 2                # paths: M
    branch_start_percent: float = 0.5
    renoise_steps: int = 1           # paths: Δf, in steps of the schedule
    denoise_steps: int = 2           # paths: Δb, in steps of the schedule

    def check(self):
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if min(self.budget, self.batch_size, self.top_k, self.branches) < 1:
            raise ValueError("budget, batch_size, top_k and branches must be at least 1")
        if not -1.0 < self.cosine < 1.0:
            raise ValueError(f"cosine must lie strictly between -1 and 1, got {self.cosine}")
        if self.mode == "paths" and self.denoise_steps <= self.renoise_steps:
            raise ValueError(f"denoise_steps ({self.denoise_steps}) must exceed renoise_steps ({self.renoise_steps}), "
                             "or the paths never reach the end")


# ---------------------------------------------------------------- pure pieces (tested against formulas)

def sphere_neighbours(pivot, count: int, cosine: float, generator):
    """`count` noises at cosine `cosine` to `pivot` with its norm: x' = |x|(λu + √(1−λ²)w), w ⟂ u random unit
    (tt-scale-flux utils.generate_neighbors). `pivot` is (1, ...); returns (count, ...) in pivot's dtype."""
    flat = pivot.reshape(1, -1).double().cpu()
    norm = flat.norm()
    u = flat / norm
    g = torch.randn((count, flat.shape[1]), generator=generator, dtype=torch.float64)
    w = g - (g @ u.T) * u
    w = w / w.norm(dim=1, keepdim=True)
    x = norm * (cosine * u + math.sqrt(1.0 - cosine * cosine) * w)
    return x.to(pivot.dtype).reshape(count, *pivot.shape[1:])


def signal_noise(model_sampling, sigma):
    """(alpha, s) with x_sigma = alpha·x0 + s·noise for this model's noise_scaling (EPS: 1, σ; flow: 1−σ, σ)."""
    s = torch.tensor([float(sigma)], dtype=torch.float64)
    one, zero = torch.ones(1, 1, dtype=torch.float64), torch.zeros(1, 1, dtype=torch.float64)
    return float(model_sampling.noise_scaling(s, zero, one)), float(model_sampling.noise_scaling(s, one, zero))


def renoise(model_sampling, x, sigma_from, sigma_to, noise):
    """Forward-noise x from sigma_from to a higher sigma_to with fresh `noise` (the forward process marginal):
    x_to = (α_to/α_from)·x + √(s_to² − (α_to/α_from)²·s_from²)·ε."""
    a_f, s_f = signal_noise(model_sampling, sigma_from)
    a_t, s_t = signal_noise(model_sampling, sigma_to)
    r = a_t / a_f
    return x * r + noise.to(x) * math.sqrt(max(s_t * s_t - r * r * s_f * s_f, 0.0))


def first_step_at(model_sampling, sigmas, percent: float) -> int:
    """The first step i (0..len-2) whose sigma is at or below percent_to_sigma(percent); the last step if none."""
    target = float(model_sampling.percent_to_sigma(percent))
    for i, s in enumerate(sigmas[:-1].tolist()):
        if s <= target * (1 + 1e-5) + 1e-8:
            return i
    return len(sigmas) - 2


def chunks(n: int, size: int):
    return [range(i, min(i + size, n)) for i in range(0, n, size)]


def order(scores) -> list[int]:
    """Indices best first; ties keep evaluation order (so a search is reproducible)."""
    return sorted(range(len(scores)), key=lambda i: (-float(scores[i]), i))


# ---------------------------------------------------------------- the candidate pool

class Pool:
    """Every candidate's scores and where it came from; latents (and noises) only of those that can still win."""

    def __init__(self, names, top_k: int):
        self.names, self.top_k = list(names), top_k
        self.records, self.raw, self.kept = [], [], {}
        self.keep_all = len(self.names) > 1       # the rank average can reorder old candidates

    def combined(self):
        return V.rank_average(self.raw).tolist() if self.raw else []

    def add(self, latents, noises, raw, metas):
        ids = []
        for j, meta in enumerate(metas):
            cid = len(self.records)
            self.records.append({"id": cid, **meta})
            self.raw.append([float(v) for v in raw[j]])
            self.kept[cid] = (latents[j:j + 1].cpu(), noises[j:j + 1].cpu())
            ids.append(cid)
        if not self.keep_all:
            keep = set(self.best_ids())
            self.kept = {i: v for i, v in self.kept.items() if i in keep}
        return ids

    def best_ids(self):
        score = self.combined()
        return [i for i in order(score) if i in self.kept][:self.top_k]

    def summary(self):
        score = self.combined()
        rows = []
        for r, raw in zip(self.records, self.raw):
            rows.append({**r, "score": score[r["id"]], "scores": dict(zip(self.names, raw))})
        return rows


@dataclass
class SearchResult:
    top: torch.Tensor          # (k, ...) latents, best first, output latent space
    noises: torch.Tensor       # (k, ...) the initial noise of each (paths: the path's starting noise)
    report: dict               # JSON-ready


class NoiseSearch:
    """One search. `verifiers`: callables on `verifiers.Candidates`; `decode`: latents -> IMAGE or None."""

    def __init__(self, model, positive, negative, cfg, sampler, sigmas, latent, seed, settings: SearchSettings,
                 verifiers, decode=None, noise_mask=None):
        settings.check()
        if latent.shape[0] != 1:
            raise ValueError(f"the search makes one image: the latent has a batch of {latent.shape[0]}")
        if len(sigmas) < 2:
            raise ValueError("the sigmas have no step to sample")
        self.model, self.positive, self.negative, self.cfg = model, positive, negative, cfg
        self.sampler, self.sigmas, self.latent, self.seed = sampler, sigmas, latent, int(seed)
        self.s, self.verifiers, self.decode, self.noise_mask = settings, list(verifiers), decode, noise_mask
        self.ms = model.get_model_object("model_sampling")
        self.K = len(sigmas) - 1
        self.early_step = first_step_at(self.ms, sigmas, settings.early_percent)
        self.pool = Pool([v.name for v in self.verifiers], settings.top_k)
        self.model_steps = 0
        self.pbar = None

    # -------------------------------------------------------- shared
    def noise(self, seed):
        return comfy.sample.prepare_noise(self.latent, seed % 2 ** 64)    # seeds past the widget's max wrap

    def tick(self, rows):
        """One sampler step done for `rows` candidates (the progress bar counts candidate-steps)."""
        comfy.model_management.throw_exception_if_processing_interrupted()
        self.model_steps += rows
        self.pbar.update(rows)

    def score(self, final, early):
        """(B, V) raw scores; final / early in output latent space."""
        c = V.Candidates(final, early if early is not None else final, self.decode)
        return torch.stack([v(c).double().reshape(-1) for v in self.verifiers], 1)

    def run(self) -> SearchResult:
        self.pbar = comfy.utils.ProgressBar(self.total_ticks())
        if self.s.mode == "paths":
            top = self.run_paths()
        else:
            (self.run_random if self.s.mode == "random" else self.run_zero_order)()
            top = None
        ids = self.pool.best_ids()
        if top is None:
            top = torch.cat([self.pool.kept[i][0] for i in ids])
        noises = torch.cat([self.pool.kept[i][1] for i in ids])
        summary = self.pool.summary()
        report = {"mode": self.s.mode, "verifiers": self.pool.names,
                  "score": "rank average" if self.pool.keep_all else self.pool.names[0],
                  "top": [summary[i] for i in ids], "candidates": summary, "model_steps": self.model_steps,
                  "early_step": self.early_step, "steps": self.K}
        best = summary[ids[0]]
        if best.get("seed") is not None:
            report["best_seed"] = best["seed"]
        return SearchResult(top, noises, report)

    def total_ticks(self):
        s, n = self.s, self.s.budget
        if s.mode != "paths":
            return n * self.K
        ticks, k = n * self.k0(), self.k0()
        while k < self.K:
            lo = max(k - s.renoise_steps, 0)
            hi = min(lo + s.denoise_steps, self.K)
            ticks += n * s.branches * (hi - lo)
            k = hi
        return ticks

    # -------------------------------------------------------- random and zero-order: whole sampling runs
    def sample_full(self, noise, seed):
        """Sample a batch of noises to the end with the user's sampler; returns (final, early x0) latents."""
        b = noise.shape[0]
        latent = self.latent.repeat(b, *([1] * (self.latent.ndim - 1)))
        seen = {}

        def callback(step, x0, x, total):
            if step <= self.early_step:
                seen["early"] = x0.detach().clone()
            self.tick(b)

        final = comfy.sample.sample_custom(self.model, noise, self.cfg, self.sampler, self.sigmas, self.positive,
                                           self.negative, latent, noise_mask=self.noise_mask, callback=callback,
                                           disable_pbar=True, seed=seed)
        early = seen.get("early")
        if early is not None:
            early = self.model.model.process_latent_out(early.cpu().float())
        return final.cpu().float(), early

    def evaluate(self, noises, metas, seed):
        """Sample and score noises in batches; returns their pool ids."""
        ids = []
        for chunk in chunks(len(metas), self.s.batch_size):
            batch = noises[chunk.start:chunk.stop]
            final, early = self.sample_full(batch, seed + chunk.start)
            raw = self.score(final, early)
            ids += self.pool.add(final, batch, raw, metas[chunk.start:chunk.stop])
        return ids

    def run_random(self):
        n = self.s.budget
        noises = torch.cat([self.noise(self.seed + i) for i in range(n)])
        self.evaluate(noises, [{"seed": self.seed + i, "round": 0, "parent": None} for i in range(n)], self.seed)

    def run_zero_order(self):
        s, used, next_seed, rnd = self.s, 0, self.seed, 0
        pivot_id = pivot_noise = None
        while used < s.budget:
            noises, metas = [], []
            if pivot_id is None:                       # a fresh pivot: the next seed
                pivot_noise = self.noise(next_seed)
                noises.append(pivot_noise)
                metas.append({"seed": next_seed, "round": rnd, "parent": None})
                next_seed += 1
            k = min(s.neighbours, s.budget - used - len(noises))
            if k > 0:
                gen = torch.Generator().manual_seed((self.seed * 1_000_003 + rnd + 1) % (2 ** 63))
                noises.append(sphere_neighbours(pivot_noise, k, s.cosine, gen))
                parent = pivot_id if pivot_id is not None else len(self.pool.records)
                metas += [{"seed": None, "round": rnd, "parent": parent} for _ in range(k)]
            batch = torch.cat(noises)
            ids = self.evaluate(batch, metas, metas[0]["seed"] if metas[0]["seed"] is not None else self.seed + rnd)
            used += len(metas)
            rows = dict(zip(ids, range(len(ids))))
            if pivot_id is None:
                pivot_id, ids = ids[0], ids[1:]
            score = self.pool.combined()
            best = max(ids, key=lambda i: (score[i], -i)) if ids else None
            if best is not None and score[best] > score[pivot_id]:
                pivot_id, pivot_noise = best, batch[rows[best]:rows[best] + 1]
            else:
                pivot_id = None                        # no neighbour improves: a fresh pivot (YRIKKA's choice)
            rnd += 1

    # -------------------------------------------------------- search over paths: inside one sampling run
    def k0(self):
        return max(1, first_step_at(self.ms, self.sigmas, self.s.branch_start_percent)) if self.K > 1 else 1

    def run_paths(self):
        if comfy_compat.sampler_function(self.sampler) is None:
            raise ValueError("search over paths needs a k-diffusion sampler (KSamplerSelect and friends), "
                             f"got {type(self.sampler).__name__}")
        if any(v.needs_early for v in self.verifiers) and self.k0() < self.early_step:
            raise ValueError(f"with self-consistency the first branching (step {self.k0()}) must come at or after the "
                             f"early x0 (step {self.early_step}): raise branch_start_percent or lower early_percent")
        noise = self.noise(self.seed)
        top = comfy.samplers.sample(self.model, noise, self.positive, self.negative, self.cfg, self.model.load_device,
                                    _PathSampler(self), self.sigmas, model_options=self.model.model_options,
                                    latent_image=self.latent, denoise_mask=self.noise_mask, disable_pbar=True,
                                    seed=self.seed)
        return top.to(comfy.model_management.intermediate_device()).float().cpu()

    def paths(self, model_wrap, sigmas, extra_args, noise, latent_image, denoise_mask):
        s, inner, K = self.s, self.sampler, self.K
        ms = model_wrap.inner_model.model_sampling
        out_space = model_wrap.inner_model.process_latent_out
        n = s.budget
        roots = torch.cat([noise] + [self.noise(self.seed + i).to(noise) for i in range(1, n)])
        x = comfy_compat.start_state(inner, model_wrap, sigmas, roots, latent_image)
        root_of = list(range(n))

        def segment(x, lo, hi, early):
            outs, x0s, earlies = [], [], []
            for chunk in chunks(x.shape[0], s.batch_size):
                rows = list(chunk)
                seen = {}

                def callback(d, b=len(rows)):
                    seen["x0"] = d["denoised"]
                    if lo + d["i"] <= self.early_step:
                        seen["early"] = d["denoised"].detach().clone()
                    self.tick(b)

                outs.append(comfy_compat.run_steps(inner, model_wrap, sigmas[lo:hi + 1], x[rows], extra_args, callback,
                                                   roots[[root_of[r] for r in rows]], latent_image, denoise_mask,
                                                   schedule=sigmas))
                x0s.append(seen["x0"])
                got = seen.get("early")
                earlies.append(early[rows] if early is not None else got)
            e = None if any(v is None for v in earlies) else torch.cat(earlies)
            return torch.cat(outs), torch.cat(x0s), e

        k = self.k0()
        x, x0, early = segment(x, 0, k, None)
        gen = torch.Generator().manual_seed(self.seed % (2 ** 63))
        rnd = 0
        while k < K:
            x = x.repeat_interleave(s.branches, 0)
            early = None if early is None else early.repeat_interleave(s.branches, 0)
            root_of = [r for r in root_of for _ in range(s.branches)]
            lo = max(k - s.renoise_steps, 0)
            if lo < k:
                eps = torch.randn(x.shape, generator=gen, dtype=torch.float32)
                x = renoise(ms, x, sigmas[k], sigmas[lo], eps)
            hi = min(lo + s.denoise_steps, K)
            x, x0, early = segment(x, lo, hi, early)
            rnd += 1
            if hi == K:
                k = hi
                break
            raw = self.score(out_space(x0.float()).cpu(), None if early is None else out_space(early.float()).cpu())
            keep = order(V.rank_average(raw).tolist())[:n]
            x, x0 = x[keep], x0[keep]
            early = None if early is None else early[keep]
            root_of = [root_of[i] for i in keep]
            k = hi
        final = ms.inverse_noise_scaling(sigmas[-1], x)
        raw = self.score(out_space(final.float()).cpu(), None if early is None else out_space(early.float()).cpu())
        metas = [{"seed": self.seed + r, "round": rnd, "parent": None, "path": r} for r in root_of]
        self.pool.add(final, roots[root_of], raw, metas)
        return torch.cat([self.pool.kept[i][0] for i in self.pool.best_ids()]).to(x)


class _PathSampler(comfy.samplers.Sampler):
    """Runs the whole search over paths inside one CFGGuider.sample call (conds prepared once, x-space kept)."""

    def __init__(self, search):
        self.search = search

    def sample(self, model_wrap, sigmas, extra_args, callback, noise, latent_image=None, denoise_mask=None,
               disable_pbar=False):
        return self.search.paths(model_wrap, sigmas, extra_args, noise, latent_image, denoise_mask)
