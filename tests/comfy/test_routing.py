"""Prompt routing (SleightPromptRoute) and layer search (SleightFindTextLayers) on real ComfyUI, tiny models."""
import pytest
import torch

from sleight.attention_patches.core import layerspec, router
from sleight.attention_patches.core.layerspec import LayerSpecError
from sleight.nodes.routing import SleightFindTextLayers, SleightPromptRoute
from sleight.attention_patches.core import schedule
from sleight.samplers import contact_sheet, find_layers, routing
from tinyrun import encode, load, sample

A = "a sign that says HELLO on a brick wall"
B = "a sign that says WORLD on a brick wall"
NEG = "blurry"
LONG = "a sign that says WORLD on a brick wall, " + ", ".join(["with ivy and moss and old red bricks"] * 12)


def route_node(model, cond, layers="custom", custom="*", start=0.0, end=1.0, rows="cond"):
    return SleightPromptRoute.execute(model, cond, layers, custom, start, end, rows).result[0]


def bid(extra):
    block = extra["block"]
    return f"{block[0]}.{block[1]}.{extra.get('block_index', 0)}"


class Recorder:
    """An attn2_patch of 'another pack': records, per cross-attention call, which prompt each row's context holds.

    Independent of the router: block from ComfyUI's own `block`/`block_index`, roles from `cond_or_uncond`
    (CFGGuider: 0 positive, 1 negative), sigma from `sigmas`.
    """

    def __init__(self, prompts):
        self.prompts = prompts          # name -> (1, L, C) embedding
        self.calls = []

    def __deepcopy__(self, memo):       # 0.3.75 deep-copies model_options on clone: keep one recorder
        return self

    def tag(self, row):
        for name, emb in self.prompts.items():
            if row.shape[0] % emb.shape[1] == 0 and torch.equal(row, emb[0].repeat(row.shape[0] // emb.shape[1], 1)):
                return name
        return "?"

    def __call__(self, n, context, value, extra):
        per = context.shape[0] // len(extra["cond_or_uncond"])
        roles = [{0: "cond", 1: "uncond"}[c] for c in extra["cond_or_uncond"] for _ in range(per)]
        tags = [self.tag(context[i]) for i in range(context.shape[0])]
        vtags = tags if value is context else [self.tag(value[i]) for i in range(value.shape[0])]
        self.calls.append(dict(block=bid(extra), sigma=float(extra["sigmas"].max()), roles=roles, tags=tags,
                               vtags=vtags, length=context.shape[1]))
        return n, context, value


def embeddings(clip, *texts):
    return {t: encode(clip, t)[0][0] for t in texts}


# ------------------------------------------------------------------ equivalences

@pytest.mark.parametrize("name", ["sd15", "sdxl"])
def test_routing_the_main_prompt_is_bit_identical_and_another_prompt_changes_the_image(name):
    model, clip, _ = load(name)
    pos, neg = encode(clip, A), encode(clip, NEG)
    base = sample(model, pos, neg, steps=2)
    assert torch.equal(sample(route_node(model, pos, custom="*"), pos, neg, steps=2), base)
    assert torch.equal(sample(route_node(model, neg, custom="*", rows="cond and uncond"), neg, neg, steps=2),
                       sample(model, neg, neg, steps=2))
    routed = sample(route_node(model, encode(clip, B), custom="middle.0"), pos, neg, steps=2)
    assert not torch.allclose(routed, base, atol=1e-4)


def test_long_routed_prompt_is_lcm_padded_like_comfyui_batches_prompts():
    """B (154 tokens) routed everywhere into the cond rows == sampling with B as the positive prompt, where ComfyUI
    itself repeats the 77-token negative to 154 tokens in the same batch (SD1.5: the prompt only reaches attn2)."""
    model, clip, _ = load("sd15")
    pos, neg, long = encode(clip, A), encode(clip, NEG), encode(clip, LONG)
    assert long[0][0].shape[1] == 154 and pos[0][0].shape[1] == 77
    ref = sample(model, long, neg, steps=2)
    assert torch.equal(sample(route_node(model, long, custom="*"), pos, neg, steps=2), ref)
    # the other way round: a 77-token routed prompt in a 154-token batch is repeated to 154 tokens, which is the
    # same as giving that prompt repeated by hand, and equal to the 77-token prompt up to float summation order
    got = sample(route_node(model, pos, custom="*"), long, neg, steps=2)
    repeated = [[pos[0][0].repeat(1, 2, 1), dict(pos[0][1])]]
    assert torch.equal(got, sample(model, repeated, neg, steps=2))
    short_ref = sample(model, pos, neg, steps=2)
    torch.testing.assert_close(got, short_ref, rtol=1e-5, atol=1e-5 * float(short_ref.abs().max()))
    assert not torch.allclose(ref, short_ref, rtol=1e-3, atol=1e-3 * float(short_ref.abs().max()))


def test_long_routed_prompt_on_sdxl_equals_the_explicit_repeated_context_reference():
    model, clip, _ = load("sdxl")
    pos, neg, long = encode(clip, A), encode(clip, NEG), encode(clip, LONG)
    emb = long[0][0]
    chosen = {"input.7.2", "input.7.3", "output.2.0"}

    def reference(n, context, value, extra):     # written out by hand: repeat to 154, put B in the cond rows
        if bid(extra) not in chosen:
            return n, context, value
        per = context.shape[0] // len(extra["cond_or_uncond"])
        ctx = torch.cat([context, context], dim=1)
        for i, c in enumerate(extra["cond_or_uncond"]):
            if c == 0:
                ctx[i * per:(i + 1) * per] = emb.to(ctx.dtype)
        return n, ctx, ctx

    ref_model = model.clone()
    ref_model.set_model_attn2_patch(reference)
    ref = sample(ref_model, pos, neg, steps=2, batch=2)
    got = sample(route_node(model, long, custom="input.7.2-3, output.2"), pos, neg, steps=2, batch=2)
    assert torch.equal(got, ref)
    assert not torch.allclose(got, sample(model, pos, neg, steps=2, batch=2), atol=1e-4)


# ------------------------------------------------------------------ instrumented: where, which rows, when

@pytest.mark.parametrize("name,spec,rows,batch", [
    ("sd15", "input.1.0, output.1", "cond", 1),
    ("sdxl", "input.7.2-3, output.2", "cond and uncond", 2),
])
def test_only_chosen_blocks_rows_and_window_receive_the_routed_prompt(name, spec, rows, batch):
    model, clip, _ = load(name)
    pos, neg, b = encode(clip, A), encode(clip, NEG), encode(clip, B)
    m = route_node(model, b, custom=spec, start=0.3, end=0.8, rows=rows)
    rec = Recorder(embeddings(clip, A, NEG, B))
    m.set_model_attn2_patch(rec)                     # runs after ours: sees what reaches attention
    sample(m, pos, neg, steps=4, batch=batch)
    chosen = set(layerspec.resolve(spec, layerspec.block_ids(routing.text_layers(model), ("cross",))))
    ms = model.get_model_object("model_sampling")
    lo, hi = ms.percent_to_sigma(0.8), ms.percent_to_sigma(0.3)
    routed_roles = routing.ROWS[rows]
    seen = {"routed": 0, "window": 0, "block": 0}
    for call in rec.calls:
        inside = lo <= call["sigma"] <= hi
        for role, tag, vtag in zip(call["roles"], call["tags"], call["vtags"]):
            expect_b = call["block"] in chosen and inside and role in routed_roles
            own = A if role == "cond" else NEG
            assert tag == vtag == (B if expect_b else own), (call["block"], call["sigma"], role)
            seen["routed"] += expect_b
            seen["window"] += call["block"] in chosen and not inside
            seen["block"] += call["block"] not in chosen and inside
    assert all(seen.values()), seen                  # every case actually occurred
    assert len({c["sigma"] for c in rec.calls}) == 4


def test_sdxl_paper_preset_is_the_56th_to_58th_cross_attention_call():
    """On the 70-block SDXL layout: the preset resolves to output.2.1-3, and counting cross-attention calls in forward
    order during a real sample (ComfyUI's own block ids, not arch.list_layers) puts them at indices 55-57."""
    model, clip, _ = load("sdxl_layout")
    want = ["output.2.1", "output.2.2", "output.2.3"]
    assert routing.resolve_blocks(model, "SDXL text (paper)") == want
    assert routing.resolve_blocks(model, routing.AUTO) == want
    pos, neg, b = encode(clip, A), encode(clip, NEG), encode(clip, B)
    m = route_node(model, b, layers="SDXL text (paper)", start=0.0)
    rec = Recorder(embeddings(clip, A, NEG, B))
    m.set_model_attn2_patch(rec)
    sample(m, pos, neg, steps=1)
    assert len(rec.calls) == 70
    routed = [i for i, c in enumerate(rec.calls) if B in c["tags"]]
    assert routed == [55, 56, 57]
    assert [rec.calls[i]["block"] for i in routed] == want
    assert all(c["tags"][c["roles"].index("uncond")] == NEG for c in rec.calls)


def test_default_start_is_the_papers_step_4_of_50():
    model, _, _ = load("sdxl")
    import comfy.samplers

    ms = model.get_model_object("model_sampling")
    start = SleightPromptRoute.GET_SCHEMA().inputs[4]
    assert start.id == "start_percent" and start.default == 0.08
    window = schedule.Window(start.default, 1.0)
    for scheduler in ("normal", "simple", "sgm_uniform", "ddim_uniform"):
        sigmas = comfy.samplers.calculate_sigmas(ms, scheduler, 50)
        active = [window.contains(ms, s) for s in sigmas[:-1]]
        assert active.index(True) == 4 and all(active[4:]), scheduler


# ------------------------------------------------------------------ errors, composition, isolation

def test_bad_specs_and_mismatched_prompts_fail_clearly():
    sdxl, sdxl_clip, _ = load("sdxl")
    _, sd15_clip, _ = load("sd15")
    b = encode(sdxl_clip, B)
    with pytest.raises(LayerSpecError, match=r"'output\.9\.0' matches no layer.*Valid block ids: input\.4\.0-1, "):
        route_node(sdxl, b, custom="output.9.0")
    with pytest.raises(LayerSpecError, match="layer spec is empty"):
        route_node(sdxl, b, custom="  ")
    with pytest.raises(LayerSpecError, match=r"SDXL text \(paper\).*31 cross-attention layers.*Valid block ids"):
        route_node(sdxl, b, layers=routing.AUTO)     # the tiny SDXL is not SDXL base's 70-layer layout
    with pytest.raises(LayerSpecError, match=r"SD3 text \(paper\).*this model is SDXL"):
        route_node(sdxl, b, layers="SD3 text (paper)")
    with pytest.raises(ValueError, match="768-wide but this model's cross-attention takes 2048"):
        route_node(sdxl, encode(sd15_clip, B), custom="middle")
    with pytest.raises(ValueError, match="holds 2 entries"):
        route_node(sdxl, b + encode(sdxl_clip, A), custom="middle")
    with pytest.raises(ValueError, match="start_percent 0.9 is after end_percent 0.2"):
        route_node(sdxl, b, custom="middle", start=0.9, end=0.2)
    sd15, clip, _ = load("sd15")
    with pytest.raises(LayerSpecError, match="no paper text layers are known for SD1.5.*Valid block ids: input.1.0"):
        route_node(sd15, encode(clip, B), layers=routing.AUTO)


def test_dit_architectures_route_through_text_kv():
    model, clip, _ = load("sd3")
    b = encode(clip, B)
    with pytest.raises(LayerSpecError, match=r"SD3 text \(paper\).*24 joint-attention layers.*2 joint"):
        route_node(model, b, layers=routing.AUTO)
    out = route_node(model, b, custom="joint.*", start=0.2, rows="cond and uncond")
    effect = router.current_router(out).effects[0]
    assert effect.blocks == {"joint.0", "joint.1"} and effect.window == schedule.Window(0.2, 1.0)
    assert effect.roles == ("cond", "uncond")
    pos, neg = encode(clip, A), encode(clip, NEG)
    assert not torch.equal(sample(out, pos, neg, steps=2), sample(model, pos, neg, steps=2))


def test_original_model_untouched_and_other_attn2_patches_still_run():
    model, clip, _ = load("sd15")
    pos, neg, b = encode(clip, A), encode(clip, NEG), encode(clip, B)
    before = repr(model.model_options)
    base = sample(model, pos, neg, steps=2)
    earlier = Recorder(embeddings(clip, A, NEG, B))
    other = model.clone()
    other.set_model_attn2_patch(earlier)             # another pack's patch, installed before ours
    m = route_node(other, b, custom="*")
    twice = route_node(m, pos, custom="middle")      # a second route on top: both patches chain, the later wins
    rec = Recorder(embeddings(clip, A, NEG, B))
    twice.set_model_attn2_patch(rec)
    sample(twice, pos, neg, steps=2)
    assert earlier.calls and all(t in (A, NEG) for c in earlier.calls for t in c["tags"])
    by_block = {c["block"]: c["tags"][c["roles"].index("cond")] for c in rec.calls}
    assert by_block == {"input.1.0": B, "middle.0.0": A, "output.0.0": B, "output.1.0": B}
    assert repr(model.model_options) == before and "attn2_patch" not in repr(model.model_options)
    assert torch.equal(sample(model, pos, neg, steps=2), base)
    patches = lambda x: x.model_options["transformer_options"]["patches"]["attn2_patch"]  # noqa: E731
    assert len(patches(other)) == 1 and len(patches(m)) == 2 and len(patches(twice)) == 4


# ------------------------------------------------------------------ SleightFindTextLayers

def find(model, clip, **kw):
    args = dict(positive=encode(clip, A), routed=encode(clip, B), negative=encode(clip, NEG), seed=3, steps=1,
                cfg=3.0, sampler_name="euler", scheduler="normal", width=64, height=64, granularity="layer",
                max_candidates=100, top_k=3, start_percent=0.0, search_layers="*")
    args.update(kw)
    out = SleightFindTextLayers.execute(model, **args)
    return out.result, out.ui


def table_rows(table):
    rows = []
    for line in table.splitlines():
        parts = line.split()
        if parts and parts[0].isdigit():
            rows.append((int(parts[0]), parts[1], float(parts[2])))
    return rows


def only_block_matters(model, keep):
    """A model whose cross-attention output is zero everywhere but in `keep`: only there can a prompt matter."""
    m = model.clone()

    def zero_elsewhere(n, extra):
        return n if bid(extra) in keep else torch.zeros_like(n)

    m.set_model_attn2_output_patch(zero_elsewhere)
    return m


@pytest.mark.parametrize("granularity,search,keep,first", [
    ("layer", "input.7.1-4", {"input.7.3"}, "input.7.3"),
    ("block", "input.7-8, middle, output.0-2", {"input.7.3"}, "input.7"),
])
def test_find_ranks_the_only_block_that_matters_first(granularity, search, keep, first):
    model, clip, _ = load("sdxl")
    m = only_block_matters(model, keep)
    (table, spec, sheet), ui = find(m, clip, granularity=granularity, search_layers=search, top_k=1)
    rows = table_rows(table)
    n = 4 if granularity == "layer" else 6
    assert [r[0] for r in rows] == list(range(1, n + 1))
    assert rows[0][1] == first and rows[0][2] > 0
    assert all(r[2] == 0 for r in rows[1:])          # routing into a block that cannot matter changes nothing
    assert [r[2] for r in rows] == sorted((r[2] for r in rows), reverse=True)
    assert spec == first
    assert layerspec.resolve(spec, layerspec.block_ids(routing.text_layers(model))) == \
        layerspec.resolve(first, layerspec.block_ids(routing.text_layers(model)))
    assert sheet.shape[0] == 1 and sheet.shape[-1] == 3 and ui.as_dict()["text"] == (table,)


def test_find_progress_vae_sheet_mask_and_truncation():
    import comfy.utils

    model, clip, vae = load("sd15")
    ticks = []
    mask = torch.zeros(64, 64)
    mask[:, :32] = 1
    previous = comfy.utils.PROGRESS_BAR_HOOK
    comfy.utils.set_progress_bar_global_hook(lambda value, total, preview, node_id=None: ticks.append((value, total)))
    try:
        (table, spec, sheet), _ = find(model, clip, vae=vae, mask=mask, max_candidates=3, top_k=2)
    finally:
        comfy.utils.set_progress_bar_global_hook(previous)
    assert ticks == [(i, 5) for i in range(1, 6)]    # baseline, B everywhere, 3 candidates
    assert "first 3 of 4" in table and "inside − outside" in table
    rows = table_rows(table)
    assert sorted(r[1] for r in rows) == ["input.1.0", "middle.0.0", "output.0.0"]
    ranked = [line.split() for line in table.splitlines() if line.split() and line.split()[0].isdigit()]
    assert len(ranked) == 3
    for parts in ranked:
        score, inside, outside = float(parts[2]), float(parts[-2]), float(parts[-1])
        assert score == pytest.approx(inside - outside, rel=1e-4, abs=1e-9)
    assert len(layerspec.resolve(spec, layerspec.block_ids(routing.text_layers(model)))) == 2
    # 5 tiles of 256 px in a 3x2 grid, each with a 16 px label strip; decoded by the VAE (not a latent preview)
    assert tuple(sheet.shape) == (1, 2 * (256 + 16), 3 * 256, 3)
    assert 0.0 <= float(sheet.min()) and float(sheet.max()) <= 1.0


def test_find_is_interruptible_and_fails_clearly():
    import comfy.model_management as mm
    import comfy.utils

    model, clip, _ = load("sd15")
    ticks = []

    def hook(value, total, preview, node_id=None):
        ticks.append(value)
        mm.interrupt_current_processing(True)

    previous = comfy.utils.PROGRESS_BAR_HOOK
    comfy.utils.set_progress_bar_global_hook(hook)
    try:
        with pytest.raises(mm.InterruptProcessingException):
            find(model, clip)
    finally:
        comfy.utils.set_progress_bar_global_hook(previous)
        mm.interrupt_current_processing(False)
    assert ticks == [1]
    with pytest.raises(ValueError, match="the mask is empty"):
        find(model, clip, mask=torch.zeros(64, 64))
    with pytest.raises(ValueError, match="Find text layers: the mask is 32x48 pixels but the latent is 64x64"):
        find(model, clip, mask=torch.ones(1, 48, 32))
    with pytest.raises(LayerSpecError, match="'output.7' matches no layer"):
        find(model, clip, search_layers="output.7")


def test_change_scores_rank_inside_minus_outside():
    base = torch.zeros(1, 4, 8, 8)
    inside_only, outside_only = base.clone(), base.clone()
    inside_only[..., :4] = 1.0
    outside_only[..., 4:] = 1.0
    w = torch.zeros(8, 8)
    w[:, :4] = 1
    s_in, s_out = find_layers.change_scores(base, inside_only, w), find_layers.change_scores(base, outside_only, w)
    assert s_in["score"] == 1.0 and s_out["score"] == -1.0 and s_in["overall"] == s_out["overall"] == 0.5
    assert find_layers.change_scores(base, inside_only)["score"] == 0.5
    assert tuple(find_layers.mask_weights(torch.ones(1, 64, 64), (8, 8)).shape) == (8, 8)


def test_latent_preview_without_vae():
    model, _, _ = load("sd15")
    img = contact_sheet.latent_preview(model, torch.randn(1, 4, 8, 8))
    assert tuple(img.shape) == (8, 8, 3) and float(img.min()) >= 0 and float(img.max()) <= 1
    sheet = contact_sheet.contact_sheet([("A (baseline)", img), ("#1 x", img)], box=64)
    assert tuple(sheet.shape) == (1, 64 + 16, 2 * 64, 3)
