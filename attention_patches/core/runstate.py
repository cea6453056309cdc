"""Per-run state: what a trick keeps during one sampling run lives here, not on its long-lived objects.

Every Sleight OUTER_SAMPLE wrapper is added with `hooks.on_run(model, key, start, end)`. The first one to run opens a
`RunState` for the guider's run and puts it into the guider's transformer_options (so every model call, attention
call and patch of this run sees it, through `of(options)`); the one that opened it drops it when the run ends,
normally, on an error or on interrupt. Effects keep their caches in `state.slot(effect, factory)`, so two runs
(two samplers in one graph, a hires pass, a search) never see each other's data and nothing outlives a run.
"""
import contextlib

RUN_KEY = "sleight.run"      # transformer_options key of the running RunState


class RunState:
    """One sampling run: the guider and the arguments of its outer_sample, plus a slot per owner."""

    def __init__(self, guider, noise=None, latent_image=None, sampler=None, sigmas=None, denoise_mask=None,
                 seed=None):
        self.guider = guider
        self.noise, self.latent_image, self.sampler = noise, latent_image, sampler
        self.sigmas, self.denoise_mask, self.seed = sigmas, denoise_mask, seed
        self._slots, self._memos = {}, {}

    @property
    def conds(self) -> dict:
        """The running guider's conds (live: side conds added by other wrappers count too)."""
        return getattr(self.guider, "conds", None) or {}

    def slot(self, owner, factory=dict):
        """`owner`'s state for this run, made by `factory()` on first use."""
        entry = self._slots.get(id(owner))
        if entry is None or entry[0] is not owner:
            entry = self._slots[id(owner)] = (owner, factory())
        return entry[1]

    def peek(self, owner):
        """`owner`'s state for this run, or None if it made none."""
        entry = self._slots.get(id(owner))
        return entry[1] if entry is not None and entry[0] is owner else None

    def memo(self, owner, key, make):
        """A value derived from `owner`'s settings (a mask at a grid, a tensor on a device), made once per run."""
        entry = self._memos.get(id(owner))
        if entry is None or entry[0] is not owner:
            entry = self._memos[id(owner)] = (owner, {})
        if key not in entry[1]:
            entry[1][key] = make()
        return entry[1][key]

    def __deepcopy__(self, memo):
        return self


def of(options):
    """The running RunState in a transformer_options or model_options dict (None outside a run)."""
    if options is None:
        return None
    to = options.get("transformer_options", options)
    return to.get(RUN_KEY)


def _arguments(args, kwargs):
    names = ("noise", "latent_image", "sampler", "sigmas", "denoise_mask", "callback", "disable_pbar", "seed")
    got = dict(zip(names, args))
    got.update({k: v for k, v in kwargs.items() if k in names})
    return {k: got.get(k) for k in ("noise", "latent_image", "sampler", "sigmas", "denoise_mask", "seed")}


@contextlib.contextmanager
def sampling_run(guider, args=(), kwargs=None):
    """The RunState of the guider's run: the one already open, or a new one that lives until this block ends."""
    to = guider.model_options.setdefault("transformer_options", {})
    run = to.get(RUN_KEY)
    if run is not None:
        yield run
        return
    run = RunState(guider, **_arguments(args, kwargs or {}))
    to[RUN_KEY] = run
    try:
        yield run
    finally:
        to.pop(RUN_KEY, None)
