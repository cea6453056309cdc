"""The family battery: every registered family adapter, on its tiny model, through ComfyUI's own loader and forward.

Parametrised over the adapter registry, so a new family gets every check by registering (and naming its tiny
model in tinyrun.FAMILY_MODELS, which a test below demands; a family whose models differ in shape lists each):
- block enumeration: the calls the router sees in one forward are the adapter's layer list, which is what
  Sleight · Inspect attention layers prints;
- no-op: the router, and each trick switched off, give the baseline bit for bit;
- every trick the adapter supports changes the output, leaves nothing on the model it was given nor on its own
  options after the run, and an attention trick chains an override installed before it (another pack's);
- an interrupt mid-run leaves nothing behind: the same run afterwards repeats the uninterrupted one exactly.
"""
import json

import pytest
import torch

import comfy.model_management
import comfy.patcher_extension as pe
import comfy.sample
import comfy.samplers
from sleight.attention_patches.core import families, router, runstate
from sleight.nodes.designedit import SleightDesignEditRemove
from sleight.nodes.guidance import SleightAPG
from sleight.nodes.inpaint import SleightPAIntA, SleightRASG
from sleight.nodes.insertion import SleightAddIt
from sleight.nodes.inversion import SleightInvert, SleightSourceTrajectory
from sleight.nodes.prompt import SleightRareToFrequent
from sleight.nodes.routing import SleightPromptRoute
from sleight.nodes.search import SleightNoiseSearch
from sleight.nodes.utils import SleightInspectAttention
from sleight.samplers import rasg
from tinyrun import FAMILY_MODELS, FRAMES, Probe, encode, family_models, latent_for, load

FAMILIES = [f.key for f in families.FAMILIES]
CASES = [(key, name) for key in FAMILIES if key in FAMILY_MODELS for name in family_models(key)]
SIZE, STEPS, CFG, SEED = 64, 3, 3.0, 5
A, B, SUBJECT = "a red circle on a blue background", "a red circle and a cat on a blue background", "cat"
APG = dict(eta=0.0, momentum=-0.5, norm_threshold=15.0, start_percent=0.0, end_percent=1.0, cfg_warmup_steps=0,
           cfg_warmup_scale=0.0, scale_threshold_by_latent_size=False)


def size_of(model):
    """64 px, or the least size with 4×4 image tokens (HunyuanImage 2.1's latent is 1/32 of the image)."""
    family = families.detect(model)
    return max(SIZE, 4 * family.downscale * family.patch)


def box(size=SIZE):
    m = torch.zeros(1, size, size)
    m[:, size // 4: 3 * size // 4, size // 2:] = 1.0
    return m


def run(model, pos, neg, sampler="euler", noise_mask=None, seed=SEED, cfg=CFG, steps=STEPS):
    """SamplerCustom with this seed, on an empty latent (or one with a noise mask)."""
    latent = latent_for(model, size=size_of(model))
    noise = comfy.sample.prepare_noise(latent, seed)
    sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "normal", steps).cpu()
    sampler = comfy.samplers.sampler_object(sampler) if isinstance(sampler, str) else sampler
    return comfy.sample.sample_custom(model, noise, cfg, sampler, sigmas, pos, neg, latent, noise_mask=noise_mask,
                                      disable_pbar=True, seed=seed)


class Case:
    """One family's tiny model, prompts and baseline, and each trick's (patched, plain) outputs once computed."""

    def __init__(self, key, name):
        self.name = name
        self.model, self.clip, self.vae = load(self.name)
        self.family = families.detect(self.model)
        self.size = size_of(self.model)
        self.pos, self.neg, self.b = encode(self.clip, A), encode(self.clip, ""), encode(self.clip, B)
        self.base = run(self.model, self.pos, self.neg)
        self.outputs = {}

    def trick(self, name):
        if name not in self.outputs:
            self.outputs[name] = TRICKS[name](self, self.model)
        return self.outputs[name]

    def source(self):
        clean = run(self.model, self.pos, self.neg, steps=2, seed=11)
        return SleightSourceTrajectory.execute(self.model, {"samples": clean}, self.pos, 3).result[0]


