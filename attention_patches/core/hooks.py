"""How Sleight hooks into ComfyUI's sampling: keyed wrappers on a model clone (one place that adds them, so a
second Sleight node of the same kind replaces the first instead of stacking)."""
import comfy.patcher_extension as pe

from .runstate import sampling_run

WRAPPERS = pe.WrappersMP


def replace_wrapper(model, kind: str, key: str, fn):
    """`fn` as the `kind` wrapper keyed `key` on `model` (a clone the caller owns), replacing one with that key."""
    model.remove_wrappers_with_key(kind, key)
    model.add_wrapper_with_key(kind, key, fn)
    return fn


def on_run(model, key: str, start=None, end=None, after=None):
    """An OUTER_SAMPLE wrapper keyed `key` on `model` (a clone the caller owns; replaces one with that key):
    `start(run)` before sampling, `after(run, samples) -> samples` when it returns, `end(run)` after it in
    `finally` (also on interrupt). All see the RunState."""

    def sleight_run(executor, *args, **kwargs):
        with sampling_run(executor.class_obj, args, kwargs) as run:
            try:
                if start is not None:
                    start(run)
                out = executor(*args, **kwargs)
                return out if after is None else after(run, out)
            finally:
                if end is not None:
                    end(run)

    return replace_wrapper(model, WRAPPERS.OUTER_SAMPLE, key, sleight_run)
