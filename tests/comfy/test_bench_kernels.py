"""The kernel benchmark's correctness part on small shapes: every attention effect, called through the real router on
ComfyUI's own attention function, equals its direct formula, whole and split by heads (core/headsplit) as it is at
real sizes; a split never reaches past the chain's tail."""
import pytest
import torch

import bench_kernels as bk
from comfy.ldm.modules.attention import attention_pytorch
from sleight.attention_patches import keymask
from sleight.attention_patches.core import headsplit, router, schedule
from tinyrun import Probe

SMALL = [
    bk.Case("self", "UNet-like self-attention", "self", (8, 8), 7, 4, 16, 4, 24),
    bk.Case("joint", "DiT joint attention", "joint", (8, 8), 12, 4, 16, 4),
    bk.Case("video", "two frames", "self", (2 * 6, 8), 7, 4, 16, 4, 24, frames=2),
]


@pytest.fixture
def splits(monkeypatch):
    """Count head groups; `force()` splits every call that may be split into single heads."""
    seen = []
    of_heads = headsplit.of_heads

    def counted(call, hs):
        seen.append(hs)
        return of_heads(call, hs)

    def force():
        monkeypatch.setattr(headsplit, "SHARE", 1e-9)
        monkeypatch.setattr(headsplit, "MIN_ROWS", {"cpu": 1})

    monkeypatch.setattr(headsplit, "of_heads", counted)
    bk.SIGMAS = torch.linspace(1.0, 0.0, 51)
    return seen, force


@pytest.mark.parametrize("forced", [False, True], ids=["whole", "split"])
@pytest.mark.parametrize("case", SMALL, ids=[c.name for c in SMALL])
def test_every_effect_equals_its_direct_formula(case, forced, splits):
    seen, force = splits
    if forced:
        force()
    shape = bk.Shape(case, case.heads, torch.float32, torch.device("cpu"), torch, attention_pytorch)
    with torch.inference_mode():
        for name in bk.EFFECTS[case.kind]:
            err = bk.make_kernel(name, shape, torch).check()
            assert err < 2e-6, (name, err)
    assert bool(seen) == forced         # small calls stay whole; forced, every effect with temporaries split


def test_no_split_before_a_later_effect(splits):
    """A split is only made for the backend: an effect after the key mask sees every head of the call."""
    seen, force = splits
    force()
    shape = bk.Shape(SMALL[1], 4, torch.float32, torch.device("cpu"), torch, attention_pytorch)
    probe = Probe()
    harness = bk.Harness(shape, keymask.KeyMask(shape.mask, schedule.StepWindow(0.02, 0.78)), torch)
    harness.routes = router.Router(harness.routes.effects + (probe,))
    with torch.inference_mode():
        out = harness()
    assert not seen and [c.q.shape[1] for c in probe.ran] == [4]
    assert out.shape == shape.q.shape
