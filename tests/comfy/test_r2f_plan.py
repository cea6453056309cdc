"""Sleight · R2F plan: a Rare-to-Frequent plan written by the language model of the text encoder.

The language model is a tiny Qwen of ComfyUI's own classes (Z-Image's Qwen3-4B encoder class, OmniGen2's
Qwen2.5-VL-3B class) with random seeded weights (tiny_models.language_clip): it writes nonsense, so the decoder is
checked against ComfyUI's own forward.
"""
import pytest
import torch

import comfy.model_management as mm
import comfy.utils
import tiny_models
from sleight.samplers import text_generation

PROMPT = "A hairy hamburger on a wooden table"


@pytest.fixture(scope="module")
def qwen3():
    return tiny_models.language_clip("qwen3")


def reference_greedy(lm, ids, n):
    """Greedy decoding by full recompute through ComfyUI's own forward (llama.Llama2_), the tied head applied by
    hand: the logits of every step and the tokens."""
    model = lm.wrapper.transformer.model
    head = model.embed_tokens.weight.float()
    seq, logits, tokens = list(ids), [], []
    with torch.no_grad():
        for _ in range(n):
            x, _ = model(torch.tensor([seq]), dtype=torch.float32)
            logits.append(x[0, -1] @ head.T)
            tokens.append(int(torch.argmax(logits[-1])))
            seq.append(tokens[-1])
    return logits, tokens


# ------------------------------------------------------------------ the decoder

@pytest.mark.parametrize("kind", ["qwen3", "qwen25_3b"])
def test_kv_cached_decoder_equals_full_recompute_greedy(kind, qwen3):
    clip = qwen3 if kind == "qwen3" else tiny_models.language_clip(kind)
    lm = text_generation.language_model(clip, "test")
    assert lm.thinks == (kind == "qwen3")         # Qwen3 gets the empty <think> block, Qwen2.5 does not
    assert not text_generation.comfy_can_generate(clip, lm.wrapper)   # ComfyUI 0.3.75: Sleight's own decoder
    ids = lm.chat_ids("You plan.", f"### Input: {PROMPT}\n### Output:\n")
    ref_logits, ref_tokens = reference_greedy(lm, ids, 16)
    seen = []

    def record(logits):
        seen.append(logits.clone())
        return text_generation.greedy(logits)

    tokens = text_generation.decode_tokens(lm.wrapper.transformer, ids, 16, record, set(), torch.device("cpu"),
                                           torch.float32)
    assert tokens == ref_tokens
    for got, want in zip(seen, ref_logits):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    assert lm.generate(ids, 16) == ref_tokens       # the public entry point: the same greedy tokens


def test_same_seed_same_answer_and_max_new_tokens_bound(qwen3):
    lm = text_generation.language_model(qwen3, "test")
    ids = lm.chat_ids("You plan.", f"### Input: {PROMPT}\n### Output:\n")
    bar = []
    comfy.utils.set_progress_bar_global_hook(lambda value, total, preview, node_id=None: bar.append((value, total)))
    try:
        a = lm.generate(ids, 7, seed=123)
    finally:
        comfy.utils.set_progress_bar_global_hook(None)
    assert len(a) == 7 and bar == [(i, 7) for i in range(1, 8)]
    assert lm.generate(ids, 7, seed=123) == a
    assert lm.generate(ids, 7, seed=124) != a
    assert lm.generate(ids, 5) == lm.generate(ids, 5)            # greedy ignores the seed
    assert len(lm.generate(ids, 1)) == 1


def test_stop_token_ends_the_answer_and_interrupt_stops_it(qwen3):
    lm = text_generation.language_model(qwen3, "test")
    ids = lm.chat_ids("You plan.", "a cat")
    first = lm.generate(ids, 3)[0]
    out = text_generation.decode_tokens(lm.wrapper.transformer, ids, 50, text_generation.greedy, {first},
                                        torch.device("cpu"), torch.float32)
    assert out == [first]
    mm.interrupt_current_processing(True)
    try:
        with pytest.raises(mm.InterruptProcessingException):
            lm.generate(ids, 5)
    finally:
        mm.interrupt_current_processing(False)


def test_decode_drops_reasoning_stop_and_unknown_ids(qwen3):
    lm = text_generation.language_model(qwen3, "test")
    think = [*text_generation.QWEN3_THINK]
    ids = lm.tokenizer("a. Rare concept: x")["input_ids"]
    im_end = lm.tokenizer.convert_tokens_to_ids("<|im_end|>")
    noise = lm.tokenizer("I should think first.")["input_ids"]
    assert lm.decode([think[0], *noise, think[1], *ids, 151900, im_end]) == "a. Rare concept: x"


def test_prompt_ends_with_qwen3_no_thinking_block(qwen3):
    lm = text_generation.language_model(qwen3, "test")
    ids = lm.chat_ids("S", "U")
    blank = lm.tokenizer("\n\n")["input_ids"]
    assert ids[-(2 + 2 * len(blank)):] == [text_generation.QWEN3_THINK[0], *blank, text_generation.QWEN3_THINK[1], *blank]
    assert lm.tokenizer.decode(ids[:-(2 + 2 * len(blank))]) == \
        "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\n"
