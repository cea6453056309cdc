"""DesignEdit maths without ComfyUI: key masking vs. the direct formula, exact layer transforms, fusion,
mask preparation, zoom-out / pan canvases, step windows."""
import pytest
import torch
import torch.nn.functional as F

from sleight.attention_patches import keymask
from sleight.attention_patches.core import masks, runstate, schedule
from sleight.samplers import fusion


# ---------------------------------------------------------------- key masking == reference formula

class FakeForward:
    def __init__(self, rows, step=5, total=50):
        self.rows = rows
        self.step = step
        self.total_steps = total
        self.sample_sigmas = torch.linspace(10, 0, total + 1)
        self.run = runstate.RunState(None)


class FakeCall:
    """The few AttentionCall fields KeyMask reads, with the router's `replace`."""

    def __init__(self, q, k, v, kind, img, grid, rows, bias=None):
        self.q, self.k, self.v, self.kind, self.img, self.grid = q, k, v, kind, img, grid
        self.forward, self.block, self.bias = FakeForward(rows), "test", bias

    @property
    def rows(self):
        return self.forward.rows

    @property
    def run(self):
        return self.forward.run

    def replace(self, **changes):
        c = FakeCall(self.q, self.k, self.v, self.kind, self.img, self.grid, self.forward.rows, self.bias)
        for key, val in changes.items():
            setattr(c, key, val)
        return c


def sdpa(call):
    return F.scaled_dot_product_attention(call.q, call.k, call.v, attn_mask=call.bias.to(call.q.dtype)
                                          if call.bias is not None else None)


@pytest.mark.parametrize("mode", keymask.MODES)
@pytest.mark.parametrize("kind, txt", [("self", 0), ("joint", 7)])
def test_efficient_key_masking_equals_the_formula(mode, kind, txt):
    torch.manual_seed(0)
    b, h, d, gh, gw = 4, 2, 16, 6, 5
    L = txt + gh * gw
    q, k, v = (torch.randn(b, h, L, d, dtype=torch.float64) for _ in range(3))
    mask = (torch.rand(gh, gw) > 0.6).double()
    mask[0, 0] = 0.5                                   # soft values (feathered or bilinear-resized) too
    img = slice(txt, L)
    rows = {"cond": [2, 3], "uncond": [0, 1]}
    effect = keymask.KeyMask(mask, schedule.StepWindow(0.02, 0.78), mode=mode)
    call = FakeCall(q, k, v, kind, img, (gh, gw), rows)
    assert effect.applies(call) or kind == "joint"
    got = effect.run(call, sdpa)
    want = keymask.reference(q, k, v, mask.flatten(), [2, 3], img, mode)
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(got[[0, 1]], sdpa(call)[[0, 1]], rtol=0, atol=0)   # uncond rows untouched
    if kind == "joint":                                # text keys are never masked
        assert not torch.equal(got[2], sdpa(call)[2])


def test_zero_mode_on_a_binary_mask_gives_zero_logits():
    q, k = torch.randn(1, 1, 4, 8), torch.randn(1, 1, 4, 8)
    mask = torch.tensor([[0.0, 1.0], [0.0, 1.0]])
    seen = {}

    def attend(call):
        seen["k"] = call.k
        return call.q

    keymask.KeyMask(mask, schedule.StepWindow()).run(FakeCall(q, k, k, "self", slice(0, 4), (2, 2), {"cond": [0]}), attend)
    logits = q @ seen["k"].transpose(-1, -2)
    assert torch.equal(logits[..., [1, 3]], torch.zeros(1, 1, 4, 2))


def test_key_mask_window_and_resize_and_refine_union():
    mask = torch.zeros(8, 8)
    mask[:4, :4] = 1
    refine = torch.zeros(8, 8)
    refine[6:, 6:] = 1
    effect = keymask.KeyMask(mask, schedule.StepWindow(0.02, 0.78), refine, schedule.StepWindow(0.02, 0.5))
    call = FakeCall(*(torch.zeros(1, 1, 16, 4),) * 3, "self", slice(0, 16), (4, 4), {"cond": [0]})
    for step, on in ((0, False), (1, True), (39, True), (40, False)):
        call.forward.step = step
        assert effect.applies(call) is on
    call.forward.step = 25
    early = effect.mask_at(call).reshape(4, 4)
    call.forward.step = 26
    late = effect.mask_at(call).reshape(4, 4)
    assert early[3, 3] > 0 and late[3, 3] == 0 and torch.equal(early[:2, :2], late[:2, :2])
    assert torch.equal(late, F.interpolate(mask[None, None], size=(4, 4), mode="bilinear").reshape(4, 4))
    assert not keymask.KeyMask(torch.zeros(4, 4), schedule.StepWindow()).applies(call)


