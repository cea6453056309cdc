"""The adherence report: targets read on prompts without signs, letters on prompts that all carry one."""


def test_targets_use_prompts_without_signs_or_stripes_and_letters_prompts_that_all_carry_a_sign():
    from sleight.shapes import adherence

    plain, signed = adherence.prompts(60), adherence.prompts(60, signs=True)
    assert len(plain) == len(signed) == 60
    assert not any(s.sign or s.striped for s in plain)
    assert all(s.sign is not None and not s.striped for s in signed)
    assert len({s.sign.letter for s in signed}) > 1 and len({s.sign.position for s in signed}) > 1

    text = adherence.table({"kind": 0.75, "letter": 0.3}, {"images": 2, "letter images": 4})
    assert "| kind | 75.0% | ≥ 70% |" in text
    assert "| letter (on the letter images, each with a sign) | 30.0% | — |" in text


def test_the_committed_models_words_attend_to_their_shapes_cells():
    """The grounding loss's point (docs/BENCHMARKS.md, row 15): Add-it's subject mask needs it. Step 19400, without
    it, put 26 to 30 % in the cell in output.2; a cell is 10 to 14 % of the latent."""
    from sleight.shapes import adherence, train

    model, _, _ = train.load()
    share = adherence.grounding(model, n_prompts=8, timesteps=(500,))[500]
    assert share["output.2"] > 0.6 and share["input.1"] < share["output.2"]
