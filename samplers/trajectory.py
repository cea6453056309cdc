"""Side passes: extra model evaluations run in lockstep with the sampler, one per model call.

A trick that needs activations from another prompt or another latent at the *same* step (DiT prompt routing,
Add-it's source trajectory) registers a side conditioning under its own key. ComfyUI's own `process_conds`
prepares it with the real ones (pooled outputs, per-architecture extra conds), because an OUTER_SAMPLE wrapper
puts it into `guider.conds` before sampling starts. A PREDICT_NOISE wrapper then runs `calc_cond_batch` on it
before the normal prediction; the router sees those rows with the side key as their role, so an effect can
record there and inject into the cond rows of the main pass. Everything a side pass keeps lives in the run's
RunState (attention_patches/core/runstate.py), so it ends with the run.
"""
import torch

import comfy.sampler_helpers
import comfy.samplers

from ..attention_patches.core import hooks, router, runstate, schedule


def add_side_conditioning(model, key: str, conditioning, before_predict=None, on_start=None, after_run=None):
    """Sample `model` with `conditioning` as guider conds[key]; `before_predict(run, x, sigma, model_options)`
    runs before every normal prediction (it may call `run_side`); `on_start(run)` when a run starts and
    `after_run(run)` when it ends, also on interrupt (`run`: the RunState). Both wrappers are keyed by `key`."""

    def start(run):
        run.guider.conds[key] = comfy.sampler_helpers.convert_cond(conditioning)
        if on_start is not None:
            on_start(run)

    def end(run):
        run.guider.conds.pop(key, None)
        if after_run is not None:
            after_run(run)

    hooks.on_run(model, key, start, end)
    if before_predict is None:
        return

    def predict_noise(executor, x, timestep, model_options={}, seed=None):
        before_predict(runstate.of(model_options), x, timestep, model_options)
        return executor(x, timestep, model_options, seed)

    hooks.replace_wrapper(model, hooks.WRAPPERS.PREDICT_NOISE, key, predict_noise)


def add_batched_side(model, key: str, conditioning, wanted, missed, after_run=None):
    """Like add_side_conditioning, but the side rows join the main rows' model forward instead of a forward of
    their own: at each prediction where `wanted(run, timestep)`, guider conds[key] is appended (last) to the
    first calc_cond_batch call and its output dropped. ComfyUI batches same-shaped conds into one forward, so
    the side costs extra rows, not an extra forward; appended last, it keeps cond_or_uncond's 0/1 meaning and
    runs in the first forward if ComfyUI splits the batch for memory (it batches from the end of the list).

    Exact in every case, through two fallbacks: `missed(run)` (which also resets it) says main rows ran without
    the side's data in this calc_cond_batch (a split that put them first): they are evaluated again; and if
    nothing consumed the side (a custom sampler_calc_cond_batch_function that bypasses calc_cond_batch), the
    side runs alone and the prediction is redone."""
    add_side_conditioning(model, key, conditioning, after_run=after_run)
    owner = object()                     # this side's slot in each run's state

    def pending(run):
        return run.slot(owner, list) if run is not None else []

    def predict_noise(executor, x, timestep, model_options={}, seed=None):
        run = runstate.of(model_options)
        todo = pending(run)
        todo[:] = [run.guider.conds[key]] if run is not None and wanted(run, timestep) else []
        out = executor(x, timestep, model_options, seed)
        if todo:
            run_side(run.guider, key, x, timestep, model_options)
            todo.clear()
            missed(run)
            out = executor(x, timestep, model_options, seed)
        return out

    def calc_cond_batch(executor, model_, conds, x_in, timestep, model_options):
        run = runstate.of(model_options)
        todo = pending(run)
        if not todo:
            return executor(model_, conds, x_in, timestep, model_options)
        out = executor(model_, list(conds) + [todo.pop()], x_in, timestep, model_options)[:len(conds)]
        if missed(run):
            out = executor(model_, conds, x_in, timestep, model_options)
        return out

    hooks.replace_wrapper(model, hooks.WRAPPERS.PREDICT_NOISE, key, predict_noise)
    hooks.replace_wrapper(model, hooks.WRAPPERS.CALC_COND_BATCH, key, calc_cond_batch)


def run_side(guider, key: str, x, timestep, model_options):
    """One model evaluation of the side conditioning at this step (its x0 prediction is returned)."""
    return comfy.samplers.calc_cond_batch(guider.inner_model, [guider.conds[key]], x, timestep, model_options)[0]


def in_window(guider, window: schedule.Window, timestep) -> bool:
    return window.contains(guider.inner_model.model_sampling, timestep)


# ---------------------------------------------------------------- source trajectories (Add-it, DesignEdit)

TRAJECTORY_TYPE = "SLEIGHT_TRAJECTORY"  # the ComfyUI socket type carrying a SourceTrajectory