def test_exclude_refuses_a_mask_over_every_key():
    effect = keymask.KeyMask(torch.ones(2, 2), schedule.StepWindow(), mode="exclude")
    call = FakeCall(*(torch.zeros(1, 1, 4, 4),) * 3, "self", slice(0, 4), (2, 2), {"cond": [0]})
    with pytest.raises(ValueError, match="exclude"):
        effect.run(call, sdpa)


# ---------------------------------------------------------------- step windows

def test_step_window_is_step_exact_at_50_and_scales():
    w = schedule.StepWindow(0.02, 0.78)
    assert [i for i in range(50) if w.contains_step(i, 50)] == list(range(1, 40))
    assert [i for i in range(10) if w.contains_step(i, 10)] == list(range(1, 8))
    with pytest.raises(ValueError):
        schedule.StepWindow(0.5, 0.2)


# ---------------------------------------------------------------- layer transforms: exact on latents

def _layer(h=6, w=9, box=(1, 2, 2, 4), **kw):
    torch.manual_seed(1)
    lat = torch.randn(1, 4, h, w)
    mask = torch.zeros(1, 1, h, w)
    y0, y1, x0, x1 = box
    mask[..., y0:y1 + 1, x0:x1 + 1] = 1
    return fusion.Layer(lat, mask, **kw)


def test_move_is_an_exact_shift():
    layer = _layer(move_x=3, move_y=2)
    lat, m = fusion.transform(layer)
    assert torch.equal(lat[..., 2:, 3:], layer.latent[..., :-2, :-3])
    assert torch.equal(m[..., 2:, 3:], layer.mask[..., :-2, :-3]) and m[..., :2, :].sum() == 0


def test_flips_mirror_about_the_mask_box():
    layer = _layer(box=(1, 2, 2, 4), flip_h=True)          # box columns 2..4: x → 6 − x
    lat, m = fusion.transform(layer)
    for x in range(2, 5):
        assert torch.equal(lat[..., :, x], layer.latent[..., :, 6 - x])
    assert torch.equal(m, layer.mask)                       # a box mask maps onto itself
    both, _ = fusion.transform(fusion.Layer(layer.latent, layer.mask, flip_h=True, flip_v=True))
    assert torch.equal(both[..., 1:3, 2:5], layer.latent[..., 1:3, 2:5].flip(-1).flip(-2))


def test_scale_two_copies_each_cell_into_a_2x2_block():
    layer = _layer(h=8, w=8, box=(2, 3, 2, 3), scale=2.0)   # centre 2.5: cells 2,3 → 1..4
    lat, m = fusion.transform(layer)
    want = layer.latent[..., 2:4, 2:4].repeat_interleave(2, -1).repeat_interleave(2, -2)
    assert torch.equal(lat[..., 1:5, 1:5], want) and m[..., 1:5, 1:5].sum() == 16 and m.sum() == 16


def test_identity_transform_and_z_order_fusion():
    a, b = _layer(box=(0, 2, 0, 3)), _layer(box=(1, 3, 2, 6))
    assert torch.equal(fusion.transform(a)[0], a.latent)
    bg = torch.zeros(1, 4, 6, 9)
    fb = torch.full((1, 4, 6, 9), 2.0)
    out = fusion.fuse(bg, [(a.latent, a.mask), (fb, b.mask)])
    assert torch.equal(out[..., 1, 2], fb[..., 1, 2])                 # overlap: the later layer wins
    assert torch.equal(out[..., 0, 0], a.latent[..., 0, 0]) and torch.equal(out[..., 5, 8], bg[..., 5, 8])


def test_out_of_canvas_moves_are_refused():
    fusion.check_inside(_layer(move_x=4), (6, 9), 8, "T")              # columns 2..4 → 6..8: fits
    with pytest.raises(ValueError, match="right by about 8 px"):
        fusion.check_inside(_layer(move_x=5), (6, 9), 8, "T")
    with pytest.raises(ValueError, match="top"):
        fusion.check_inside(_layer(move_y=-2), (6, 9), 8, "T")
    with pytest.raises(ValueError, match="leaves the canvas"):
        fusion.check_inside(_layer(box=(1, 2, 2, 4), scale=4.0), (6, 9), 8, "T")


