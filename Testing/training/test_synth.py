"""The domain-randomised generator (training/synth.py) on a small block tissue map."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import SimpleITK as sitk
from brainbarriers_training import synth

SIZE = 40  # voxels per axis, 2 mm


def block_map() -> sitk.Image:
    """Every tissue class as a slab of 2-3 voxels along z inside a 'head' box, air around it."""
    array = np.zeros((SIZE, SIZE, SIZE), np.uint8)
    classes = [t.value for t in synth.TISSUES if t.key != "air"]
    edges = np.linspace(4, SIZE - 4, len(classes) + 1).round().astype(int)
    for value, lo, hi in zip(classes, edges[:-1], edges[1:]):
        array[lo:hi, 6:-6, 6:-6] = value
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((2.0, 2.0, 2.0))
    image.SetOrigin((-40.0, -40.0, -40.0))
    return image


#: no pose, blur, resolution loss, bias, noise or gamma: each class keeps exactly its drawn mean
PLAIN = synth.SynthParams(rotation_degrees=0, scales=(1, 1), shear=0, translation_mm=0, elastic_max_mm=0,
                          random_contrast=0.0, mr_spread=(0, 0), ct_spread_hu=(0, 0),
                          partial_volume_sigma_mm=(0, 0), resolution_mm=(0.5, 0.5), thick_slice_probability=0,
                          bias_std=0, mr_noise=(0, 0), ct_noise_hu=(0, 0), log_gamma_std=0, conceal_thin=0.0,
                          neck_mimic=0.0)
THIN = [t for t in synth.TISSUES if t.stand_ins]


def test_same_seed_same_case_and_other_seeds_differ():
    tissue = block_map()
    a_images, a_label = synth.synthesize(tissue, np.random.default_rng([3, 0]))
    b_images, b_label = synth.synthesize(tissue, np.random.default_rng([3, 0]))
    c_images, _ = synth.synthesize(tissue, np.random.default_rng([3, 1]))
    for key in ("ct", "t1", "t2"):
        a, b = sitk.GetArrayFromImage(a_images[key]), sitk.GetArrayFromImage(b_images[key])
        assert np.array_equal(a, b)
        assert not np.array_equal(a, sitk.GetArrayFromImage(c_images[key]))
    assert np.array_equal(sitk.GetArrayFromImage(a_label), sitk.GetArrayFromImage(b_label))


@pytest.mark.parametrize("channel", ["ct", "t1", "t2"])
def test_each_class_mean_is_drawn_within_its_range(channel):
    tissue = block_map()
    array = sitk.GetArrayFromImage(tissue).astype(np.intp)
    seen = {t.key: [] for t in synth.TISSUES}
    for seed in range(12):
        image = synth.draw_channel(array, tissue, channel, np.random.default_rng(seed), PLAIN)
        for t in synth.TISSUES:
            values = image[array == t.value]
            # one value per class when spread and blur are off
            assert values.std() <= 1e-5 * max(1.0, abs(values.mean())), t.key
            seen[t.key].append(float(values.mean()))
    for t in synth.TISSUES:
        lo, hi = getattr(t, channel)
        means = np.array(seen[t.key])
        if channel == "ct":
            assert lo - 0.5 <= means.min() and means.max() <= hi + 0.5, (t.key, means)
            assert means.max() - means.min() > 0.2 * (hi - lo), t.key  # really drawn, not fixed
        else:  # MR is rescaled to [0, 1]: its order is checked below
            assert means.max() <= 1.0 + 1e-6 and means.min() >= 0.0
    if channel == "t1":
        seen_wm, seen_csf = np.array(seen["white_matter"]), np.array(seen["csf"])
        assert np.all(seen_wm > seen_csf)  # plausible-contrast draws keep T1's order
    if channel == "t2":
        assert np.all(np.array(seen["csf"]) > np.array(seen["white_matter"]))


def test_random_contrast_breaks_the_order_sometimes():
    tissue = block_map()
    array = sitk.GetArrayFromImage(tissue).astype(np.intp)
    params = dataclasses.replace(PLAIN, random_contrast=1.0)
    flipped = 0
    for seed in range(20):
        image = synth.draw_channel(array, tissue, "t1", np.random.default_rng(seed), params)
        flipped += image[array == synth.TISSUE_VALUE["csf"]].mean() > image[array == 5].mean()
    assert 3 <= flipped <= 17


def test_within_class_spread_noise_and_bias_are_applied():
    tissue = block_map()
    array = sitk.GetArrayFromImage(tissue).astype(np.intp)
    params = synth.SynthParams(rotation_degrees=0, scales=(1, 1), shear=0, translation_mm=0, elastic_max_mm=0,
                               mr_spread=(0.05, 0.05), mr_noise=(0.02, 0.02), bias_std=0.3)
    image = synth.draw_channel(array, tissue, "t1", np.random.default_rng(0), params)
    inner = image[array == synth.TISSUE_VALUE["white_matter"]]
    assert inner.std() > 0.005


def test_the_thin_classes_have_stand_ins_and_nothing_else_has():
    assert sorted(t.key for t in THIN) == ["falx", "sinus", "tentorium"]
    for t in THIN:
        assert all(name in synth.TISSUE_VALUE and not synth.TISSUES[synth.TISSUE_VALUE[name]].stand_ins
                   for name in t.stand_ins)


def test_concealment_is_drawn_per_thin_class_at_its_rate():
    rng = np.random.default_rng(0)
    draws = [synth.draw_stand_ins(rng) for _ in range(400)]
    for t in THIN:
        concealed = [d[t.value] for d in draws if t.value in d]
        assert 0.42 < len(concealed) / len(draws) < 0.58, t.key  # default conceal_thin 0.5
        assert {synth.TISSUES[v].key for v in concealed} == set(t.stand_ins)  # every stand-in is used
    never = dataclasses.replace(synth.SynthParams(), conceal_thin=0.0)
    assert synth.draw_stand_ins(rng, never) == {}


@pytest.mark.parametrize("channel", ["ct", "t1", "t2"])
def test_a_concealed_thin_class_looks_exactly_like_its_stand_in(channel):
    tissue = block_map()
    array = sitk.GetArrayFromImage(tissue).astype(np.intp)
    always = dataclasses.replace(PLAIN, conceal_thin=1.0)
    for seed in range(6):
        rng = np.random.default_rng(seed)
        stand_ins = synth.draw_stand_ins(rng, always)
        assert set(stand_ins) == {t.value for t in THIN}
        image = synth.draw_channel(array, tissue, channel, rng, PLAIN, stand_ins)
        for value, stand_in in stand_ins.items():
            assert np.allclose(image[array == value], image[array == stand_in].mean(), atol=1e-5)


def test_concealment_changes_the_thin_classes_only():
    """Same seed with and without concealment: the same pose, label and other intensities (the
    concealment draws come from a child generator), and the thin classes look different."""
    tissue = block_map()
    plain_images, plain_label = synth.synthesize(tissue, np.random.default_rng([2, 0]), PLAIN)
    hidden_images, hidden_label = synth.synthesize(tissue, np.random.default_rng([2, 0]),
                                                   dataclasses.replace(PLAIN, conceal_thin=1.0))
    assert np.array_equal(sitk.GetArrayFromImage(plain_label), sitk.GetArrayFromImage(hidden_label))
    array = sitk.GetArrayFromImage(tissue)
    thin = np.isin(array, [t.value for t in THIN])
    for key in ("ct", "t1", "t2"):
        a = sitk.GetArrayFromImage(plain_images[key]).astype(float)
        b = sitk.GetArrayFromImage(hidden_images[key]).astype(float)
        if key == "ct":  # MR channels are rescaled to their maximum, which a thin class may hold
            assert np.array_equal(a[~thin], b[~thin])
        assert not np.array_equal(a[thin], b[thin])


def test_label_and_image_stay_aligned_after_deformation():
    """With sharp images, every voxel's CT value is its label's tissue value, and the pose moved it."""
    tissue = block_map()
    params = dataclasses.replace(PLAIN, rotation_degrees=12, translation_mm=6, elastic_max_mm=4)
    images, label = synth.synthesize(tissue, np.random.default_rng(5), params)
    moved = sitk.GetArrayFromImage(label)
    original = synth.TASK1_LUT[sitk.GetArrayFromImage(tissue)]
    assert (moved != original).mean() > 0.02  # the pose really moved the anatomy
    ct = sitk.GetArrayFromImage(images["ct"]).astype(float)
    for value in range(1, 6):
        ranges = [t.ct for t in synth.TISSUES if t.label == value]
        inside = ct[moved == value]
        assert inside.size > 0
        ok = np.zeros(inside.shape, bool)
        for lo, hi in ranges:
            ok |= (inside >= lo - 1) & (inside <= hi + 1)
        assert ok.all(), value


def test_thick_slices_blur_along_one_axis_only():
    tissue = block_map()
    array = sitk.GetArrayFromImage(tissue).astype(np.intp)
    params = dataclasses.replace(PLAIN, thick_slice_probability=1.0, thick_slice_mm=(8, 8), resolution_mm=(2, 2))
    image = synth.draw_channel(array, tissue, "ct", np.random.default_rng(1), params)
    sharp = synth.draw_channel(array, tissue, "ct", np.random.default_rng(1),
                               dataclasses.replace(params, thick_slice_probability=0.0))
    assert not np.allclose(image, sharp)


def test_write_cases_writes_the_abcs_layout_and_redraws_a_case_alone(tmp_path):
    path = tmp_path / "tissue.nrrd"
    sitk.WriteImage(block_map(), str(path))
    assert synth.write_cases(path, tmp_path / "a", count=2, seed=4) == ["002", "003"]
    synth.write_cases(path, tmp_path / "b", count=1, seed=4)
    names = sorted(p.name for p in (tmp_path / "a/003").iterdir())
    assert names == ["003_ct.mha", "003_labelmap_task1.mha", "003_t1.mha", "003_t2.mha"]
    first = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "a/002/002_t2.mha")))
    again = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "b/002/002_t2.mha")))
    assert np.array_equal(first, again)


def test_speed_benchmark_prints_seconds_per_sample(capsys):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "bench/bench_synth.py"
    spec = importlib.util.spec_from_file_location("bench_synth", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.main(["--samples", "1"]) == 0
    out = capsys.readouterr().out
    assert "grid (151, 181, 151)" in out and "seconds per sample: mean" in out


def test_synth_command_writes_cases_and_refuses_to_overwrite(tmp_path, capsys):
    from brainbarriers_training.cli import main

    path = tmp_path / "tissue.nrrd"
    sitk.WriteImage(block_map(), str(path))
    out = tmp_path / "data"
    assert main(["synth", "--tissue", str(path), "--out", str(out), "--count", "1", "--first-id", "7"]) == 0
    assert "wrote 1 synthetic cases" in capsys.readouterr().out
    before = (out / "007/007_ct.mha").read_bytes()
    assert main(["synth", "--tissue", str(path), "--out", str(out), "--count", "1", "--first-id", "7",
                 "--seed", "9"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "007 exists" in err
    assert (out / "007/007_ct.mha").read_bytes() == before  # nothing the user had is replaced


def test_synth_command_refuses_a_map_with_unknown_classes(tmp_path, capsys):
    from brainbarriers_training.cli import main

    bad = sitk.GetArrayFromImage(block_map())
    bad[0, 0, 0] = len(synth.TISSUES)
    path = tmp_path / "bad.nrrd"
    sitk.WriteImage(sitk.GetImageFromArray(bad), str(path))
    assert main(["synth", "--tissue", str(path), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "tissue values must lie in 0..15" in err
    assert not (tmp_path / "o").exists()


def refused_option(tmp_path, capsys, tissue: sitk.Image, option: str, value: str):
    """Write ``tissue``, run ``synth`` with a bad ``option value``: exit 2, one line naming the
    option's range, no output folder. Returns (cli main, the tissue map's path)."""
    from brainbarriers_training.cli import main

    path = tmp_path / "tissue.nrrd"
    sitk.WriteImage(tissue, str(path))
    assert main(["synth", "--tissue", str(path), "--out", str(tmp_path / "bad"), option, value]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and f"{option} must lie in [0, 1]" in err
    assert not (tmp_path / "bad").exists()
    return main, path


def test_synth_command_sets_the_concealment_and_refuses_a_bad_probability(tmp_path, capsys):
    main, path = refused_option(tmp_path, capsys, block_map(), "--conceal-thin", "1.5")
    for p in ("0", "1"):
        assert main(["synth", "--tissue", str(path), "--out", str(tmp_path / p), "--count", "1",
                     "--conceal-thin", p]) == 0
    never = dataclasses.replace(synth.SynthParams(), conceal_thin=0.0)
    synth.write_cases(path, tmp_path / "api", count=1, seed=0, params=never)

    def t2(folder: str) -> np.ndarray:
        return sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / folder / "002/002_t2.mha")))

    assert np.array_equal(t2("0"), t2("api"))
    assert not np.array_equal(t2("0"), t2("1"))


def head_map(direction_z: float = 1.0) -> sitk.Image:
    """A cylinder 'head' reaching the lowest slice, a brainstem column at its back, a cerebellum above."""
    array = np.zeros((SIZE, SIZE, SIZE), np.uint8)
    kk, jj, ii = np.indices(array.shape)
    array[(jj - 20) ** 2 + (ii - 20) ** 2 <= 15**2] = synth.TISSUE_VALUE["scalp"]
    array[(kk >= 4) & ((jj - 26) ** 2 + (ii - 20) ** 2 <= 3**2)] = synth.TISSUE_VALUE["brainstem"]
    array[(kk >= 10) & (kk < 20) & ((jj - 20) ** 2 + (ii - 20) ** 2 <= 8**2)] = synth.TISSUE_VALUE["cerebellar_cortex"]
    if direction_z < 0:  # the same head stored top slice first (index grows towards the feet)
        array = array[::-1]
    image = sitk.GetImageFromArray(np.ascontiguousarray(array))
    image.SetSpacing((2.0, 2.0, 2.0))
    image.SetDirection((1, 0, 0, 0, 1, 0, 0, 0, direction_z))
    image.SetOrigin((-40.0, -40.0, -40.0 if direction_z > 0 else 38.0))
    return image


NECK_CLASSES = {synth.TISSUE_VALUE[k] for k in ("air", "scalp", "skull", "csf", "brainstem", "muscle", "fat")}


@pytest.mark.parametrize("direction_z", [1.0, -1.0])
def test_a_neck_extends_the_map_downwards_and_leaves_the_head_where_it_was(direction_z):
    tissue = head_map(direction_z)
    neck = synth.add_neck(tissue, 30.0, np.random.default_rng(0), taper=(0.6, 0.6))
    assert neck.GetSize() == (SIZE, SIZE, SIZE + 15)
    assert neck.GetSpacing() == tissue.GetSpacing() and neck.GetDirection() == tissue.GetDirection()
    # the head, found by physical position, is unchanged
    back = sitk.Resample(neck, tissue, sitk.Transform(), sitk.sitkNearestNeighbor, 99)
    assert np.array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(tissue))
    lowest_z = min(neck.TransformIndexToPhysicalPoint((0, 0, k))[2] for k in (0, SIZE + 14))
    assert lowest_z == pytest.approx(-40.0 - 30.0)
    # the new slices: neck classes only (no target), narrowing to the taper's area, the cord under the brainstem
    array = sitk.GetArrayFromImage(neck)
    new = array[:15] if direction_z > 0 else array[SIZE:]
    deepest = new[0] if direction_z > 0 else new[-1]
    assert set(np.unique(new).tolist()) <= NECK_CLASSES
    assert set(np.unique(new).tolist()) >= NECK_CLASSES - {synth.TISSUE_VALUE["air"]}
    head_area = (sitk.GetArrayFromImage(tissue)[0 if direction_z > 0 else -1] > 0).sum()
    assert (deepest > 0).sum() / head_area == pytest.approx(0.36, abs=0.08)
    cord = np.argwhere(deepest == synth.TISSUE_VALUE["brainstem"]).mean(0)
    assert np.allclose(cord, (26, 20), atol=1.0)


def test_the_neck_is_drawn_at_its_rate_and_never_changes_the_labels_of_the_head():
    tissue = head_map()
    plain_images, plain_label = synth.synthesize(tissue, np.random.default_rng([1, 0]), PLAIN)
    with_neck = dataclasses.replace(PLAIN, neck_probability=1.0, neck_mm=(40.0, 40.0))
    images, label = synth.synthesize(tissue, np.random.default_rng([1, 0]), with_neck)
    assert label.GetSize() == (SIZE, SIZE, SIZE + 20) and images["t1"].GetSize() == label.GetSize()
    assert np.array_equal(sitk.GetArrayFromImage(label)[20:], sitk.GetArrayFromImage(plain_label))
    assert not sitk.GetArrayFromImage(label)[:20].any()  # nothing in the neck is a target
    never = synth.synthesize(tissue, np.random.default_rng([1, 0]), dataclasses.replace(with_neck, neck_probability=0.0))
    assert np.array_equal(sitk.GetArrayFromImage(never[0]["ct"]), sitk.GetArrayFromImage(plain_images["ct"]))
    rate = dataclasses.replace(PLAIN, neck_probability=0.5, neck_mm=(10.0, 10.0))
    sizes = [synth.synthesize(tissue, np.random.default_rng([9, n]), rate, channels=("ct",))[1].GetSize()[2]
             for n in range(40)]
    assert 12 <= sizes.count(SIZE + 5) <= 28 and set(sizes) == {SIZE, SIZE + 5}


def test_a_neck_needs_a_head_in_the_lowest_slice():
    array = sitk.GetArrayFromImage(head_map())
    array[:3] = 0
    cut = sitk.GetImageFromArray(array)
    cut.CopyInformation(head_map())
    with pytest.raises(ValueError, match="lowest slice holds no head"):
        synth.add_neck(cut, 20.0, np.random.default_rng(0))


def test_synth_command_refuses_a_bad_neck_probability(tmp_path, capsys):
    main, path = refused_option(tmp_path, capsys, head_map(), "--neck", "-0.1")
    assert main(["synth", "--tissue", str(path), "--out", str(tmp_path / "ok"), "--count", "1", "--neck", "1"]) == 0
    assert sitk.ReadImage(str(tmp_path / "ok/002/002_t1.mha")).GetSize()[2] > SIZE


@pytest.mark.parametrize("channel", ["ct", "t1"])
def test_neck_muscle_mimics_the_cerebellar_cortex_at_its_rate(channel):
    tissue = block_map()
    array = sitk.GetArrayFromImage(tissue).astype(np.intp)
    muscle, cortex = array == synth.TISSUE_VALUE["muscle"], array == synth.TISSUE_VALUE["cerebellar_cortex"]
    same = 0
    for seed in range(40):
        image = synth.draw_channel(array, tissue, channel, np.random.default_rng(seed),
                                   dataclasses.replace(PLAIN, neck_mimic=0.5))
        same += bool(np.isclose(image[muscle].mean(), image[cortex].mean(), atol=1e-5))
    assert 10 <= same <= 30
    never = [synth.draw_channel(array, tissue, channel, np.random.default_rng(seed), PLAIN) for seed in range(10)]
    assert not any(np.isclose(i[muscle].mean(), i[cortex].mean(), atol=1e-5) for i in never)


def test_the_neck_has_skin_fat_and_muscle_from_the_outside_in():
    neck = sitk.GetArrayFromImage(synth.add_neck(head_map(), 30.0, np.random.default_rng(2), taper=(0.8, 0.8)))
    deepest = neck[0]
    row = deepest[20, :]  # across the neck at the cord's height, from the right edge inwards
    inside = np.flatnonzero(row > 0)
    first = row[inside[0]:inside[0] + 6].tolist()
    assert first[0] == synth.TISSUE_VALUE["scalp"] and synth.TISSUE_VALUE["fat"] in first
    assert first[-1] == synth.TISSUE_VALUE["muscle"]  # then muscle, around the spine
