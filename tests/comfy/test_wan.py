"""What is specific to the Wan family, checked against what ComfyUI's WanModel really computes (the family battery in
test_families.py covers what every family shares).

- the self-attention tokens are the whole (t, h, w) volume in that order (one latent pixel moved → one token moved);
- the cross-attention keys are the prompt's text embedding projected by the layer (what routing swaps in);
- routing a prompt into every cross-attention layer of the cond rows is sampling with that prompt;
- Wan 2.1 I2V: a vision call before the text call in every block, on the CLIP-vision tokens;
- Wan 2.2 TI2V 5B: 48 channels at 1/16, the same token layout;
- Wan 2.2 A14B: two experts sampled by two samplers; a routing window in schedule percent acts per model call
  whichever expert runs it;
- where a prompt's words land in umT5's output (the encoder zeroes what follows the end token);
- the CLIP verifiers of noise search score video frame by frame.
"""
import math

import pytest
import torch

import comfy.sample
import tiny_models
from comfy_extras.nodes_wan import WanImageToVideo
from sleight.attention_patches.core import families, router, schedule, tokens
from sleight.nodes.guidance import SleightAPG
from sleight.nodes.routing import SleightPromptRoute
from sleight.samplers import verifiers
from tinyrun import FRAMES, Probe, encode, latent_for, load, text_seen_by_model

SIZE = 64
A, B = "a red circle on a blue background", "a green square on a yellow background"


def sample(model, pos, neg, latent=None, seed=3, steps=2, cfg=3.0, **kw):
    latent = latent_for(model, size=SIZE) if latent is None else latent
    noise = kw.pop("noise", None)
    noise = comfy.sample.prepare_noise(latent, seed) if noise is None else noise
    return comfy.sample.sample(model, noise, steps, cfg, "euler", "normal", pos, neg, latent, disable_pbar=True,
                               seed=seed, **kw)


def probed(model, where=lambda call: False):
    probe = Probe(where=where)
    m = model.clone()
    router.install(m, probe)
    return m, probe


def bhld(t, heads):
    return t.reshape(t.shape[0], t.shape[1], heads, -1).transpose(1, 2)


@pytest.fixture(scope="module")
def t2v():
    model, clip, vae = load("wan21_t2v")
    return model, clip, vae, encode(clip, A), encode(clip, "")


