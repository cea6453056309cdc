import pytest
import torch

from sleight.attention_patches.core import schedule


class LinearSampling:
    """percent p ↦ sigma 10·(1−p), monotone like every ComfyUI model_sampling."""

    def percent_to_sigma(self, p):
        if p <= 0:
            return 999999999.9
        if p >= 1:
            return 0.0
        return 10.0 * (1 - p)


def test_step_index_scheduled_and_intermediate_sigmas():
    sigmas = torch.tensor([10.0, 7.0, 4.0, 1.0, 0.0])
    assert [schedule.step_index(sigmas, s) for s in (10.0, 7.0, 4.0, 1.0)] == [0, 1, 2, 3]
    assert schedule.step_index(sigmas, 5.5) == 1          # heun/dpm2 evaluate between steps
    assert schedule.step_index(sigmas, torch.tensor([7.0, 7.0])) == 1
    assert schedule.step_index(None, 3.0) == -1


def test_sigma_to_percent_inverts_percent_to_sigma():
    ms = LinearSampling()
    for p in (0.1, 0.37, 0.9):
        assert schedule.sigma_to_percent(ms, ms.percent_to_sigma(p)) == pytest.approx(p, abs=1e-6)


def test_window_semantics_match_comfyui():
    ms = LinearSampling()
    w = schedule.Window(0.2, 0.6)           # sigma in [4, 8]
    assert [w.contains(ms, s) for s in (9.0, 8.0, 6.0, 4.0, 3.9)] == [False, True, True, True, False]
    assert schedule.Window().always and schedule.Window().contains(ms, 1e9)
    assert not schedule.Window(1.0, 1.0).contains(ms, 0.03)   # an empty window never fires on a real step


def test_window_rejects_reversed_or_out_of_range():
    with pytest.raises(ValueError, match="after end_percent"):
        schedule.Window(0.8, 0.2)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        schedule.Window(-0.1, 0.5)


@pytest.mark.parametrize("total, end, want", [(30, 10 / 30, 10), (30, 20 / 30, 20), (50, 10 / 30, 17), (20, 20 / 30, 13),
                                              (4, 10 / 30, 1), (30, 0.0, -1), (30, 1.0, 30)])
def test_add_it_windows_include_their_end_step_as_the_official_code(total, end, want):
    """Official Add-it: extended attention while extend_start <= step_index <= extend_end (steps 0-10 of 30 for
    extended_steps_multi=10); as schedule fractions at any step count. An end of 0 is off."""
    steps = [i for i in range(total) if 0 <= i <= schedule.last_step(end, total)]
    assert steps == list(range(min(want, total - 1) + 1))
