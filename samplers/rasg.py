"""HD-Painter RASG: reweighting attention score guidance (Manukyan et al., ICLR 2025; techniques.md §5).

DDIM with η whose random noise is replaced by the normalised gradient of the attention score
    S(x_t) = − Σ_{l∈T} BCE_with_logits(A_l − 1, M)
A_l: cross-attention *logits* of prompt token l at the 16×16-equivalent level (1/4 of the latent size; the
conditional rows, mean over heads and layers), M: the hole at that grid. Step (official `src/methods/rasg.py`):
    x_{t−1} = √ᾱ_{t−1} x̂0 + √(1 − ᾱ_{t−1} − (ησ_t)²) ε̂ + ησ_t · g / std(g),   g = ∇_{x_t} S
with the official code's σ_t (from the per-step α_t, `official_sigma_up`; the DDIM paper's σ_t from ᾱ is the
"ddim" option). In ComfyUI's sigma space this step is an Euler ancestral step with σ_up = ησ_t / √ᾱ_{t−1} and
g/std(g) as its noise; on flow models (SD3, Flux) its rectified-flow
ancestral variant is the DDIM-η analogue. SD3: A_l from the image-query → text-key logits of every joint block
(all at one resolution). Flux: its ComfyUI blocks add to activations in place after saving them for backward, so
autograd runs on copies of the saved activations there.
"""
import contextlib
import math

import torch
import torch.nn.functional as F

import comfy.model_management
import comfy.model_sampling
import comfy.samplers
from comfy.k_diffusion import sampling as kd
from tqdm.auto import trange

from ..attention_patches import painta
from ..attention_patches.core import families, router

WHO = "Sleight · RASG"
PAPER_FACTOR = 4     # res16 at 512 px: latent 64 / 4


class ScoreRecorder:
    """Router effect: keeps the cond rows' image→prompt-token logits of the chosen layers while `on`."""

    order = 35   # after routing / extended attention / key masks, before PAIntA splits the queries (40)

    def __init__(self, target, kind="cross", factor=None):
        self.target = target
        self.kind = kind        # the family's text kind: the calls whose logits A_l are
        self.factor = factor    # the level (latent size / grid) they are taken at; None: every level
        self.on = False         # this recorder is made per sampling run (grad_model), its logits per call
        self.logits = []        # (grid, A (Bc, L, |T|)) per layer, mean over heads

    def applies(self, call):
        if not self.on or "cond" not in call.rows or call.kind != self.kind:
            return False
        return self.factor is None or max(1, round(call.forward.latent_hw[0] / call.grid[0])) == self.factor

    def run(self, call, attend):
        cond = call.rows["cond"]
        tokens = self.target.tokens_in(call)
        q = call.q[cond][:, :, call.img]
        k = call.k[cond][:, :, call.txt][:, :, tokens]
        a = (q.float() @ k.float().transpose(-1, -2)) * q.shape[-1] ** -0.5     # (Bc, H, L, |T|)
        self.logits.append((tuple(call.grid), a.mean(dim=1)))
        return attend(call)

    def objective(self):
        """S = −Σ_l BCE_with_logits(A_l − 1, M) (mean over pixels), A averaged over the recorded layers."""
        if not self.logits:
            return None
        grid = self.logits[0][0]
        a = torch.stack([t for g, t in self.logits if g == grid]).mean(dim=0)   # (Bc, L, |T|)
        m = self.target.hole(grid, a.device).float()[None, :, None].expand_as(a)
        per_token = F.binary_cross_entropy_with_logits(a - 1.0, m, reduction="none").mean(dim=1)   # (Bc, |T|)
        return -per_token.sum()


def score_factor(family, dm, latent_hw) -> int:
    """The text-attention level closest to 1/4 of the latent size (the paper's 16×16 at 512 px); a family whose
    text attention runs at one level (a DiT's joint blocks) takes that one, i.e. every layer."""
    layers = family.layers(dm, latent_hw)
    factors = sorted({max(1, round(latent_hw[0] / layer.grid[0])) for layer in layers if layer.kind == family.text_kind})
    if not factors:
        raise ValueError(f"{WHO}: this model has no text-attention layers.")
    return min(factors, key=lambda f: (abs(math.log2(f) - math.log2(PAPER_FACTOR)), -f))


