"""Physical-space correctness: a known object lands where it should in world coordinates.

A random network's output is arbitrary, so the geometry is tested with known objects: the
model-grid round trip with a thresholding "network", paste-back of a known crop, box mapping, and
the whole Segmenter with identity-like networks on oblique, flipped and anisotropic grids.
"""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from brainbarriers import geometry, pipeline
from brainbarriers.bundles import load_bundle
from brainbarriers.pipeline import (
    Segmenter,
    SegmentOptions,
    labels_to_reference,
    paste_by_probability,
    resample_inputs,
)
from brainbarriers.preprocessing import array_axis
from brainbarriers.structures import fine_target
from phantom import OBJECT_CENTRE, make_image, object_mask_like, rotation

OBLIQUE = tuple((np.array(rotation(2, 25)).reshape(3, 3) @ np.array(rotation(0, 12)).reshape(3, 3)).ravel())
FLIPPED = (-1, 0, 0, 0, 1, 0, 0, 0, -1)
PERMUTED = (0, 0, 1, 1, 0, 0, 0, 1, 0)  # axes permuted: image i runs along y (AP), k along x (LR)
GRIDS = {
    "identity": dict(size=(48, 56, 46), spacing=(2.5, 2.5, 2.5)),
    "oblique": dict(size=(52, 60, 50), spacing=(2.4, 2.4, 2.4), direction=OBLIQUE),
    "flipped_anisotropic": dict(size=(70, 60, 22), spacing=(1.8, 2.2, 5.0), direction=FLIPPED),
    "permuted": dict(size=(40, 60, 50), spacing=(3.0, 2.0, 2.5), direction=PERMUTED),
}


def _dice(a, b):
    return 2 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


def _world_centroid(mask: np.ndarray, image: sitk.Image) -> np.ndarray:
    kji = np.argwhere(mask).mean(0)
    return np.array(image.TransformContinuousIndexToPhysicalPoint([float(x) for x in kji[::-1]]))


@pytest.mark.parametrize("name", list(GRIDS))
def test_model_grid_round_trip_keeps_the_object_in_place(name):
    ref = make_image("t2", **GRIDS[name])
    grid = geometry.model_grid(ref, (2.0, 2.0, 2.0))
    assert grid.GetDirection() == (1, 0, 0, 0, 1, 0, 0, 0, 1)
    lo, hi = geometry.world_bounds(grid)
    rlo, rhi = geometry.world_bounds(ref)
    assert np.all(lo <= rlo + 1e-6) and np.all(hi >= rhi - 1e-6)  # covers every reference voxel
    arr = resample_inputs({"t2": ref}, grid)["t2"]
    labels = (arr > 600).astype(np.uint8) * 5  # thresholding "network": the object is bright on T2
    back = labels_to_reference(labels, grid, ref)
    assert back.GetSize() == ref.GetSize() and back.GetOrigin() == ref.GetOrigin()
    assert back.GetSpacing() == ref.GetSpacing() and back.GetDirection() == ref.GetDirection()
    truth = object_mask_like(ref)
    out = sitk.GetArrayFromImage(back) == 5
    assert _dice(out, truth) > 0.85
    assert np.linalg.norm(_world_centroid(out, ref) - OBJECT_CENTRE) < 1.0


@pytest.mark.parametrize("direction", [(1, 0, 0, 0, 1, 0, 0, 0, 1), (-1, 0, 0, 0, -1, 0, 0, 0, 1)])
def test_a_one_voxel_diagonal_run_stays_one_piece_on_a_finer_input_grid(direction):
    grid = sitk.Image(50, 50, 50, sitk.sitkUInt8)
    grid.SetSpacing((2.4, 2.4, 2.4))
    grid.SetOrigin((-60.0, -60.0, -60.0))
    ref = sitk.Image(60, 60, 60, sitk.sitkUInt8)
    ref.SetSpacing((2.0, 2.0, 2.0))
    ref.SetDirection(direction)
    ref.SetOrigin(tuple(-60.0 * d for d in (direction[0], direction[4], direction[8])))
    joined, apart = np.zeros((50, 50, 50), np.uint8), np.zeros((50, 50, 50), np.uint8)
    for t in range(10, 40):  # a bridge drawn voxel by voxel along the space diagonal
        joined[t, t, t] = 3
        if not 24 <= t < 27:  # the same run with a 3-voxel gap: two pieces that must stay apart
            apart[t, t, t] = 3
    back = sitk.GetArrayFromImage(labels_to_reference(joined, grid, ref)) == 3
    assert geometry.label_components(back).max() == 1
    assert back.sum() * 8.0 < 4 * 30 * 2.4**3  # the run is drawn, not fattened
    back = sitk.GetArrayFromImage(labels_to_reference(apart, grid, ref)) == 3
    assert geometry.label_components(back).max() == 2