@pytest.fixture(scope="module", params=CASES,
                ids=[key if len(family_models(key)) == 1 else f"{key}:{name}" for key, name in CASES])
def c(request):
    """The family (and model) under test; module scope makes pytest run every check of one before the next."""
    return Case(*request.param)


# ---------------------------------------------------------------- one runner per trick: (patched run, baseline run)

def trick_apg(c, model):
    return run(SleightAPG.execute(model, **APG).result[0], c.pos, c.neg), c.base


def trick_route(c, model):
    m = SleightPromptRoute.execute(model, c.b, "custom", "*", 0.0, 1.0, "cond").result[0]
    return run(m, c.pos, c.neg), c.base


def trick_r2f(c, model):
    m = SleightRareToFrequent.execute(model, c.pos, c.b, 5, "alternate", 1.0, "auto", "0.3").result[0]
    return run(m, c.pos, c.neg), c.base


def trick_addit(c, model):
    m, pos = SleightAddIt.execute(model, c.clip, c.source(), B, SUBJECT, 0.0, -1.0, 1 / 3, 10 / 30, 20 / 30).result
    return run(m, pos, c.neg), run(model, pos, c.neg)


def trick_designedit(c, model):
    m = SleightDesignEditRemove.execute(model, c.source(), box(c.size), 0, proximal_strength=0.1).result[0]
    plain = SleightDesignEditRemove.execute(model, c.source(), box(c.size), 0, mask_start=1.0, mask_end=1.0).result[0]
    return run(m, c.pos, c.pos), run(plain, c.pos, c.pos)          # key masking is what differs


def _painta(c, model):
    return SleightPAIntA.execute(model, c.clip, "a red hat", box(c.size), "", 0.5, "custom", "*").result


def trick_painta(c, model):
    m, pos = _painta(c, model)
    return run(m, pos, c.neg, noise_mask=box(c.size)), run(model, pos, c.neg, noise_mask=box(c.size))


def trick_rasg(c, model):
    m, pos = _painta(c, model)
    guided = run(m, pos, c.neg, sampler=SleightRASG.execute(0.1).result[0], noise_mask=box(c.size), steps=2)
    zero = run(m, pos, c.neg, sampler=rasg.ksampler(eta=0.1, objective_scale=0.0), noise_mask=box(c.size), steps=2)
    return guided, zero                                          # the same sampler with the objective zeroed


def trick_search(c, model):
    sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "normal", STEPS).cpu()
    best, _, report, _ = SleightNoiseSearch.execute(
        model, c.pos, c.neg, {"samples": latent_for(model, size=c.size)}, comfy.samplers.ksampler("euler"), sigmas,
        CFG, SEED, "random", 3, 1, 1, "self_consistency", 0.4, 0.95, 4, 2, 0.5, 1, 2).result
    seed = json.loads(report)["best_seed"]
    assert torch.equal(best["samples"], run(model, c.pos, c.neg, seed=seed))      # the winner is its seed's sample
    return best["samples"], run(model, c.pos, c.neg, seed=SEED + (1 if seed == SEED else 0))


def trick_invert(c, model):
    clean = run(model, c.pos, c.neg, steps=2, seed=11)
    traj = SleightInvert.execute(model, {"samples": clean}, c.pos, STEPS, "normal", 1.0, 0).result[0]
    return traj.latents[0], traj.latents[-1]                      # noise at σ_max, the clean latent itself


TRICKS = {"apg": trick_apg, "route": trick_route, "r2f": trick_r2f, "addit": trick_addit,
          "designedit": trick_designedit, "painta": trick_painta, "rasg": trick_rasg, "search": trick_search,
          "invert": trick_invert}
ATTENTION_TRICKS = ("route", "addit", "designedit", "painta")


def test_every_family_has_a_tiny_model_and_every_trick_a_check():
    assert sorted(FAMILY_MODELS) == sorted(FAMILIES), "register the family's tiny model in tinyrun.FAMILY_MODELS"
    assert set(TRICKS) == set(families.TRICKS)


