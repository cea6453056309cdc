"""Bad API prompts against one real server: each is refused with an error that names the node and the fix, and
the same server then still gives a plain image bit-identical to the one it gave before (tests/server/plain.py).

Most prompts fail at validation or while a node patches the model, before any sampling; the few that reach a
sampler fail at its first step. Tiny SD1.5 at 64 px, 1-2 steps; odd-but-valid inputs (sizes like 67x131, unicode
prompts) must run and give an image.
"""
import math
import re
from dataclasses import dataclass

import numpy as np
import pytest
from PIL import Image

import comfy_env
from comfy_server import ComfyServer, PromptError
from plain import TEXT, Plain, tiny_ckpt

LOG = comfy_env.OUTPUT / "server-tests" / "bad-inputs.log"
SD15 = "sd15"


@pytest.fixture(scope="module")
def server():
    import tiny_models

    tiny_models.ensure_models(names=[SD15])
    with ComfyServer(log_path=LOG) as s:
        yield s


@pytest.fixture(scope="module")
def plain(server):
    runs = Plain(server)
    runs.baseline(tiny_ckpt(SD15))     # before any bad prompt
    return runs


# ------------------------------------------------------------------ building prompts

class Graph(dict):
    """An API prompt built node by node: add() returns the new node's id; link outputs as g[id, slot]."""

    def add(self, class_type, **inputs):
        nid = str(len(self) + 1)
        self[nid] = {"class_type": class_type, "inputs": inputs}
        return nid

    def __getitem__(self, key):
        if isinstance(key, tuple):
            return [key[0], key[1]]
        return super().__getitem__(key)

    def checkpoints(self):
        return sorted({n["inputs"]["ckpt_name"] for n in self.values() if n["class_type"] == "CheckpointLoaderSimple"})


