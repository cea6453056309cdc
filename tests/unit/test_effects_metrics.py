"""The pure measuring pieces of scripts/effect_metrics.py on synthetic tensors and rendered scenes (no ComfyUI)."""
import math

import torch

import effect_metrics
import effects_edit
from sleight.shapes import evaluate, world


def test_has_matches_every_given_attribute():
    reading = evaluate.Reading("yellow", (evaluate.Found("centre", "red", "circle", "large"),
                                          evaluate.Found("top left", "blue", "square", "small")))
    assert effect_metrics.has(reading, "centre", "red", "circle") and effect_metrics.has(reading, None, "blue", "square")
    assert effect_metrics.has(reading, "top left") and not effect_metrics.has(reading, "bottom")
    assert not effect_metrics.has(reading, "centre", "blue") and not effect_metrics.has(reading, "centre", "red", "circle", "small")


def test_cell_masks_follow_the_grid_and_snap_to_latent_cells():
    centre = effect_metrics.cell_mask(64, "centre")
    assert torch.equal(centre[0].nonzero().unique(), torch.arange(21, 43))      # 0.34 / 0.66 of 64, widened
    snapped = effect_metrics.cell_mask(64, "centre", snap=8)[0]
    assert snapped[16:48, 16:48].all() and snapped.sum() == 32 * 32
    two = effect_metrics.cell_mask(64, "top left", "right", snap=8)[0]
    assert two[:24, :24].all() and two[16:48, 40:].all() and two.sum() == 24 * 24 + 32 * 24


def test_objects_stay_inside_their_snapped_cell():
    scenes = world.sample_scenes(16, 3, sign_p=0.0)
    images = world.render(scenes, 64)
    for scene, image in zip(scenes, images):
        cells = effect_metrics.cell_mask(64, *(s.position for s in scene.shapes), snap=8)
        background = world.PALETTE[world.COLOUR_NAMES.index(scene.background)][:, None, None]
        outside = (image - background).abs().amax(0)[cells[0] < 0.5]
        assert outside.max() < 1e-6
        for shape in scene.shapes:
            mask = effect_metrics.object_mask(evaluate, world, image, effect_metrics.cell_mask(64, shape.position, snap=8))
            assert mask.sum() > 0 and (mask <= effect_metrics.cell_mask(64, shape.position, snap=8)).all()


def test_masked_mse_inside_outside_and_empty_regions():
    a, b = torch.zeros(2, 3, 4, 4), torch.zeros(2, 3, 4, 4)
    b[:, :, :2] = 1.0                                    # top half differs by 1
    mask = torch.zeros(1, 4, 4)
    mask[:, :2] = 1.0
    inside, outside = effect_metrics.masked_mse(a, b, mask)
    assert inside.tolist() == [1.0, 1.0] and outside.tolist() == [0.0, 0.0]
    inside, outside = effect_metrics.masked_mse(a, b, torch.ones(1, 4, 4))
    assert inside.tolist() == [0.5, 0.5] and all(math.isnan(v) for v in outside.tolist())


def test_covered_is_the_share_of_a_cell_under_the_mask():
    cell = effect_metrics.cell_mask(64, "top left", snap=8)
    assert effect_metrics.covered(cell, cell) == 1.0 and effect_metrics.covered(1 - cell, cell) == 0.0
    half = cell.clone()
    half[:, :, 12:] = 0.0                                # the top-left cell is 24 px wide: keep its left half
    assert effect_metrics.covered(half, cell) == 0.5
    assert math.isnan(effect_metrics.covered(None, cell))


def test_addit_cases_add_a_shape_in_an_empty_cell():
    for src_shape, new_shape, background in effects_edit.ADDIT_CASES:
        source = effect_metrics._scene(world, background, src_shape)
        assert new_shape[2] != src_shape[2]
        reading = evaluate.read(world.render([source], 128), block=8)[0]
        assert not effect_metrics.has(reading, new_shape[2]) and effect_metrics.has(reading, src_shape[2])


def test_mean_of_counts_bools_and_leaves_nans_out():
    out = effect_metrics.mean_of([{"hit": True, "mse": 0.2}, {"hit": False, "mse": math.nan}, {"hit": True, "mse": 0.4}])
    assert abs(out["hit"] - 2 / 3) < 1e-12 and abs(out["mse"] - 0.3) < 1e-12
    assert math.isnan(effect_metrics.mean_of([{"mse": math.nan}])["mse"])


def test_hdpainter_cases_put_a_new_shape_in_an_empty_cell():
    for shape, other, background, (kind, colour), hole in effects_edit.HDPAINTER_CASES:
        scene = effect_metrics._scene(world, background, shape, other)
        reading = evaluate.read(world.render([scene], 128), block=8)[0]
        assert {f.position for f in reading.objects} == {shape[2], other[2]} and not effect_metrics.has(reading, hole)
        assert colour != background and (colour, kind) not in world.RARE_PAIRS | world.HELD_OUT_PAIRS