# ---------------------------------------------------------------- masks and canvases

def official_remove_mask(mask, latent_hw, ratio, dilation):
    """DesignEdit's `attend_mask` written out pixel by pixel: pixels above 0, cv2.dilate with a d×d ones kernel
    (anchor d // 2: output pixel = max over input offsets −d//2 … d − 1 − d//2), cv2 INTER_NEAREST to the latent
    grid (cell i takes pixel ratio·i), cells above 0."""
    on = mask.amax(0) > 0
    lo, hi = (dilation // 2, dilation - 1 - dilation // 2) if dilation > 1 else (0, 0)
    h, w = on.shape
    out = torch.zeros(*latent_hw)
    for i in range(latent_hw[0]):
        for j in range(latent_hw[1]):
            y, x = ratio * i, ratio * j
            out[i, j] = float(on[max(0, y - lo):min(h, y + hi + 1), max(0, x - lo):min(w, x + hi + 1)].any())
    return out


def test_pixel_mask_to_latent_sizes_dilation_and_errors():
    mask = torch.zeros(1, 48, 80)
    mask[0, 24:26, 40:42] = 1
    m = masks.pixel_to_latent(mask, (6, 10), 8)
    assert m.shape == (1, 1, 6, 10) and m.sum() == 1 and m[0, 0, 3, 5] == 1
    grown = masks.pixel_to_latent(mask, (6, 10), 8, dilation=20)    # −10 … +9 px: pixels 15-34 × 31-50
    assert grown[0, 0, 2:5, 4:7].sum() == 9 and grown.sum() == 9
    soft = masks.pixel_to_latent(mask, (6, 10), 8, feather=8)
    assert 0 < soft.max() < 1
    with pytest.raises(ValueError, match="64x48 pixels but the latent is 80x48"):
        masks.pixel_to_latent(torch.zeros(48, 64), (6, 10), 8, who="T")


@pytest.mark.parametrize("dilation", [0, 1, 10, 20, 21, 30])
def test_remove_mask_cells_are_the_official_construction(dilation):
    g = torch.Generator().manual_seed(dilation)
    for _ in range(4):
        mask = torch.zeros(1, 96, 136)
        y, x = (int(v) for v in torch.randint(0, 80, (2,), generator=g))
        mask[0, y:y + int(torch.randint(1, 16, (1,), generator=g)), x:x + int(torch.randint(1, 40, (1,), generator=g))] = 0.3
        got = masks.pixel_to_latent(mask, (12, 17), 8, dilation=dilation)[0, 0]
        assert torch.equal(got, official_remove_mask(mask, (12, 17), 8, dilation)), dilation


def test_hole_mask_dilation_is_scipys_one_pixel_cross():
    m = torch.zeros(1, 1, 5, 5)
    m[..., 2, 2] = 1
    m[..., 0, 4] = 1
    want = torch.zeros(5, 5)
    for y, x in ((2, 2), (0, 4)):
        for dy, dx in ((0, 0), (1, 0), (-1, 0), (0, 1), (0, -1)):
            if 0 <= y + dy < 5 and 0 <= x + dx < 5:
                want[y + dy, x + dx] = 1
    assert torch.equal(masks.dilate_cross(m)[0, 0], want)


def test_zoom_out_and_pan_canvases():
    img = torch.rand(1, 40, 60, 3)
    out, mask = fusion.zoom_out(img, 0.5, 0.5)
    assert out.shape == img.shape and mask[0, 10:30, 15:45].sum() == 0 and mask.sum() == 40 * 60 - 20 * 30
    torch.testing.assert_close(out[0, 10:30, 15:45], F.avg_pool2d(img.movedim(-1, 1), 2).movedim(1, -1)[0])
    out, mask = fusion.pan(img, -16, 8)
    assert torch.equal(out[:, 8:, :44], img[:, :32, 16:])
    assert mask[0, 8:, :44].sum() == 0 and mask.sum() == 40 * 60 - 32 * 44
    with pytest.raises(ValueError):
        fusion.pan(img, 60, 0)
    with pytest.raises(ValueError):
        fusion.zoom_out(img, 0.0, 1.0)
