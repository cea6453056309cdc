"""Where a prompt's words land in the text sequence each family's model attends to.

The families whose text encoder is a causal language model (tiny ones in the tests, with the real tokenizers and chat
templates) give an independent check: two prompts that differ only in one word give text sequences whose rows agree
up to that word's row and differ there. The sequence is taken where the model receives it (APPLY_MODEL), after
whatever the family does to it (Flux.2 pads it on the left to 512 tokens, Qwen-Image's encoder drops its template's
system prefix), so the adapter's alignment and the token finders are checked against what the model really sees.
"""
import pytest

import tiny_models
from sleight.attention_patches.core import families, tokens
from tinyrun import FAMILY_MODELS, encode, family_models, load, text_seen_by_model

ADAPTERS = {f.key: f for f in families.FAMILIES}
# the families whose text sequence is one causal language model's output (HiDream's c_crossattn is T5, its Llama
# states travel apart: tests/comfy/test_family_hidream.py checks where its words land)
LLM_MODELS = [n for k in FAMILY_MODELS for n in family_models(k)
              if tiny_models.MODELS[n].text_encoder in tiny_models.CAUSAL_LM and len(ADAPTERS[k].text_groups) == 1]
A, B = "a red circle and a cat on a blue background", "a red circle and a dog on a blue background"


def first_difference(a, b):
    rows = (a != b).any(dim=-1).nonzero()
    return int(rows[0]) if len(rows) else None


@pytest.mark.parametrize("name", LLM_MODELS)
def test_the_subject_lands_on_the_row_where_it_changes_the_text(name):
    model, clip, _ = load(name)
    family = families.detect(model)
    a, b = text_seen_by_model(model, clip, A), text_seen_by_model(model, clip, B)
    assert a.shape == b.shape
    where = first_difference(a, b)
    positions = tokens.subject_positions(clip, A, "cat", family, "test")
    assert len(positions) == 1
    got = family.text_position(positions[0], tokens.token_count(clip, A), a.shape[0])
    assert got == where, f"{family.label}: the subject maps to row {got}, the text changes at row {where}"


@pytest.mark.parametrize("name", LLM_MODELS)
def test_hd_painters_prompt_tokens_are_the_prompts_rows(name):
    """HD-Painter's T on a language-model encoder: the rows of the bare prompt's words in the encoded prompt (the
    encoder's own output, before the model pads it)."""
    model, clip, _ = load(name)
    family = families.detect(model)
    emb = encode(clip, "a red hat, Full HD")[0][0]
    t = tokens.prompt_positions(clip, "a red hat", "Full HD", family, emb.shape[1], "test")
    other = encode(clip, "the red hat, Full HD")[0][0]
    assert first_difference(emb[0], other[0]) == t[0]
    assert list(t) == list(range(t[0], t[0] + len(t))) and len(t) >= 3
    hats = encode(clip, "a red cap, Full HD")[0][0]
    assert first_difference(emb[0], hats[0]) == t[-1]          # "hat" is the prompt's last token