@dataclass
class SD:
    """The usual pieces on one checkpoint: loader, prompts, an empty latent. The prompts are the plain check's, so
    ComfyUI's cache holds their encodings from one prompt to the next (the text encoder is full size)."""

    g: Graph
    model: str = SD15

    def __post_init__(self):
        self.ld = self.g.add("CheckpointLoaderSimple", ckpt_name=tiny_ckpt(self.model))
        self.pos = self.text(TEXT)
        self.neg = self.g.add("ConditioningZeroOut", conditioning=self.g[self.pos, 0])

    @property
    def m(self):
        return self.g[self.ld, 0]

    @property
    def clip(self):
        return self.g[self.ld, 1]

    def text(self, t):
        return self.g.add("CLIPTextEncode", text=t, clip=self.g[self.ld, 1])

    def latent(self, w=64, h=64, batch=1):
        return self.g.add("EmptyLatentImage", width=w, height=h, batch_size=batch)

    def sample(self, model=None, latent=None, positive=None, steps=2, cfg=5.0, sampler="euler", scheduler="normal"):
        """A KSampler; `positive` is a link (default: the positive prompt)."""
        lat = latent or self.latent()
        return self.g.add("KSampler", seed=7, steps=steps, cfg=cfg, sampler_name=sampler, scheduler=scheduler,
                          denoise=1.0, model=model or self.m, positive=positive or self.g[self.pos, 0],
                          negative=self.g[self.neg, 0], latent_image=self.g[lat, 0])

    def save(self, samples, slot=0):
        dec = self.g.add("VAEDecode", samples=self.g[samples, slot], vae=self.g[self.ld, 2])
        self.g.add("SaveImage", filename_prefix="bad/out", images=self.g[dec, 0])
        return dec

    def image(self, w=None, h=None):
        """The example image (128 px), optionally scaled to w x h; returns (image ref, mask ref)."""
        load = self.g.add("LoadImage", image="sleight-example.png")
        if w is None:
            return self.g[load, 0], self.g[load, 1]
        img = self.g.add("ImageScale", image=self.g[load, 0], upscale_method="nearest-exact", width=w, height=h,
                         crop="disabled")
        as_img = self.g.add("MaskToImage", mask=self.g[load, 1])
        scaled = self.g.add("ImageScale", image=self.g[as_img, 0], upscale_method="nearest-exact", width=w, height=h,
                            crop="disabled")
        mask = self.g.add("ImageToMask", image=self.g[scaled, 0], channel="red")
        return self.g[img, 0], self.g[mask, 0]

    def encode(self, image):
        return self.g.add("VAEEncode", pixels=image, vae=self.g[self.ld, 2])

    def solid(self, value, w=64, h=64):
        return self.g[self.g.add("SolidMask", value=value, width=w, height=h), 0]

    def partial(self, size=64):
        """A size x size mask with a white square in its middle."""
        square = self.g.add("SolidMask", value=1.0, width=size // 2, height=size // 2)
        return self.g[self.g.add("MaskComposite", destination=self.solid(0.0, size, size), source=self.g[square, 0],
                                 x=size // 4, y=size // 4, operation="add"), 0]

    def source(self, latent=None):
        lat = latent or self.sample()
        return self.g.add("SleightSourceTrajectory", noise_seed=3, model=self.m, latent=self.g[lat, 0],
                          conditioning=self.g[self.pos, 0])


def apg(sd, **kw):
    inputs = dict(eta=0.0, momentum=-0.5, norm_threshold=15.0, start_percent=0.0, end_percent=1.0,
                  cfg_warmup_steps=0, cfg_warmup_scale=0.0, scale_threshold_by_latent_size=False) | kw
    return sd.g.add("SleightAPG", model=sd.m, **inputs)


def route(sd, **kw):
    inputs = dict(layers="custom", custom_layers="*", start_percent=0.0, end_percent=1.0, rows="cond") | kw
    return sd.g.add("SleightPromptRoute", model=sd.m, conditioning=sd.g[sd.neg, 0], **inputs)


def find(sd, **kw):
    inputs = dict(seed=1, steps=1, cfg=5.0, sampler_name="euler", scheduler="normal", width=64, height=64,
                  granularity="layer", max_candidates=2, top_k=1, start_percent=0.0, search_layers="*") | kw
    return sd.g.add("SleightFindTextLayers", model=sd.m, positive=sd.g[sd.pos, 0],
                    routed=sd.g[sd.neg, 0], negative=sd.g[sd.neg, 0], **inputs)


def preview(sd, ref):
    return sd.g.add("PreviewAny", source=ref)


def r2f_prompt(sd, text):
    return sd.g.add("SleightR2FPrompt", clip=sd.clip, text=text)


def r2f(sd, prompt_node, **kw):
    inputs = dict(visual_detail_level=3, mode="alternate", stop_percent=-1.0, level_map="auto",
                  alphas="0.3,0.15,0.15,0.15") | kw
    return sd.g.add("SleightRareToFrequent", model=sd.m, rare=sd.g[prompt_node, 0], frequent=sd.g[prompt_node, 1],
                    **inputs)


def painta(sd, mask, **kw):
    inputs = dict(text="a red hat", quality_suffix="", end_percent=0.5, layers="paper levels (auto)",
                  custom_layers="*") | kw
    return sd.g.add("SleightPAIntA", model=sd.m, clip=sd.clip, mask=mask, **inputs)


def rasg_run(sd, model, positive, latent, **kw):
    """SamplerCustom with Sleight · RASG (2 ddim_uniform steps) on `model`, saved: (RASG node, sampler node)."""
    rasg = sd.g.add("SleightRASG", **(dict(eta=0.1, noise_scale="official") | kw))
    sigmas = sd.g.add("BasicScheduler", scheduler="ddim_uniform", steps=2, denoise=1.0, model=model)
    run = sd.g.add("SamplerCustom", add_noise=True, noise_seed=5, cfg=5.0, model=model, positive=positive,
                   negative=sd.g[sd.neg, 0], sampler=sd.g[rasg, 0], sigmas=sd.g[sigmas, 0], latent_image=latent)
    sd.save(run)
    return rasg, run


def invert(sd, latent, **kw):
    inputs = dict(steps=2, scheduler="normal", denoise=1.0, fixed_point_iterations=0) | kw
    return sd.g.add("SleightInvert", model=sd.m, latent=latent, conditioning=sd.g[sd.neg, 0], **inputs)


def addit(sd, source, **kw):
    inputs = dict(prompt="a red circle on a blue background and a dog", subject="dog", gamma=0.0,
                  structure_transfer=-1.0, blend_at=-1.0, double_stream_end=0.3333, single_stream_end=0.6667,
                  dilation=1, auto_gamma_at=0.1667) | kw
    return sd.g.add("SleightAddIt", model=sd.m, clip=sd.clip, source=sd.g[source, 0], **inputs)


def remove(sd, source, mask, **kw):
    inputs = dict(dilation=20, key_mode="zero keys (official)", feather=0, mask_start=0.02, mask_end=0.78,
                  refine_end=0.5, blend_end=0.82, proximal_strength=0.1, proximal_start_percent=0.6) | kw
    return sd.g.add("SleightDesignEditRemove", model=sd.m, source=sd.g[source, 0], mask=mask, **inputs)


def layer(sd, latent, mask, **kw):
    inputs = dict(move_x=0, move_y=0, scale=1.0, flip="none") | kw
    return sd.g.add("SleightDesignEditLayer", latent=latent, mask=mask, **inputs)


def search(sd, latent=None, **kw):
    inputs = dict(cfg=5.0, seed=1, mode="random", budget=2, batch_size=2, top_k=1, verifier="self_consistency",
                  early_percent=0.4, cosine=0.95, neighbours=2, branches=2, branch_start_percent=0.5,
                  renoise_steps=1, denoise_steps=2) | kw
    select = sd.g.add("KSamplerSelect", sampler_name="euler")
    sigmas = sd.g.add("BasicScheduler", scheduler="normal", steps=2, denoise=1.0, model=sd.m)
    return sd.g.add("SleightNoiseSearch", model=sd.m, positive=sd.g[sd.pos, 0], negative=sd.g[sd.neg, 0],
                    latent_image=sd.g[latent or sd.latent(), 0], sampler=sd.g[select, 0], sigmas=sd.g[sigmas, 0],
                    **inputs)


# ------------------------------------------------------------------ the bad prompts

@dataclass
class Refused:
    node: str           # the id of the node the error belongs to
    fix: str            # a regex the message must match: what is wrong and what to do
    at: str = "run"     # "validation" (POST /prompt refused) or "run" (the prompt failed while executing)


BAD = {}


def bad(fn):
    BAD[fn.__name__] = fn
    return fn


NAN, INF = float("nan"), float("inf")


# APG
@bad
def apg_window_backwards(g):
    sd = SD(g)
    node = apg(sd, start_percent=0.7, end_percent=0.2)
    sd.save(sd.sample(sd.g[node, 0]))
    return Refused(node, r"Sleight · APG: .*start_percent.*Set start_percent <= end_percent")


@bad
def apg_nan_eta(g):
    sd = SD(g)
    node = apg(sd, eta=NAN)
    sd.save(sd.sample(sd.g[node, 0]))
    return Refused(node, r"Sleight · APG .*: eta is nan, give a finite number between -1 and 2")


@bad
def apg_inf_threshold(g):
    sd = SD(g)
    node = apg(sd, norm_threshold=INF)
    sd.save(sd.sample(sd.g[node, 0]))
    return Refused(node, r"norm_threshold.*bigger than max of 200", "validation")


@bad
def apg_minus_inf_momentum(g):
    sd = SD(g)
    node = apg(sd, momentum=-INF)
    sd.save(sd.sample(sd.g[node, 0]))
    return Refused(node, r"momentum.*smaller than min of -1.5", "validation")


@bad
def apg_huge_warmup(g):
    sd = SD(g)
    node = apg(sd, cfg_warmup_steps=10 ** 30)
    sd.save(sd.sample(sd.g[node, 0]))
    return Refused(node, r"cfg_warmup_steps.*bigger than max of 1000", "validation")


@bad
def apg_at_cfg_one(g):
    sd = SD(g)
    ks = sd.sample(sd.g[apg(sd), 0], cfg=1.0)
    sd.save(ks)
    return Refused(ks, r"Sleight · APG: the sampler's cfg is 1.*Set cfg above 1")


@bad
def apg_missing_model(g):
    sd = SD(g)
    node = apg(sd)
    del g[node]["inputs"]["model"]
    sd.save(sd.sample(sd.g[node, 0]))
    return Refused(node, r"^model: Required input is missing", "validation")


# prompt routing
@bad
def route_malformed_spec(g):
    sd = SD(g)
    node = route(sd, custom_layers="output/2")
    sd.save(sd.sample(sd.g[node, 0]))
    return Refused(node, r"Sleight · Route prompt: cannot read 'output/2' in the layer spec: write block ids like")


@bad
def route_unknown_layer(g):
    sd = SD(g)
    node = route(sd, custom_layers="output.99.0")
    sd.save(sd.sample(sd.g[node, 0]))
    return Refused(node, r"Sleight · Route prompt: 'output.99.0' matches no layer of this model. Valid block ids: ")


@bad
def route_backwards_range(g):
    sd = SD(g)
    node = route(sd, custom_layers="output.2.3-1")
    sd.save(sd.sample(sd.g[node, 0]))
    return Refused(node, r"Sleight · Route prompt: the range '3-1' .* runs backwards; write 1-3")


@bad
def route_empty_spec(g):
    sd = SD(g)
    node = route(sd, custom_layers=" , ")
    sd.save(sd.sample(sd.g[node, 0]))
    return Refused(node, r"Sleight · Route prompt: the layer spec is empty. Valid block ids: ")


@bad
def route_huge_spec(g):
    sd = SD(g)
    node = route(sd, custom_layers="output.0.0, " * 5000)
    sd.save(sd.sample(sd.g[node, 0]))
    return Refused(node, r"Sleight · Route prompt: the layer spec is \d+ characters long \(at most 10000\)")


@bad
def route_paper_layers_on_sd15(g):
    sd = SD(g)
    node = route(sd, layers="paper text layers (auto)")
    sd.save(sd.sample(sd.g[node, 0]))
    return Refused(node, r"Sleight · Route prompt: .*(no paper|paper).*custom")


@bad
def route_sdxl_preset_on_sd15(g):
    sd = SD(g)
    node = route(sd, layers="SDXL text (paper)")
    sd.save(sd.sample(sd.g[node, 0]))
    return Refused(node, r"Sleight · Route prompt: the preset 'SDXL text \(paper\)' is the paper's finding for SDXL"
                        r".*Write the layers yourself \(custom\)")


@bad
def route_unknown_choice(g):
    sd = SD(g)
    node = route(sd, layers="every layer")
    sd.save(sd.sample(sd.g[node, 0]))
    # ComfyUI 0.3.75 checks no V3 combo against its options: the node's own check answers
    return Refused(node, r"Sleight · Route prompt: unknown layer choice 'every layer'; choose one of paper text layers")


@bad
def route_window_backwards(g):
    sd = SD(g)
    node = route(sd, start_percent=0.9, end_percent=0.1)
    sd.save(sd.sample(sd.g[node, 0]))
    return Refused(node, r"Sleight · Route prompt: .*Set start_percent <= end_percent")


# find text layers
@bad
def find_mask_of_another_size(g):
    sd = SD(g)
    node = find(sd, mask=sd.solid(1.0, 32, 48))
    preview(sd, sd.g[node, 0])
    return Refused(node, r"Sleight · Find text layers: the mask is 32x48 pixels but the latent is 64x64 .*resize it")


@bad
def find_empty_mask(g):
    sd = SD(g)
    node = find(sd, mask=sd.solid(0.0))
    preview(sd, sd.g[node, 0])
    return Refused(node, r"Sleight · Find text layers: the mask is empty; mark the region")


@bad
def find_full_mask(g):
    sd = SD(g)
    node = find(sd, mask=sd.solid(1.0))
    preview(sd, sd.g[node, 0])
    return Refused(node, r"Sleight · Find text layers: the mask is full; mark the region")


@bad
def find_huge_budget(g):
    sd = SD(g)
    node = find(sd, max_candidates=10 ** 9)
    preview(sd, sd.g[node, 0])
    return Refused(node, r"max_candidates.*bigger than max of 1000", "validation")


@bad
def find_malformed_search_layers(g):
    sd = SD(g)
    node = find(sd, search_layers="output.$")
    preview(sd, sd.g[node, 0])
    return Refused(node, r"Sleight · Find text layers: cannot read 'output.\$' in the layer spec")


# inspect attention
@bad
def inspect_zero_width(g):
    sd = SD(g)
    node = g.add("SleightInspectAttention", model=sd.m, width=0, height=64)
    return Refused(node, r"width.*smaller than min of 16", "validation")


# R2F prompt and Rare-to-Frequent
def r2f_image(sd, text, **kw):
    """R2F prompt -> Rare-to-Frequent -> KSampler; returns the R2F prompt node's id."""
    return r2f_plan(sd, text, **kw)[0]


def r2f_plan(sd, text, **kw):
    """As r2f_image: (R2F prompt node, Rare-to-Frequent node)."""
    p = r2f_prompt(sd, text)
    r = r2f(sd, p, **kw)
    sd.save(sd.sample(sd.g[r, 0], positive=sd.g[p, 0]))
    return p, r


@bad
def r2f_empty_text(g):
    return Refused(r2f_image(SD(g), ""), r"Sleight · R2F prompt: the prompt text is empty. Expected the")


@bad
def r2f_huge_text(g):
    return Refused(r2f_image(SD(g), "a hairy object BREAK a hairy hamburger " * 1000),
                   r"Sleight · R2F prompt: the text is \d+ characters long; .*at most 20000")


@bad
def r2f_empty_piece_between_breaks(g):
    return Refused(r2f_image(SD(g), "a hairy object BREAK BREAK a hairy hamburger"),
                   r"Sleight · R2F prompt: .* has an empty side of BREAK")


@bad
def r2f_unicode_without_rare(g):
    return Refused(r2f_image(SD(g), "### Final Prompt Sequence: 🍔 objet poilu BREAK \u200b"),
                   r"Sleight · R2F prompt: .*empty side of BREAK")


@bad
def r2f_deeply_nested_json(g):
    return Refused(r2f_image(SD(g), '{"a":' * 100000), r"Sleight · R2F prompt: the text is \d+ characters long")


@bad
def r2f_nested_json_under_the_bound(g):
    return Refused(r2f_image(SD(g), '{"r2f_prompt":' + "[" * 6000 + "]" * 6000 + "}"),
                   r"Sleight · R2F prompt: the JSON is nested too deeply .*give one entry")


@bad
def r2f_level_out_of_range(g):
    return Refused(r2f_image(SD(g), "### Final Prompt Sequence: a hairy object BREAK a hairy hamburger\n"
                                    "### Visual Detail Level: 9"),
                   r"Sleight · R2F prompt: visual detail levels must be 0..5")


@bad
def r2f_too_many_concepts(g):
    pairs = " AND ".join(f"thing {i} BREAK rare thing {i}" for i in range(20))
    return Refused(r2f_image(SD(g), f"### Input: {pairs}\n### Final Prompt Sequence: {pairs}"),
                   r"Sleight · R2F prompt: .*(at most 16|20 concepts)")


@bad
def r2f_nan_alphas(g):
    _, node = r2f_plan(SD(g), "a hairy object BREAK a hairy hamburger", mode="interpolate", alphas="nan, 0.1")
    return Refused(node, r"Sleight · Rare-to-Frequent: every alpha must lie in \[0, 1\]")


@bad
def r2f_nan_stop(g):
    _, node = r2f_plan(SD(g), "a hairy object BREAK a hairy hamburger", stop_percent=NAN)
    return Refused(node, r"Sleight · Rare-to-Frequent: stop_percent is nan, give a finite number between -1 and 1")


@bad
def r2f_stop_between_off_and_auto(g):
    _, node = r2f_plan(SD(g), "a hairy object BREAK a hairy hamburger", stop_percent=-0.5)
    return Refused(node, r"Sleight · Rare-to-Frequent: stop_percent must be -1 \(use the level\) or in \[0, 1\]")


def plan_node(sd, **kw):
    """Sleight · R2F plan (on the checkpoint's CLIP) into Rare-to-Frequent."""
    inputs = dict(prompt="A hairy hamburger on a wooden table", decoding="greedy", seed=0, max_new_tokens=400,
                  on_failure="plain prompt") | kw
    plan = sd.g.add("SleightR2FPlan", clip=sd.clip, **inputs)
    sd.save(sd.sample(sd.g[r2f(sd, plan), 0], positive=sd.g[plan, 0]))
    return plan


@bad
def r2f_plan_with_an_encoder_that_cannot_write(g):
    return Refused(plan_node(SD(g)), r"Sleight · R2F plan: this CLIP holds no language model that can write text .*"
                                    r"Plan with ")


@bad
def r2f_plan_huge_answer_budget(g):
    return Refused(plan_node(SD(g), max_new_tokens=10 ** 7), r"max_new_tokens.*bigger than max of 2048", "validation")


@bad
def r2f_plan_unknown_failure_mode(g):
    return Refused(plan_node(SD(g), on_failure="explode"),
                   r"Sleight · R2F plan: on_failure must be one of \['plain prompt', 'raise'\], got 'explode'")


# HD-Painter
@bad
def painta_empty_mask(g):
    sd = SD(g)
    p = painta(sd, sd.solid(0.0))
    sd.save(sd.sample(sd.g[p, 0], positive=sd.g[p, 1]))
    return Refused(p, r"Sleight · PAIntA: the mask has no hole .*paint the region to inpaint")


@bad
def painta_full_mask(g):
    sd = SD(g)
    p = painta(sd, sd.solid(1.0))
    sd.save(sd.sample(sd.g[p, 0], positive=sd.g[p, 1]))
    return Refused(p, r"Sleight · PAIntA: the mask covers the whole image.*needs a partial mask")


@bad
def painta_empty_text(g):
    sd = SD(g)
    image, mask = sd.image()
    p = painta(sd, mask, text="")
    sd.save(sd.sample(sd.g[p, 0], positive=sd.g[p, 1]))
    return Refused(p, r"Sleight · PAIntA: the prompt has no tokens; describe what to paint")


@bad
def painta_bad_custom_layers(g):
    sd = SD(g)
    image, mask = sd.image()
    p = painta(sd, mask, layers="custom", custom_layers="input.1.0 !!")
    sd.save(sd.sample(sd.g[p, 0], positive=sd.g[p, 1]))
    return Refused(p, r"Sleight · PAIntA: cannot read '!!' in the layer spec")


@bad
def painta_mask_of_another_shape(g):
    sd = SD(g)
    _, mask = sd.image(128, 64)
    p = painta(sd, mask)
    ks = sd.sample(sd.g[p, 0], positive=sd.g[p, 1])
    sd.save(ks)
    return Refused(ks, r"Sleight · PAIntA: the mask is 128×64 px but the latent is 8×8 .*same size as the image")


@bad
def painta_without_inpainting_model_or_noise_mask(g):
    sd = SD(g)
    image, mask = sd.image()
    p = painta(sd, mask)
    _, run = rasg_run(sd, sd.g[p, 0], sd.g[p, 1], sd.g[sd.encode(image), 0])
    return Refused(run, r"Sleight · PAIntA: this model is not an inpainting model .*\(Set Latent Noise Mask")


@bad
def rasg_without_painta(g):
    sd = SD(g)
    _, run = rasg_run(sd, sd.m, sd.g[sd.pos, 0], sd.g[sd.latent(), 0])
    return Refused(run, r"Sleight · RASG: the model carries no hole mask and prompt. Connect the model through "
                        r"Sleight · PAIntA")


@bad
def rasg_nan_eta(g):
    sd = SD(g)
    rasg, _ = rasg_run(sd, sd.m, sd.g[sd.pos, 0], sd.g[sd.latent(), 0], eta=NAN)
    return Refused(rasg, r"Sleight · RASG sampler \(HD-Painter\): eta is nan, give a finite number")


@bad
def rasg_unknown_noise_scale(g):
    sd = SD(g)
    rasg, _ = rasg_run(sd, sd.m, sd.g[sd.pos, 0], sd.g[sd.latent(), 0], noise_scale="loud")
    return Refused(rasg, r"Sleight · RASG: noise_scale must be one of \['official', 'ddim'\], got 'loud'")


# inversion and source trajectories
@bad
def invert_batch_of_two(g):
    sd = SD(g)
    inv = invert(sd, sd.g[sd.latent(batch=2), 0])
    sd.save(sd.sample(sd.g[remove(sd, inv, sd.partial()), 0]))
    return Refused(inv, r"Sleight · Invert: the latent holds 2 images; give one source image")


@bad
def invert_latent_with_noise_mask(g):
    sd = SD(g)
    masked = g.add("SetLatentNoiseMask", samples=sd.g[sd.latent(), 0], mask=sd.solid(1.0))
    inv = invert(sd, sd.g[masked, 0])
    sd.save(sd.sample(sd.g[remove(sd, inv, sd.partial()), 0]))
    return Refused(inv, r"Sleight · Invert: the latent carries an inpainting mask .*give the plain encoded source")


@bad
def invert_zero_steps(g):
    sd = SD(g)
    inv = invert(sd, sd.g[sd.latent(), 0], steps=0)
    sd.save(sd.sample(sd.g[remove(sd, inv, sd.partial()), 0]))
    return Refused(inv, r"steps.*smaller than min of 1", "validation")


@bad
def invert_nan_denoise(g):
    sd = SD(g)
    inv = invert(sd, sd.g[sd.latent(), 0], denoise=NAN)
    sd.save(sd.sample(sd.g[remove(sd, inv, sd.partial()), 0]))
    return Refused(inv, r"Sleight · Invert image \(DDIM / flow\): denoise is nan")


@bad
def source_trajectory_batch_of_two(g):
    sd = SD(g)
    src = sd.source(sd.latent(batch=2))
    sd.save(sd.sample(sd.g[addit(sd, src), 0]))
    return Refused(src, r"Sleight · Source trajectory: the latent holds 2 images")


# Add-it
@bad
def addit_subject_not_in_prompt(g):
    sd = SD(g)
    a = addit(sd, sd.source(sd.latent()), subject="zebra")
    sd.save(sd.sample(sd.g[a, 0], positive=sd.g[a, 1]))
    return Refused(a, r"Sleight · Add-it: the subject \"zebra\" does not appear in the prompt")


@bad
def addit_gamma_too_small(g):
    sd = SD(g)
    a = addit(sd, sd.source(sd.latent()), gamma=0.2)
    sd.save(sd.sample(sd.g[a, 0], positive=sd.g[a, 1]))
    return Refused(a, r"Sleight · Add-it: gamma 0.2 is too small; use 0 for the paper's value, -1 for auto")


@bad
def addit_auto_gamma_after_the_window(g):
    sd = SD(g)
    a = addit(sd, sd.source(sd.latent()), gamma=-1.0, auto_gamma_at=0.9)
    sd.save(sd.sample(sd.g[a, 0], positive=sd.g[a, 1]))
    return Refused(a, r"Sleight · Add-it: auto gamma is solved at 0.900 of the steps, after the extended attention "
                      r"ends; lower auto_gamma_at")


@bad
def addit_mask_of_another_size(g):
    sd = SD(g)
    a = addit(sd, sd.source(sd.latent()), mask=sd.solid(1.0, 48, 48))
    sd.save(sd.sample(sd.g[a, 0], positive=sd.g[a, 1]))
    return Refused(a, r"Sleight · Add-it: the mask is 48x48 but the image is 64x64; resize the mask")


@bad
def addit_mask_batch_mismatch(g):
    sd = SD(g)
    as_img = g.add("MaskToImage", mask=sd.partial())
    batch = g.add("RepeatImageBatch", image=sd.g[as_img, 0], amount=3)
    three = g.add("ImageToMask", image=sd.g[batch, 0], channel="red")
    a = addit(sd, sd.source(sd.latent()), mask=sd.g[three, 0])
    ks = sd.sample(sd.g[a, 0], positive=sd.g[a, 1], latent=sd.latent(batch=2))
    sd.save(ks)
    return Refused(ks, r"Sleight · Add-it: the mask holds 3 masks but the sampler makes 2 images")


@bad
def addit_mask_of_a_plain_model(g):
    sd = SD(g)
    mask = g.add("SleightAddItMask", model=sd.m, samples=sd.g[sd.sample(), 0])
    g.add("PreviewImage", images=sd.g[g.add("MaskToImage", mask=sd.g[mask, 0]), 0])
    return Refused(mask, r"Sleight · Add-it mask: this model does not come from Sleight · Add-it; connect its MODEL")


# DesignEdit
def removal(sd, mask, size=64, **kw):
    lat = sd.latent(size, size)
    rem = remove(sd, invert(sd, sd.g[lat, 0]), mask, **kw)
    sd.save(sd.sample(sd.g[rem, 0], latent=lat, sampler="ddim"))
    return rem


@bad
def remove_empty_mask(g):
    sd = SD(g)
    return Refused(removal(sd, sd.solid(0.0)), r"Sleight · DesignEdit remove: the mask is empty: paint what to remove")


@bad
def remove_mask_of_another_size(g):
    sd = SD(g)
    return Refused(removal(sd, sd.solid(1.0, 32, 48)),
                   r"Sleight · DesignEdit remove: the mask is 32x48 pixels but the latent is 64x64 .*resize it")


@bad
def remove_window_backwards(g):
    sd = SD(g)
    return Refused(removal(sd, sd.partial(), mask_start=0.9, mask_end=0.1),
                   r"Sleight · DesignEdit remove: mask_start/mask_end: window start 0.9 is after its end 0.1; set")


@bad
def remove_source_is_a_latent(g):
    sd = SD(g)
    lat = sd.latent()
    rem = g.add("SleightDesignEditRemove", model=sd.m, source=sd.g[lat, 0], mask=sd.partial(), dilation=20)
    sd.save(sd.sample(sd.g[rem, 0]))
    return Refused(rem, r"source, received_type\(LATENT\) mismatch input_type\(SLEIGHT_TRAJECTORY\)", "validation")


@bad
def remove_sampled_at_another_size(g):
    sd = SD(g)
    rem = remove(sd, invert(sd, sd.g[sd.latent(), 0]), sd.partial())
    ks = sd.sample(sd.g[rem, 0], latent=sd.latent(128, 64), sampler="ddim")
    sd.save(ks)
    return Refused(ks, r"Sleight · DesignEdit remove: the sampled latent .* differs from the source")


@bad
def layer_empty_mask(g):
    sd = SD(g)
    rem = remove(sd, invert(sd, sd.g[sd.latent(), 0]), sd.partial())
    lay = layer(sd, sd.g[sd.latent(), 0], sd.solid(0.0))
    layers = g.add("SleightDesignEditLayers", model=sd.g[rem, 0], layers=sd.g[lay, 0])
    sd.save(sd.sample(sd.g[layers, 0], sampler="ddim"))
    return Refused(lay, r"Sleight · DesignEdit layer: the mask is empty: paint the part of the layer to paste")


@bad
def layer_scale_zero(g):
    sd = SD(g)
    lay = layer(sd, sd.g[sd.latent(), 0], sd.solid(1.0), scale=0.0)
    layers = g.add("SleightDesignEditLayers", model=sd.m, layers=sd.g[lay, 0])
    sd.save(sd.sample(sd.g[layers, 0]))
    return Refused(lay, r"scale.*smaller than min of 0.1", "validation")


@bad
def layers_without_removal(g):
    sd = SD(g)
    lay = layer(sd, sd.g[sd.latent(), 0], sd.solid(1.0))
    layers = g.add("SleightDesignEditLayers", model=sd.m, layers=sd.g[lay, 0])
    sd.save(sd.sample(sd.g[layers, 0]))
    return Refused(layers, r"Sleight · DesignEdit layers: the model has no DesignEdit removal: connect it after")


@bad
def layers_of_another_size(g):
    sd = SD(g)
    rem = remove(sd, invert(sd, sd.g[sd.latent(), 0]), sd.partial())
    lay = layer(sd, sd.g[sd.latent(128, 128), 0], sd.solid(1.0, 128, 128))
    layers = g.add("SleightDesignEditLayers", model=sd.g[rem, 0], layers=sd.g[lay, 0])
    sd.save(sd.sample(sd.g[layers, 0], sampler="ddim"))
    return Refused(layers, r"Sleight · DesignEdit layers: layer 1's latent .* differs from the source .*Encode the layer")


@bad
def layers_moved_off_the_canvas(g):
    sd = SD(g)
    rem = remove(sd, invert(sd, sd.g[sd.latent(), 0]), sd.partial())
    lay = layer(sd, sd.g[sd.latent(), 0], sd.solid(1.0), move_x=4096)
    layers = g.add("SleightDesignEditLayers", model=sd.g[rem, 0], layers=sd.g[lay, 0])
    sd.save(sd.sample(sd.g[layers, 0], sampler="ddim"))
    return Refused(layers, r"Sleight · DesignEdit layers: layer 1 leaves the canvas")


@bad
def zoom_out_nan_scale(g):
    sd = SD(g)
    image, _ = sd.image()
    z = g.add("SleightDesignEditZoomOut", image=image, scale_width=NAN, scale_height=0.8)
    g.add("PreviewImage", images=sd.g[z, 0])
    return Refused(z, r"Sleight · DesignEdit zoom out: scale_width is nan, give a finite number between 0.05 and 1")


@bad
def pan_further_than_the_image(g):
    sd = SD(g)
    image, _ = sd.image()
    p = g.add("SleightDesignEditPan", image=image, move_x=4096, move_y=0)
    g.add("PreviewImage", images=sd.g[p, 0])
    return Refused(p, r"Sleight · DesignEdit pan: a move of \(4096, 0\) px leaves nothing of a 128x128 image")


# noise search
@bad
def search_batch_of_two(g):
    sd = SD(g)
    s = search(sd, sd.latent(batch=2))
    sd.save(s)
    return Refused(s, r"Sleight · Noise search: the latent has a batch of 2; .*use a batch_size of 1")


@bad
def search_huge_budget(g):
    sd = SD(g)
    s = search(sd, budget=10 ** 9)
    sd.save(s)
    return Refused(s, r"budget.*bigger than max of 4096", "validation")


@bad
def search_reference_without_clip_vision(g):
    sd = SD(g)
    s = search(sd, verifier="reference")
    sd.save(s)
    return Refused(s, r"Sleight · Noise search: the reference verifier needs clip_vision, vae and reference_image")


@bad
def search_paths_that_never_finish(g):
    sd = SD(g)
    s = search(sd, mode="paths", renoise_steps=3, denoise_steps=2)
    sd.save(s)
    return Refused(s, r"Sleight · Noise search: denoise_steps \(2\) must exceed renoise_steps \(3\)")


@bad
def search_nan_cosine(g):
    sd = SD(g)
    s = search(sd, mode="zero_order", cosine=NAN)
    sd.save(s)
    return Refused(s, r"Sleight · Noise search: cosine is nan, give a finite number between 0 and 0.9999")


# ------------------------------------------------------------------ odd inputs that must work

GOOD = {}


def good(fn):
    GOOD[fn.__name__] = fn
    return fn


@good
def unicode_prompts_route_and_r2f(g):
    sd = SD(g)
    p = r2f_prompt(sd, "### Input: 一个毛茸茸的汉堡 🍔\n### Final Prompt Sequence: 毛茸茸的东西 BREAK 一个毛茸茸的汉堡\n"
                       "### Visual Detail Level: 3")
    r = r2f(sd, p)
    routed = g.add("SleightPromptRoute", model=sd.g[r, 0], conditioning=sd.g[sd.text("Ωμέγα ✓ «quote»"), 0],
                   layers="custom", custom_layers="*", start_percent=0.0, end_percent=1.0, rows="cond")
    sd.save(sd.sample(sd.g[routed, 0], positive=sd.g[p, 0]))
    return (64, 64)


@good
def odd_size_designedit_zoom_and_remove(g):
    sd = SD(g)
    image, _ = sd.image(67, 131)
    zoom = g.add("SleightDesignEditZoomOut", image=image, scale_width=0.75, scale_height=0.75)
    lat = sd.encode(sd.g[zoom, 0])
    rem = remove(sd, invert(sd, sd.g[lat, 0]), sd.g[zoom, 1], dilation=30)
    sd.save(sd.sample(sd.g[rem, 0], latent=lat, sampler="ddim"))
    return (64, 128)


@good
def odd_size_painta_with_noise_mask(g):
    sd = SD(g)
    image, mask = sd.image(67, 131)
    p = painta(sd, mask)
    lat = g.add("SetLatentNoiseMask", samples=sd.g[sd.encode(image), 0], mask=mask)
    sd.save(sd.sample(sd.g[p, 0], positive=sd.g[p, 1], latent=lat))
    return (64, 128)


@good
def apg_at_cfg_zero(g):
    sd = SD(g)
    sd.save(sd.sample(sd.g[apg(sd), 0], cfg=0.0))
    return (64, 64)


# ------------------------------------------------------------------ the tests

def error_of(server, prompt):
    """("validation", {node id: message}) or ("run", node id, message) or ("ok", result)."""
    try:
        result = server.client.run(prompt, check=False)
    except PromptError as e:
        return "validation", {nid: "; ".join(f"{x.get('details')}: {x.get('message')}" for x in ne.get("errors", []))
                              for nid, ne in (e.body.get("node_errors") or {}).items()}, e.body
    if result.status == "execution_error":
        (err,) = result.of_type("execution_error")
        return "run", err, result
    return result.status, None, result


@pytest.mark.parametrize("name", list(BAD))
def test_bad_prompt_is_refused_naming_the_node_and_the_fix(server, plain, name):
    g = Graph()
    expect = BAD[name](g)
    stage, err, raw = error_of(server, g)
    assert stage == expect.at, f"{name}: expected a {expect.at} error, got {stage}: {err or raw}"
    if stage == "validation":
        assert expect.node in err, f"{name}: the error names other nodes: {err}"
        assert raw["node_errors"][expect.node]["class_type"] == g[expect.node]["class_type"]
        assert re.search(expect.fix, err[expect.node], re.S), f"{name}: {err[expect.node]}"
    else:
        assert (err["node_id"], err["node_type"]) == (expect.node, g[expect.node]["class_type"]), \
            f"{name}: the error is attributed to {err['node_id']} ({err['node_type']}): {err['exception_message']}"
        message = err["exception_message"].strip()
        assert message.startswith("Sleight · ") and "Traceback" not in message, f"{name}: {message}"
        assert re.search(expect.fix, message, re.S), f"{name}: {message}"
        assert not err["exception_type"].startswith(("torch", "builtins.KeyError", "builtins.IndexError")), err
    for ckpt in {tiny_ckpt(SD15), *g.checkpoints()}:
        plain.check(ckpt, f"the bad prompt {name}")


@pytest.mark.parametrize("name", list(GOOD))
def test_odd_but_valid_prompt_runs(server, plain, name, tmp_path):
    g = Graph()
    size = GOOD[name](g)
    result = server.client.run(g)                      # raises with the node's message on any error
    paths = server.client.download_outputs(result.history, tmp_path)
    for (path, *_) in paths.values():
        with Image.open(path) as im:
            assert im.size == size, (name, im.size)
            px = np.asarray(im.convert("RGB"), dtype=np.float32)
        assert math.isfinite(px.mean()) and px.std() > 0, f"{name}: a flat image"
    for ckpt in {tiny_ckpt(SD15), *g.checkpoints()}:
        plain.check(ckpt, f"the prompt {name}")


def test_there_are_forty_bad_prompts_across_every_node(server):
    pack = {k for k, v in server.client.object_info().items() if v.get("python_module", "").endswith("sleight")}
    covered = set()
    for build in BAD.values():
        g = Graph()
        build(g)
        covered |= {n["class_type"] for n in g.values()} & pack
    assert len(BAD) >= 40
    assert covered == pack, f"no bad prompt for {sorted(pack - covered)}"
