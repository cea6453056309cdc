"""HiDream: the adapter's block order, token layout and per-block text against what ComfyUI's model really does.

Forward hooks read the model's own tensors (nothing of ComfyUI is replaced): the calls the router sees are the
attention modules of the double- then single-stream blocks, image tokens first; each block's text is T5, the
Llama's last layer and that block's own Llama layer (`llama_layers`), projected by the model's caption projections.
"""
import pytest
import torch

import comfy.patcher_extension as pe
import comfy.sample
from sleight.attention_patches.core import families, router, tokens
from sleight.nodes.prompt import SleightRareToFrequent
from test_families import A, B
from tinyrun import Probe, encode, latent_for, load


def one_step(model, positive):
    latent = latent_for(model)
    return comfy.sample.sample(model, comfy.sample.prepare_noise(latent, 0), 1, 1.0, "euler", "normal", positive,
                               positive, latent, disable_pbar=True, seed=0)


def test_blocks_token_layout_and_the_text_each_block_gets():
    model, clip, _ = load("hidream")
    dm = model.model.diffusion_model
    family = families.detect(model)
    blocks = [(f"double.{i}", b) for i, b in enumerate(dm.double_stream_blocks)] + \
             [(f"single.{i}", b) for i, b in enumerate(dm.single_stream_blocks)]
    attn, block_in, conds, handles = [], {}, {}, []
    for name, b in blocks:
        handles.append(b.block.attn1.register_forward_hook(
            lambda mod, args, out, n=name: attn.append((n, args[0].shape[1], args[2].shape[1] if len(args) > 2 else 0))))
        handles.append(b.register_forward_pre_hook(
            lambda mod, args, kwargs, n=name: block_in.__setitem__(n, kwargs), with_kwargs=True))
    handles.append(dm.register_forward_pre_hook(lambda mod, args, kwargs: conds.update(kwargs), with_kwargs=True))
    probe = Probe(where=lambda call: False)
    m = model.clone()
    router.install(m, probe)
    try:
        with torch.inference_mode():
            one_step(m, encode(clip, A))
    finally:
        for h in handles:
            h.remove()
    calls = probe.forwards()[0]
    assert [c.block for c in calls] == [n for n, _, _ in attn] == [n for n, _ in blocks]
    n_img = block_in["double.0"]["image_tokens"].shape[1]
    layers = conds["encoder_hidden_states_llama3"].movedim(1, 0)
    with torch.inference_mode():
        proj = [dm.caption_projection[i](layers[k]) for i, k in enumerate(dm.llama_layers)]
        t5 = dm.caption_projection[-1](conds["context"])
    n_t5, n_llama = t5.shape[1], proj[0].shape[1]
    for call, (name, q_img, q_txt) in zip(calls, attn):
        assert call.q.shape[2] == q_img + q_txt                          # double: [image | text]; single: the stream
        assert call.img == slice(0, n_img) and call.grid[0] * call.grid[1] == n_img
        assert call.txt == slice(n_img, n_img + n_t5 + 2 * n_llama)
    # the text stream starts as [T5 | Llama's last layer] and each block appends its own Llama layer
    torch.testing.assert_close(block_in["double.0"]["text_tokens"], torch.cat([t5, proj[-1], proj[0]], dim=1))
    for i, (name, _) in enumerate(blocks):
        stream = block_in[name]["text_tokens" if name.startswith("double") else "image_tokens"]
        assert stream.shape[1] - (0 if name.startswith("double") else n_img) == n_t5 + 2 * n_llama
        torch.testing.assert_close(stream[:, -n_llama:], proj[i])
    assert family.text_length(conds["context"], conds) == n_t5 + 2 * n_llama


def test_a_subject_lands_in_t5_and_in_both_llama_copies():
    model, clip, _ = load("hidream")
    family = families.detect(model)
    positions = tokens.subject_positions(clip, B, "cat", family, "test")
    cat, dog = encode(clip, B), encode(clip, B.replace("cat", "dog"))
    n_t5, n_llama = cat[0][0].shape[1], cat[0][1]["conditioning_llama3"].shape[2]
    assert len(positions) == 3 and positions[0] < n_t5 <= positions[1] < n_t5 + n_llama <= positions[2]
    # the Llama is causal: its hidden states first differ at the subject's row, in every layer
    differs = (cat[0][1]["conditioning_llama3"] != dog[0][1]["conditioning_llama3"]).any(-1).any(1)[0]
    first = int(differs.nonzero()[0])
    assert positions[1] == n_t5 + first and positions[2] == n_t5 + n_llama + first
    t5_ids = [t for chunk in clip.tokenize(B)["t5xxl"] for t, *_ in chunk]
    assert "cat" in clip.tokenizer.t5xxl.inv_vocab[t5_ids[positions[0]]]


def test_hidream_e1s_edit_input_is_refused_by_name():
    model, clip, _ = load("hidream")
    m = model.clone()
    router.install(m, Probe(where=lambda call: False))
    emb, extra = encode(clip, A)[0]
    edit = [[emb, {**extra, "concat_latent_image": latent_for(model)}]]
    with pytest.raises(ValueError, match="HiDream-E1"):
        one_step(m, edit)


def test_rare_to_frequent_interpolates_t5_pooled_and_the_llama_layers():
    """R2F's interpolation (HiDream-I1 Dev / Fast are few-step) reaches every text input: T5, the pooled CLIPs and
    the Llama layers, which travel outside the embedding."""
    model, clip, _ = load("hidream")
    rare, freq = encode(clip, A), encode(clip, B)
    m = SleightRareToFrequent.execute(model, rare, freq, 1, "interpolate", -1.0, "auto", "0.3").result[0]
    seen = []

    def spy(executor, x, t, c_concat=None, c_crossattn=None, control=None, transformer_options={}, **kwargs):
        seen.append((c_crossattn, kwargs["y"], kwargs["encoder_hidden_states_llama3"]))
        return executor(x, t, c_concat, c_crossattn, control, transformer_options, **kwargs)

    m.add_wrapper_with_key(pe.WrappersMP.APPLY_MODEL, "test.spy", spy)
    one_step(m, rare)
    (t5, pooled, llama), = seen
    torch.testing.assert_close(t5, 0.3 * freq[0][0] + 0.7 * rare[0][0])
    torch.testing.assert_close(pooled, 0.3 * freq[0][1]["pooled_output"] + 0.7 * rare[0][1]["pooled_output"])
    want = 0.3 * freq[0][1]["conditioning_llama3"] + 0.7 * rare[0][1]["conditioning_llama3"]
    torch.testing.assert_close(llama, want)
    assert not torch.allclose(llama, rare[0][1]["conditioning_llama3"])