def test_block_enumeration_is_what_inspect_prints(c):
    probe = Probe(where=lambda call: False)
    m = c.model.clone()
    router.install(m, probe)
    assert torch.equal(run(m, c.pos, c.neg), c.base), "a router with nothing to do is bit-identical"
    first = probe.forwards()[0]
    layers = families.layers(c.model, c.size, c.size, frames=FRAMES)
    assert [(call.block, call.kind) for call in first] == [(layer.block, layer.kind) for layer in layers]
    assert all(call.grid == layer.grid and call.img.stop - call.img.start == layer.image_tokens
               for call, layer in zip(first, layers))
    text = SleightInspectAttention.execute(c.model, c.size, c.size).result[0].splitlines()[2:]
    assert [line.split()[:2] for line in text] == [[layer.block, layer.kind] for layer in layers]


def test_tricks_switched_off_are_the_baseline_bit_for_bit(c):
    same = SleightPromptRoute.execute(c.model, c.pos, "custom", "*", 0.0, 1.0, "cond").result[0]
    assert torch.equal(run(same, c.pos, c.neg), c.base), "routing the sampler's own prompt"
    off = SleightRareToFrequent.execute(c.model, c.pos, c.b, 0, "alternate", -1.0, "auto", "0.3").result[0]
    assert torch.equal(run(off, c.pos, c.neg), c.base), "Rare-to-Frequent at level 0"
    apg_off = SleightAPG.execute(c.model, **{**APG, "start_percent": 1.0, "end_percent": 1.0}).result[0]
    assert torch.equal(run(apg_off, c.pos, c.neg), c.base), "APG outside its window"


@pytest.mark.parametrize("trick", list(TRICKS))
def test_each_supported_trick_changes_the_output_and_leaves_nothing(c, trick):
    before = repr(c.model.model_options)
    if trick not in c.family.tricks:         # not meaningful on this family: refused at patch time, by name
        with pytest.raises(ValueError, match=c.family.label):
            TRICKS[trick](c, c.model)
        return
    got, plain = c.trick(trick)
    assert torch.isfinite(got).all()
    assert not torch.equal(got, plain), f"{trick} changed nothing on {c.family.label}"
    assert repr(c.model.model_options) == before, "the model the node was given is untouched"


def test_plain_sampling_after_every_trick_is_the_baseline(c):
    for trick in c.family.tricks:
        c.trick(trick)
    assert torch.equal(run(c.model, c.pos, c.neg), c.base)


@pytest.mark.parametrize("trick", ATTENTION_TRICKS)
def test_attention_tricks_chain_a_foreign_override(c, trick):
    if trick not in c.family.tricks:
        pytest.skip(f"{trick} is refused at patch time on {c.family.label} (checked above)")
    seen = []

    def other_pack(func, *args, **kwargs):        # e.g. a sage-attention node installed before ours
        seen.append(1)
        return func(*args, **kwargs)

    foreign = c.model.clone()
    foreign.model_options.setdefault("transformer_options", {})["optimized_attention_override"] = other_pack
    alone, _ = c.trick(trick)
    chained, _ = TRICKS[trick](c, foreign)
    assert seen, "the foreign override never ran under the Sleight router"
    torch.testing.assert_close(chained, alone, rtol=1e-5, atol=1e-5)   # it computes the same attention


def test_an_interrupt_mid_run_leaves_nothing(c):
    m = SleightPromptRoute.execute(c.model, c.b, "custom", "*", 0.0, 1.0, "cond").result[0]
    m = SleightAPG.execute(m, **APG).result[0]
    want = run(m, c.pos, c.neg)
    calls = []

    def interrupt_at_the_second_call(executor, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise comfy.model_management.InterruptProcessingException()
        return executor(*args, **kwargs)

    hurt = m.clone()
    hurt.add_wrapper_with_key(pe.WrappersMP.APPLY_MODEL, "test.interrupt", interrupt_at_the_second_call)
    with pytest.raises(comfy.model_management.InterruptProcessingException):
        run(hurt, c.pos, c.neg)
    for patched in (hurt, m):
        assert runstate.RUN_KEY not in patched.model_options.get("transformer_options", {})
    assert torch.equal(run(m, c.pos, c.neg), want)
