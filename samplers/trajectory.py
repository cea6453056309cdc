"""Side passes: extra model evaluations run in lockstep with the sampler, one per model call.

A trick that needs activations from another prompt or another latent at the *same* step (DiT prompt routing,
Add-it's source trajectory) registers a side conditioning under its own key. ComfyUI's own `process_conds`
prepares it with the real ones (pooled outputs, per-architecture extra conds), because an OUTER_SAMPLE wrapper
puts it into `guider.conds` before sampling starts. A PREDICT_NOISE wrapper then runs `calc_cond_batch` on it
before the normal prediction; the router sees those rows with the side key as their role, so an effect can
record there and inject into the cond rows of the main pass.
"""
import comfy.patcher_extension as pe
import comfy.sampler_helpers
import comfy.samplers

from . import schedule


def add_side_conditioning(model, key: str, conditioning, before_predict=None, after_run=None):
    """Sample `model` with `conditioning` as guider conds[key]; `before_predict(guider, x, sigma, model_options)`
    runs before every normal prediction (it may call `run_side`); `after_run()` when the run ends, also on
    interrupt. Both wrappers are keyed by `key`."""

    def outer_sample(executor, *args, **kwargs):
        guider = executor.class_obj
        guider.conds[key] = comfy.sampler_helpers.convert_cond(conditioning)
        try:
            return executor(*args, **kwargs)
        finally:
            guider.conds.pop(key, None)
            if after_run is not None:
                after_run()

    def predict_noise(executor, x, timestep, model_options={}, seed=None):
        if before_predict is not None:
            before_predict(executor.class_obj, x, timestep, model_options)
        return executor(x, timestep, model_options, seed)

    for kind, fn in ((pe.WrappersMP.OUTER_SAMPLE, outer_sample), (pe.WrappersMP.PREDICT_NOISE, predict_noise)):
        model.remove_wrappers_with_key(kind, key)
        model.add_wrapper_with_key(kind, key, fn)


def run_side(guider, key: str, x, timestep, model_options):
    """One model evaluation of the side conditioning at this step (its x0 prediction is returned)."""
    return comfy.samplers.calc_cond_batch(guider.inner_model, [guider.conds[key]], x, timestep, model_options)[0]


def in_window(guider, window: schedule.Window, timestep) -> bool:
    return window.contains(guider.inner_model.model_sampling, timestep)