class SourceTrajectory:
    """A source image's path through a schedule, for a source row run in lockstep with the target.

    Two kinds, one interface (`at(model_sampling, sigma)` -> the model-space noisy source latent there):
    - re-noised: a clean latent x0 and one fixed noise, x_sigma = model_sampling.noise_scaling(sigma, noise, x0)
      (Add-it's generated-image mode; DesignEdit with a clean source);
    - inverted: the latents an inversion recorded at each of its sigmas, kept on the CPU.
    Latents are in model space (latent_format.process_in applied), shape (1, C, H, W) [or (1, C, T, H, W)].
    `conditioning` is the source prompt's CONDITIONING (the source row is sampled with it).
    """

    def __init__(self, clean, conditioning, noise=None, sigmas=None, latents=None):
        if (noise is None) == (latents is None):
            raise ValueError("SourceTrajectory: give either a fixed noise (re-noised) or recorded latents (inverted)")
        self.clean = clean.cpu()
        self.conditioning = conditioning
        self.noise = None if noise is None else noise.cpu()
        self.sigmas = None if sigmas is None else sigmas.float().cpu()
        self.latents = None if latents is None else [x.cpu() for x in latents]
        if self.latents is not None and len(self.latents) != len(self.sigmas):
            raise ValueError("SourceTrajectory: one recorded latent per sigma")

    @property
    def inverted(self) -> bool:
        return self.latents is not None

    def at(self, model_sampling, sigma, device=None, dtype=None, between: bool = False):
        """The source latent at `sigma` (a float or 0-d/1-d tensor). Inverted trajectories answer at the sigmas
        they recorded (to 1e-4 relative): sample with the same schedule that inverted them. With `between`, a
        sigma strictly inside the recorded range (the extra evaluations of Heun / DPM-2 …) gets the linear
        interpolation of its two neighbours; outside the range it is still an error."""
        sigma = float(sigma.reshape(-1)[0]) if hasattr(sigma, "reshape") else float(sigma)
        if self.inverted:
            i = int(torch.argmin((self.sigmas - sigma).abs()))
            if abs(float(self.sigmas[i]) - sigma) <= 1e-4 * max(sigma, 1e-3):
                x = self.latents[i]
            elif between and float(self.sigmas.min()) < sigma < float(self.sigmas.max()):
                hi = int((self.sigmas >= sigma).nonzero().max())     # sigmas descend: last index still above
                lo = hi + 1
                t = (float(self.sigmas[hi]) - sigma) / (float(self.sigmas[hi]) - float(self.sigmas[lo]))
                x = torch.lerp(self.latents[hi], self.latents[lo], t)
            else:
                raise ValueError(f"the inverted trajectory has no latent at sigma {sigma:.4g}: sample with the "
                                 "same steps, scheduler and denoise as the inversion")
        else:
            s = torch.tensor([sigma], dtype=torch.float32)
            x = model_sampling.noise_scaling(s, self.noise, self.clean)
        return x.to(device=device, dtype=dtype or x.dtype)


# ---------------------------------------------------------------- the lockstep source row

SOURCE_ROLE = router.SOURCE_ROLE   # guider conds key of the source row, and the router role of its batch rows


class SourceRun:
    """What a source-row hook knows about the running sample: the guider, the target's own initial noise
    (Add-it's structure transfer re-noises with it), the schedule, and which steps' latent surgery is done."""

    def __init__(self, run: runstate.RunState, trajectory):
        self.state = run
        self.guider = run.guider
        self.noise = run.noise
        self.sigmas = run.sigmas.detach().float().cpu()
        self.trajectory = trajectory
        self.done = set()

    @property
    def model_sampling(self):
        return self.guider.inner_model.model_sampling

    def step_of(self, timestep):
        """(step index, True when this is the step's first evaluation at exactly sample sigma[i])."""
        i = schedule.step_index(self.sigmas, timestep)
        exact = abs(float(self.sigmas[i]) - schedule.as_float(timestep)) <= 1e-5 * max(1.0, float(self.sigmas[i]))
        return i, exact

    def source_at(self, timestep, like):
        return self.trajectory.at(self.model_sampling, timestep, device=like.device, dtype=like.dtype, between=True)


def add_source_row(model, trajectory: SourceTrajectory, active=None, before_source=None,
                   key: str = SOURCE_ROLE, who: str = "Sleight", after_source=None, after_run=None):
    """Run `trajectory`'s source row in lockstep with the target, on `model` (a clone the caller owns).

    Before every target prediction: `before_source(run, x, timestep)` if given (latent surgery on the target: it
    may change x in place), then, when `active(run, timestep)` is true (default: always), one forward of the
    source conditioning on the source latent at this sigma. Its batch rows carry the role `key`, so a router
    effect records its K/V there (in its per-run state) and injects into the target's rows right after;
    `after_source(run, x, timestep, model_options)` then runs if given, active or not (Add-it's auto γ probes the target
    there); `after_run(run)` when sampling ends or is interrupted. `run` is this run's SourceRun.

    Why a pre-pass and not the same forward: `calc_cond_batch` evaluates every cond on one shared x, and the
    source row needs its own latent; batching both means rebuilding each model's extra conds (y, guidance,
    ref latents …) by hand, which breaks across models and versions (comfyui-internals §3.5 option B).
    """

    owner = object()                     # this source row's slot in each run's state

    def source_run(run) -> SourceRun:
        return run.slot(owner, lambda: SourceRun(run, trajectory))

    def on_start(run):
        tgt, src = tuple(run.noise.shape[2:]), tuple(trajectory.clean.shape[2:])
        if tgt != src:
            raise ValueError(f"{who}: the source latent is {_size(src)} but this sampler's latent is {_size(tgt)}; "
                             "make the empty latent the size of the source image.")
        if run.noise.shape[1] != trajectory.clean.shape[1]:
            raise ValueError(f"{who}: the source latent has {trajectory.clean.shape[1]} channels but the model "
                             f"samples {run.noise.shape[1]}; make the source trajectory with this model.")
        source_run(run)

    def before_predict(run, x, timestep, model_options):
        src_run = source_run(run)
        if before_source is not None:
            before_source(src_run, x, timestep)
        if active is None or active(src_run, timestep):
            x_src = src_run.source_at(timestep, x)
            run_side(run.guider, key, x_src, timestep[:1], model_options)
        if after_source is not None:
            after_source(src_run, x, timestep, model_options)

    def end(run):
        if after_run is not None:
            after_run(source_run(run))

    add_side_conditioning(model, key, trajectory.conditioning, before_predict, on_start, end)


def _size(hw):
    return "x".join(str(int(v)) for v in hw) + " (latent)"
