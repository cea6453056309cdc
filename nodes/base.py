"""SleightNode, the base class of every Sleight node: its FLOAT inputs must be finite numbers before execute runs.

ComfyUI's validation lets NaN through (NaN < min and NaN > max are both false; an API prompt's JSON may hold NaN),
and a linked FLOAT (a primitive or math node) skips the widget's range altogether, so the check runs when the node
executes: one error that names the node and the input instead of a black image or a crash deep in sampling.
"""
import functools
import inspect
import math

from ._compat import io


def non_finite_floats(schema, arguments):
    """[(FLOAT input, value)] of the schema whose value in `arguments` is NaN or ±inf."""
    return [(i, arguments[i.id]) for i in schema.inputs if isinstance(i, io.Float.Input)
            and isinstance(arguments.get(i.id), (int, float)) and not math.isfinite(arguments[i.id])]


def _range(i):
    return f" between {i.min:g} and {i.max:g}" if i.min is not None and i.max is not None else ""


def _checked(execute):
    signature = inspect.signature(execute)

    @functools.wraps(execute)
    def checked(cls, *args, **kwargs):
        schema = cls.define_schema()
        bad = non_finite_floats(schema, signature.bind_partial(cls, *args, **kwargs).arguments)
        if bad:
            fixes = "; ".join(f"{i.id} is {value}, give a finite number{_range(i)}" for i, value in bad)
            raise ValueError(f"{schema.display_name}: {fixes}.")
        return execute(cls, *args, **kwargs)

    checked.sleight_checks_floats = True
    return checked


class SleightNode(io.ComfyNode):
    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        # ComfyUI re-creates node classes from their __dict__ (clones, locked copies): wrap each execute once
        execute = cls.__dict__.get("execute")
        if isinstance(execute, classmethod) and not getattr(execute.__func__, "sleight_checks_floats", False):
            cls.execute = classmethod(_checked(execute.__func__))