def normalised(g: torch.Tensor) -> torch.Tensor:
    """g / std(g) per image; an all-zero gradient stays zero (then the step is DDIM-η with zero noise)."""
    dims = tuple(range(1, g.ndim))
    std = g.float().std(dim=dims, keepdim=True) if g[0].numel() > 1 else torch.zeros_like(g)
    return torch.where(std > 0, g / std.clamp_min(1e-30).to(g.dtype), torch.zeros_like(g))


@contextlib.contextmanager
def _trainable_weights(module):
    """Weights created under inference_mode (the server loads models there) cannot be saved for backward:
    swap them for ordinary clones while RASG runs, and put the originals back afterwards."""
    swapped = []
    with torch.inference_mode(False):
        for mod in module.modules():
            for name, p in list(mod._parameters.items()):
                if p is not None and p.is_inference():
                    swapped.append((mod, name, p))
                    mod._parameters[name] = torch.nn.Parameter(p.clone(), requires_grad=False)
    try:
        yield
    finally:
        for mod, name, p in swapped:
            mod._parameters[name] = p


class _GradModel:
    """The sampler's model, evaluated with gradients; the normalised ∇S of the last call is kept as `noise`."""

    def __init__(self, model, recorder, copy_saved_activations=False):
        self.copy_saved = copy_saved_activations
        self.model = model
        self.inner_model = model.inner_model
        self.recorder = recorder
        self.noise = None
        self.grad = None        # ∇S of the last call, before normalising

    def score(self, x, sigma, **kwargs):
        """S at x, without gradients (tests compare ∇S with finite differences of this)."""
        self.recorder.logits.clear()
        self.recorder.on = True
        try:
            self.model(x, sigma, **kwargs)
            score = self.recorder.objective()
        finally:
            self.recorder.on = False
            self.recorder.logits.clear()
        return score

    def __call__(self, x, sigma, **kwargs):
        comfy.model_management.throw_exception_if_processing_interrupted()
        saved = (torch.autograd.graph.saved_tensors_hooks(lambda t: t.clone() if t.requires_grad else t, lambda t: t)
                 if self.copy_saved else contextlib.nullcontext())
        with torch.inference_mode(False), torch.enable_grad(), saved:
            xg = x.detach().clone().requires_grad_(True)
            # the server samples under inference_mode: its tensors (e.g. the inpainting denoise_mask that
            # multiplies x) cannot be saved for backward, ordinary clones can
            kwargs = {k: v.clone() if torch.is_tensor(v) and v.is_inference() else v for k, v in kwargs.items()}
            self.recorder.logits.clear()
            self.recorder.on = True
            try:
                denoised = self.model(xg, sigma, **kwargs)
                score = self.recorder.objective()
            finally:
                self.recorder.on = False
            if score is not None and score.requires_grad:
                g = torch.autograd.grad(score, xg)[0]
            else:
                g = torch.zeros_like(xg)
            self.recorder.logits.clear()
        self.grad = g.detach()
        self.noise = normalised(self.grad).to(x)
        return denoised.detach()


@contextlib.contextmanager
def grad_model(model, x, extra_args, objective_scale=1.0):
    """The sampler's model wrapped to return ∇S with each prediction (extra_args' model_options get the recorder)."""
    model_options = extra_args.setdefault("model_options", {})
    to = model_options.setdefault("transformer_options", {})
    target = to.get(painta.TARGET_KEY)
    if target is None:
        raise ValueError(f"{WHO}: the model carries no hole mask and prompt. Connect the model through "
                         "Sleight · PAIntA (set its end_percent to 0 for RASG alone).")
    base = model.inner_model.inner_model
    family = families.detect(base, WHO)
    family.require("rasg", WHO)
    recorder = ScoreRecorder(target, family.text_kind, score_factor(family, base.diffusion_model, tuple(x.shape[-2:])))
    if objective_scale == 0.0:
        recorder.objective = lambda: None       # tests: zero objective
    router.install_into(model_options, family, recorder)   # this run's options are a copy: nothing leaks
    # Some families' blocks add to their activations in place (Flux: img += ...) after saving them for backward:
    # keep copies of the saved activations there (weights, which need no gradient, are not copied)
    with _trainable_weights(base.diffusion_model):
        yield _GradModel(model, recorder, copy_saved_activations=family.inplace_activations)


NOISE_SCALES = ("official", "ddim")   # σ_t of the guidance noise: HD-Painter's code, or the standard DDIM one