def test_self_attention_runs_over_the_token_volume_in_t_h_w_order(t2v):
    model, _, _, pos, neg = t2v
    latent = latent_for(model, size=SIZE)
    assert latent.ndim == 5 and latent.shape[2] == (FRAMES - 1) // 4 + 1
    noise = comfy.sample.prepare_noise(latent, 1)
    moved = noise.clone()
    t, y, x = latent.shape[2] - 1, 4, 6                  # one latent pixel of the last frame
    moved[0, :, t, y, x] += 1.0
    firsts = []
    for n in (noise, moved):
        m, probe = probed(model)
        sample(m, pos, neg, latent, steps=1, noise=n)
        firsts.append(probe.forwards()[0][0])           # blocks.0 self-attention of the first forward
    a, b = firsts
    assert (a.block, a.kind) == ("blocks.0", "self")
    gt, gh, gw = a.grid
    assert a.grid == (latent.shape[2], math.ceil(latent.shape[3] / 2), math.ceil(latent.shape[4] / 2))
    assert a.q.shape[2] == gt * gh * gw == a.img.stop - a.img.start
    changed = (a.q != b.q).any(dim=-1).any(dim=1).any(dim=0).nonzero().flatten().tolist()
    assert changed == [t * gh * gw + (y // 2) * gw + x // 2]   # patch (1, 2, 2), frames outermost


def test_cross_attention_keys_are_the_prompt_projected_by_the_layer(t2v):
    model, _, _, pos, neg = t2v
    family = families.detect(model)
    m, probe = probed(model)
    sample(m, pos, neg, steps=1)
    calls = probe.forwards()[0]
    assert [c.kind for c in calls] == ["self", "cross"] * len(model.model.diffusion_model.blocks)
    dm = model.model.diffusion_model
    for call in (c for c in calls if c.kind == "cross"):
        cond = call.rows["cond"]
        k, v = family.context_kv(dm, [call.block], pos[0][0].to(call.k))[call.block]
        torch.testing.assert_close(call.k[cond], bhld(k, call.heads), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(call.v[cond], bhld(v, call.heads), rtol=1e-5, atol=1e-5)
        assert call.txt == slice(0, call.k.shape[2]) and call.k.shape[2] == pos[0][0].shape[1] == 512


def test_routing_into_every_block_is_sampling_with_the_routed_prompt(t2v):
    model, clip, _, pos, neg = t2v
    b = encode(clip, B)
    routed = SleightPromptRoute.execute(model, b, "custom", "*", 0.0, 1.0, "cond").result[0]
    torch.testing.assert_close(sample(routed, pos, neg), sample(model, b, neg), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(sample(model, pos, neg), sample(model, b, neg))


def test_the_subject_lands_where_the_encoder_ends_the_prompt(t2v):
    """umT5 is bidirectional (every row changes with any word), but the encoder zeroes every row after the end
    token: a prompt ending in the subject has its last nonzero row right after the subject's last token."""
    model, clip, _, _, _ = t2v
    family = families.detect(model)
    prompt = "a red circle and a cat"
    text = text_seen_by_model(model, clip, prompt)
    nonzero = text.abs().sum(-1).nonzero().flatten().tolist()
    positions = tokens.subject_positions(clip, prompt, "cat", family, "test")
    assert nonzero == list(range(positions[-1] + 2))          # the prompt's tokens and its end token


def test_i2v_attends_to_the_clip_vision_tokens_before_the_text():
    model, clip, vae = load("wan21_i2v")
    family = families.detect(model)
    cv = tiny_models.clip_vision("wan-clip-vision", tiny_models.WAN_CLIP_VISION)
    image = torch.rand(1, SIZE, SIZE, 3, generator=torch.Generator().manual_seed(0))
    clip_out = cv.encode_image(image, crop=True)
    pos, neg, latent = WanImageToVideo.execute(encode(clip, A), encode(clip, ""), vae, SIZE, SIZE, FRAMES, 1,
                                               clip_vision_output=clip_out, start_image=image).result
    m, probe = probed(model)
    out = sample(m, pos, neg, latent["samples"], steps=1)
    calls = probe.forwards()[0]
    layers = families.layers(model, SIZE, SIZE, frames=FRAMES)
    assert [(c.block, c.kind) for c in calls] == [(layer.block, layer.kind) for layer in layers]
    assert [c.kind for c in calls[:3]] == ["self", "vision", "cross"] and family.label == "Wan 2.1 I2V"
    dm = model.model.diffusion_model
    clip_fea = clip_out.penultimate_hidden_states
    tokens_img = dm.img_emb(clip_fea.to(calls[1].k))
    for call in (c for c in calls if c.kind == "vision"):
        ca = dm.blocks[int(call.block.split(".")[1])].cross_attn
        want = bhld(ca.norm_k_img(ca.k_img(tokens_img)), call.heads)
        assert call.k.shape[2] == clip_fea.shape[1] == 257
        torch.testing.assert_close(call.k[call.rows["cond"]], want.expand(len(call.rows["cond"]), -1, -1, -1),
                                   rtol=1e-5, atol=1e-5)
    routed = SleightPromptRoute.execute(m, encode(clip, B), "custom", "*", 0.0, 1.0, "cond").result[0]
    assert not torch.equal(sample(routed, pos, neg, latent["samples"], steps=1), out)
    again = [c for c in probe.forwards()[-1] if c.kind == "vision"]      # the vision calls are never routed
    assert all(torch.equal(c.k, d.k) for c, d in zip(again, (c for c in calls if c.kind == "vision")))


def test_wan22_5b_runs_48_channels_at_a_sixteenth():
    model, clip, vae = load("wan22_5b")
    family = families.detect(model)
    assert (family.label, family.downscale) == ("Wan 2.2 5B", 16)
    pos, neg = encode(clip, A), encode(clip, "")
    latent = latent_for(model, size=SIZE)
    assert tuple(latent.shape) == (1, 48, 2, SIZE // 16, SIZE // 16)
    m, probe = probed(model)
    base = sample(m, pos, neg, latent)
    assert probe.forwards()[0][0].grid == (2, SIZE // 32, SIZE // 32)
    apg = SleightAPG.execute(model, 0.0, -0.5, 15.0, 0.0, 1.0, 0, 0.0, False).result[0]
    assert not torch.equal(sample(apg, pos, neg, latent), base)
    route = SleightPromptRoute.execute(model, encode(clip, B), "custom", "*", 0.0, 1.0, "cond").result[0]
    assert not torch.equal(sample(route, pos, neg, latent), base)
    assert tuple(vae.decode(base).shape) == (1, FRAMES, SIZE, SIZE, 3)


def test_a14b_experts_route_by_schedule_percent_whoever_samples():
    """The A14B pair as ComfyUI's template runs it: the high-noise expert takes the first steps (KSamplerAdvanced,
    leftover noise returned), the low-noise expert the rest. Each expert gets its own routing node with one window;
    a model call routes exactly when its sigma lies in the window, in either expert's run."""
    (high, clip, _), (low, _, _) = load("wan21_t2v"), load("wan22_a14b_low")      # two Wan 2.1-shaped experts
    pos, neg, b = encode(clip, A), encode(clip, ""), encode(clip, B)
    window = schedule.Window(0.2, 0.5)
    steps, split = 6, 3
    seen = []
    family = families.detect(high)

    def routed_model(model):
        probe = Probe(where=lambda call: call.block == "blocks.0" and call.kind == "cross")
        m = SleightPromptRoute.execute(model, b, "custom", "*", window.start_percent, window.end_percent,
                                       "cond").result[0]
        router.install(m, probe)            # after the route: it sees the calls as routing hands them on
        return m, probe

    def which(model, probe, name):
        dm = model.model.diffusion_model
        k_b, k_a = (family.context_kv(dm, ["blocks.0"], c[0][0])["blocks.0"][0] for c in (b, pos))
        for call in probe.ran:
            k = call.k[call.rows["cond"]][0]
            is_routed = torch.allclose(k, bhld(k_b, call.heads)[0], atol=1e-5)
            assert is_routed or torch.allclose(k, bhld(k_a, call.heads)[0], atol=1e-5)
            seen.append((name, call.sigma, is_routed))

    latent = latent_for(high, size=SIZE)
    noise = comfy.sample.prepare_noise(latent, 4)
    (mh, ph), (ml, pl) = routed_model(high), routed_model(low)
    mid = comfy.sample.sample(mh, noise, steps, 3.0, "euler", "simple", pos, neg, latent, disable_pbar=True, seed=4,
                              start_step=0, last_step=split, force_full_denoise=False)
    comfy.sample.sample(ml, noise, steps, 3.0, "euler", "simple", pos, neg, mid, disable_pbar=True, seed=4,
                        start_step=split, last_step=steps, disable_noise=True)
    which(high, ph, "high")
    which(low, pl, "low")
    ms = high.get_model_object("model_sampling")
    assert {name for name, _, _ in seen} == {"high", "low"}
    assert all(routed == window.contains(ms, sigma) for _, sigma, routed in seen)
    assert {(name, routed) for name, _, routed in seen} == {("high", True), ("high", False), ("low", True),
                                                           ("low", False)}


def test_clip_verifiers_score_video_frame_by_frame(t2v):
    model, _, vae, pos, neg = t2v
    latents = torch.cat([sample(model, pos, neg, seed=s) for s in (1, 2)])
    early = torch.cat([sample(model, pos, neg, seed=s, steps=1) for s in (1, 2)])
    cv = tiny_models.clip_vision()
    got = verifiers.SelfConsistencyClip(cv)(verifiers.Candidates(latents, early, vae.decode))
    frames = [vae.decode(x) for x in (early, latents)]
    assert frames[0].shape[:2] == (2, FRAMES)
    emb = [cv.encode_image(f.reshape(-1, *f.shape[2:]), crop=True)["image_embeds"].double().reshape(2, FRAMES, -1)
           for f in frames]
    want = torch.nn.functional.cosine_similarity(emb[0], emb[1], dim=-1).mean(1)
    torch.testing.assert_close(got.double(), want, rtol=1e-6, atol=1e-6)
    ref = torch.rand(1, SIZE, SIZE, 3, generator=torch.Generator().manual_seed(1))
    score = verifiers.ReferenceSimilarity(cv, ref)(verifiers.Candidates(latents, None, vae.decode))
    r = cv.encode_image(ref, crop=True)["image_embeds"].double()
    want = torch.nn.functional.cosine_similarity(emb[1], r[None].expand_as(emb[1]), dim=-1).mean(1)
    torch.testing.assert_close(score.double(), want, rtol=1e-6, atol=1e-6)


def test_find_text_layers_ranks_the_cross_attention_blocks(t2v):
    """Sleight · Find text layers on Wan: one candidate per cross-attention block (a one-frame clip, as the node makes
    an image-sized latent), decoded frames on the sheet."""
    from sleight.nodes.routing import SleightFindTextLayers

    model, clip, vae, pos, neg = t2v
    table, spec, sheet = SleightFindTextLayers.execute(model, pos, encode(clip, B), neg, 1, 2, 3.0, "euler", "normal",
                                                       SIZE, SIZE, "layer", 10, 1, vae=vae).result
    ranked = [line.split()[1] for line in table.splitlines() if line.strip()[:1].isdigit()]
    assert sorted(ranked) == ["blocks.0", "blocks.1"] and spec in ranked
    assert sheet.ndim == 4 and sheet.shape[-1] == 3