def test_plump_labels_keep_the_linear_rule_on_the_input_grid():
    grid = sitk.Image(30, 30, 30, sitk.sitkUInt8)
    grid.SetSpacing((2.4, 2.4, 2.4))
    ref = sitk.Image(36, 36, 36, sitk.sitkUInt8)
    ref.SetSpacing((2.0, 2.0, 2.0))
    labels = np.zeros((30, 30, 30), np.uint8)
    for t in range(5, 25):
        labels[t, t, t] = 5  # the ventricles (HMRNet-p): not restored, whatever their shape
    linear = sitk.GetArrayFromImage(labels_to_reference(labels, grid, ref, thin=()))
    assert np.array_equal(sitk.GetArrayFromImage(labels_to_reference(labels, grid, ref)), linear)
    assert 5 not in pipeline.THIN_LABELS and {2, 3} <= pipeline.THIN_LABELS


def test_paste_back_of_a_known_crop_lands_at_its_world_position():
    ref = make_image("ct", **GRIDS["oblique"])
    grid = geometry.model_grid(ref, (2.0, 2.0, 2.0))
    shape = tuple(reversed(grid.GetSize()))
    labels, best = np.zeros(shape, np.uint8), np.zeros(shape, np.float32)
    box = ((20, 25, 30), (30, 37, 38))
    prob = np.zeros(tuple(b - a for a, b in zip(*box)), np.float32)
    prob[2:8, 3:9, 2:6] = 0.9
    paste_by_probability(labels, best, prob, box, 4)
    cube_lo = grid.TransformIndexToPhysicalPoint((30 + 2, 25 + 3, 20 + 2))
    cube_hi = grid.TransformIndexToPhysicalPoint((30 + 5, 25 + 8, 20 + 7))
    expected = (np.array(cube_lo) + np.array(cube_hi)) / 2
    back = sitk.GetArrayFromImage(labels_to_reference(labels, grid, ref)) == 4
    assert back.any()
    assert np.linalg.norm(_world_centroid(back, ref) - expected) < 1.0


def test_overlaps_are_resolved_by_probability_not_order():
    results = []
    for order in ([(1, 0.7), (4, 0.6)], [(4, 0.6), (1, 0.7)]):
        labels, best = np.zeros((4, 4, 4), np.uint8), np.zeros((4, 4, 4), np.float32)
        for value, p in order:
            paste_by_probability(labels, best, np.full((4, 4, 4), p, np.float32), ((0, 0, 0), (4, 4, 4)), value)
        results.append(labels.copy())
    assert np.array_equal(results[0], results[1]) and (results[0] == 1).all()


def test_map_box_covers_the_same_world_region():
    ref = make_image("ct", **GRIDS["identity"])
    coarse = geometry.model_grid(ref, (6.0, 6.0, 6.0))
    fine = geometry.model_grid(ref, (2.0, 2.0, 2.0))
    box = ((3, 4, 5), (7, 9, 8))
    mapped = geometry.map_box(box, coarse, fine)
    src_lo, src_hi = geometry.world_bounds(geometry.sub_grid(coarse, box))
    dst_lo, dst_hi = geometry.world_bounds(geometry.sub_grid(fine, mapped))
    assert np.all(dst_lo <= src_lo + 1e-6) and np.all(dst_hi >= src_hi - 1e-6)
    assert np.all(dst_lo > src_lo - 2.0) and np.all(dst_hi < src_hi + 2.0)  # and not much more


def test_inter_slice_axis_follows_direction():
    assert array_axis((1, 0, 0, 0, 1, 0, 0, 0, 1), fine_target("falx").slice_axis) == 2
    assert array_axis((1, 0, 0, 0, 1, 0, 0, 0, 1), fine_target("transverse_sinus").slice_axis) == 0
    assert array_axis(PERMUTED, "LR") == 0  # world x comes from image axis k here -> array axis 0