def official_sigma_up(model_sampling, sigma, sigma_next, eta) -> float:
    """HD-Painter's guidance scale at one step, in ComfyUI's σ space (x = z / √ᾱ).

    Official (src/smplfusion/scheduler.py, `Schedule.sigma`): σ_t = √((1 − α_{t−dt}) / (1 − α_t) · (1 − α_t /
    α_{t−dt})) with the *per-step* α_t = 1 − β_t, not the cumulative ᾱ of the DDIM paper; the step is
    z_{t−dt} = √ᾱ_{t−dt}·ẑ0 + √(1 − ᾱ_{t−dt} − (ησ_t)²)·ε̂ + ησ_t·g/std(g). In σ space that is an Euler ancestral
    step with σ_up = ησ_t/√ᾱ_{t−dt}. ᾱ comes from the model's own σ table (ᾱ = 1/(1 + σ²)), so any discrete
    schedule works; the training timesteps from its `timestep(σ)`. The last step (σ_next = 0) adds none."""
    s_next = float(sigma_next)
    if s_next <= 0 or eta == 0:
        return 0.0
    table = model_sampling.sigmas.detach().double().cpu()
    acp = 1.0 / (1.0 + table ** 2)                                  # ᾱ_t
    alpha = acp / torch.cat([acp.new_ones(1), acp[:-1]])            # α_t = ᾱ_t / ᾱ_{t−1} = 1 − β_t
    t, t_next = (int(model_sampling.timestep(torch.tensor([float(v)])).item()) for v in (sigma, sigma_next))
    ratio = float(alpha[t] / alpha[t_next])
    s = math.sqrt(max((1 - float(alpha[t_next])) / (1 - float(alpha[t])) * (1 - ratio), 0.0))
    return min(s_next, float(eta) * s / math.sqrt(float(acp[t_next])))


def _official_loop(gm, model_sampling, x, sigmas, extra_args, callback, disable, eta):
    """ComfyUI's Euler ancestral loop with HD-Painter's σ_up and ∇S/std(∇S) as its noise."""
    s_in = x.new_ones([x.shape[0]])
    for i in trange(len(sigmas) - 1, disable=disable):
        denoised = gm(x, sigmas[i] * s_in, **extra_args)
        sigma_up = official_sigma_up(model_sampling, sigmas[i], sigmas[i + 1], eta)
        sigma_down = (float(sigmas[i + 1]) ** 2 - sigma_up ** 2) ** 0.5
        if callback is not None:
            callback({"x": x, "i": i, "sigma": sigmas[i], "sigma_hat": sigmas[i], "denoised": denoised})
        if sigma_down == 0:
            x = denoised
        else:
            x = x + kd.to_d(x, sigmas[i], denoised) * (sigma_down - sigmas[i]) + gm.noise * sigma_up
    return x


def sample_rasg(model, x, sigmas, extra_args=None, callback=None, disable=None, eta=0.1, objective_scale=1.0,
                noise="official"):
    """KSAMPLER function: DDIM-η with ∇S/std(∇S) as its noise. ε / v models: `noise` "official" scales it as
    HD-Painter's code does (`official_sigma_up`), "ddim" as the DDIM paper (ComfyUI's euler_ancestral, σ_t from
    the cumulative ᾱ: 10–25× more on SD1.5's schedule). Flow models: ComfyUI's rectified-flow ancestral step,
    the DDIM-η analogue (HD-Painter has no flow code)."""
    if noise not in NOISE_SCALES:
        raise ValueError(f"{WHO}: noise must be one of {NOISE_SCALES}, got {noise!r}")
    extra_args = {} if extra_args is None else extra_args
    ms = model.inner_model.inner_model.model_sampling
    with grad_model(model, x, extra_args, objective_scale) as gm:
        if noise == "official" and not isinstance(ms, comfy.model_sampling.CONST):
            return _official_loop(gm, ms, x, sigmas, extra_args, callback, disable, eta)
        return kd.sample_euler_ancestral(gm, x, sigmas, extra_args=extra_args, callback=callback, disable=disable,
                                         eta=eta, s_noise=1.0, noise_sampler=lambda s, sn: gm.noise)


def ksampler(eta=0.1, objective_scale=1.0, noise="official"):
    return comfy.samplers.KSAMPLER(sample_rasg, extra_options={"eta": eta, "objective_scale": objective_scale,
                                                               "noise": noise})
