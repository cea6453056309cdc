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
