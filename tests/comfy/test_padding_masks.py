"""A padding mask the model passes to its attention travels with the keys through Add-it's key concatenation and
prompt routing's text swap.

The mask reaches the model the way ComfyUI passes one to Flux-type joint attention: the conditioning's
`attention_mask` (B, L, L) with `attention_mask_img_shape` (the path Redux's attention bias takes), here marking
extra text tokens as padding: -inf for every query on those keys. Masked keys are as good as absent, so each run
with the padded prompt must equal the run with the plain prompt (which has no mask); an effect that dropped the mask,
or put it on the wrong keys, would let the extra tokens in. A mask that is more than padding is refused by name.
"""
import pytest
import torch

from sleight.attention_patches import extended
from sleight.nodes.insertion import SleightAddIt
from sleight.nodes.routing import SleightPromptRoute
from test_families import B, SUBJECT, Case, run

EXTRA = 5      # padding tokens appended to the prompt


@pytest.fixture(scope="module")
def c():
    return Case("chroma", "chroma")


def grid(case):
    return case.family.image_grid(case.family.latent_size(case.size, case.size))


def padded(case, conditioning, bias=float("-inf")):
    """The conditioning with EXTRA random text tokens that its attention mask marks as padding (`bias` on them)."""
    gh, gw = grid(case)
    out = []
    for emb, extra in conditioning:
        g = torch.Generator().manual_seed(3)
        n = emb.shape[1] + EXTRA
        mask = torch.zeros(emb.shape[0], n + gh * gw, n + gh * gw)
        mask[:, :, emb.shape[1]:n] = bias
        junk = torch.randn(emb.shape[0], EXTRA, emb.shape[2], generator=g) * emb.std()
        out.append([torch.cat([emb, junk.to(emb)], dim=1),
                    {**extra, "attention_mask": mask, "attention_mask_img_shape": (gh, gw)}])
    return out


def close(a, b):
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_the_model_itself_ignores_padded_keys(c):
    close(run(c.model, padded(c, c.pos), c.neg), c.base)
    with pytest.raises(AssertionError):      # a finite bias lets the extra tokens in: the check can fail
        close(run(c.model, padded(c, c.pos, bias=-1.0), c.neg), c.base)


def test_padded_keys_get_no_attention_mass():
    """Add-it's subject maps and auto γ measure attention mass with the model's padding mask, as its attention."""
    g = torch.Generator().manual_seed(0)
    q, k, w = torch.randn(2, 2, 6, 8, generator=g), torch.randn(2, 2, 9, 8, generator=g), torch.rand(9, generator=g)
    pad = torch.zeros(2, 1, 1, 9)
    pad[..., 6:] = float("-inf")
    torch.testing.assert_close(extended.key_mass(q, k, w, pad), extended.key_mass(q, k[:, :, :6], w[:6]))
    assert not torch.allclose(extended.key_mass(q, k, w), extended.key_mass(q, k[:, :, :6], w[:6]))


def test_add_it_carries_the_padding_mask_through_its_key_concatenation(c):
    m, pos = SleightAddIt.execute(c.model, c.clip, c.source(), B, SUBJECT, 0.0, -1.0, 1 / 3, 10 / 30, 20 / 30).result
    plain = run(m, pos, c.neg)
    assert not torch.equal(plain, run(c.model, pos, c.neg))     # Add-it acts in these runs
    close(run(m, padded(c, pos), c.neg), plain)


def test_routing_carries_the_padding_masks_of_both_prompts(c):
    routed = SleightPromptRoute.execute(c.model, c.b, "custom", "*", 0.0, 1.0, "cond").result[0]
    plain = run(routed, c.pos, c.neg)
    assert not torch.equal(plain, c.base)
    close(run(routed, padded(c, c.pos), c.neg), plain)          # the routed rows' own mask
    padded_route = SleightPromptRoute.execute(c.model, padded(c, c.b), "custom", "*", 0.0, 1.0, "cond").result[0]
    close(run(padded_route, c.pos, c.neg), plain)                # the routed prompt's mask
    close(run(padded_route, padded(c, c.pos), c.neg), plain)     # both


def test_a_mask_that_is_more_than_padding_is_refused_by_name(c):
    m, pos = SleightAddIt.execute(c.model, c.clip, c.source(), B, SUBJECT, 0.0, -1.0, 1 / 3, 10 / 30, 20 / 30).result
    biased = padded(c, pos)
    biased[0][1]["attention_mask"][:, 0, 0] = -1.0              # one query sees one key differently
    with pytest.raises(ValueError, match="Add-it.*padding"):
        run(m, biased, c.neg)