class _ThresholdNet(torch.nn.Module):
    """A stand-in network with known output: class ``channel`` where the T2 channel is bright."""

    def __init__(self, out_channels: int, channel: int, required_multiple=(4, 4, 4)):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(10.0))
        self.out_channels, self.channel, self.required_multiple = out_channels, channel, required_multiple

    def forward(self, x):
        logits = torch.zeros((x.shape[0], self.out_channels, *x.shape[2:]))
        logits[:, self.channel] = self.scale * (x[:, 2] - 2.5)
        return logits


@pytest.mark.parametrize("ct_grid,mr_grid", [("flipped_anisotropic", "oblique"), ("oblique", "permuted")])
def test_segmenter_with_known_networks_on_mixed_grids(tiny_bundle, monkeypatch, ct_grid, mr_grid):
    bundle = load_bundle(tiny_bundle)

    def build_network(stage, device=None, **overrides):
        if stage == "coarse":
            return _ThresholdNet(7, fine_target("ventricles").coarse_index)
        return _ThresholdNet(2, 1 if stage == "ventricles" else 0)

    monkeypatch.setattr(bundle, "build_network", build_network)
    images = {"ct": make_image("ct", **GRIDS[ct_grid]), "t1": make_image("t1", **GRIDS[mr_grid]),
              "t2": make_image("t2", **GRIDS[mr_grid])}
    result = Segmenter(bundle, "cpu", SegmentOptions()).run(images)
    ref = images["ct"]
    assert result.labels.GetSize() == ref.GetSize() and result.labels.GetDirection() == ref.GetDirection()
    assert result.labels.GetOrigin() == ref.GetOrigin() and result.labels.GetSpacing() == ref.GetSpacing()
    out = sitk.GetArrayFromImage(result.labels)
    assert set(np.unique(out)) == {0, 5}
    truth = object_mask_like(ref)
    assert _dice(out == 5, truth) > 0.8
    assert np.linalg.norm(_world_centroid(out == 5, ref) - OBJECT_CENTRE) < 1.5
    assert result.boxes["ventricles"] is not None and result.boxes["cerebellum"] is None


def test_sliding_window_and_flip_tta_agree_with_one_forward():
    from brainbarriers.predict import Runner, tile_starts

    assert tile_starts(100, 40) == [0, 30, 60] and tile_starts(30, 40) == [0]  # 25% overlap
    x = np.random.default_rng(0).normal(0, 2, (3, 30, 41, 23)).astype(np.float32)
    net = _ThresholdNet(2, 1, required_multiple=(8, 8, 8))
    runner = Runner(torch.device("cpu"), batch_size=3)
    whole = runner.predict(net, x, (64, 64, 64))
    tiled = runner.predict(net, x, (16, 16, 16))
    flipped = runner.predict(net, x, (16, 64, 64), flip_axes=(0, 1, 2))
    assert whole.shape == (2, 30, 41, 23)
    assert np.allclose(whole, tiled, atol=1e-5) and np.allclose(whole, flipped, atol=1e-5)


def test_thin_axis_is_moved_where_the_weights_expect_it(tiny_bundle, monkeypatch):
    """A bundle whose falx net was trained with the thin (LR) axis as array axis 0 gets crops transposed."""
    bundle = load_bundle(tiny_bundle)
    spec = bundle.manifest["networks"]["fine"]["falx"]
    monkeypatch.setitem(spec, "options", {**spec["options"], "inter_slice_axis": 0})
    seen = {}

    class Recorder(_ThresholdNet):
        def forward(self, x):
            seen["shape"] = tuple(x.shape[2:])
            return super().forward(x)

    def build_network(stage, device=None, **overrides):
        if stage == "coarse":
            return _ThresholdNet(7, fine_target("falx").coarse_index)
        return Recorder(2, 1, required_multiple=(1, 1, 1))

    monkeypatch.setattr(bundle, "build_network", build_network)
    images = {m: make_image(m, **GRIDS["identity"]) for m in ("ct", "t1", "t2")}
    result = Segmenter(bundle, "cpu", SegmentOptions(structures=["falx"], cleanup=False)).run(images)
    (k0, j0, i0), (k1, j1, i1) = result.boxes["falx"]["model_grid_index"]
    assert seen["shape"] == (i1 - i0, j1 - j0, k1 - k0)  # the LR (I) extent now comes first
    out = sitk.GetArrayFromImage(result.labels) == 2
    assert _dice(out, object_mask_like(images["ct"])) > 0.8  # and the result is transposed back
