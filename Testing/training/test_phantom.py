import numpy as np
import SimpleITK as sitk
from brainbarriers_training.phantom import case_files, generate_case, generate_dataset


def _arrays(case):
    return {k: sitk.GetArrayFromImage(getattr(case, k)) for k in ("ct", "t1", "t2", "label")}


def test_small_phantom_has_all_labels_and_modality_contrast():
    case = generate_case(5)
    a = _arrays(case)
    assert a["label"].shape == (64, 64, 64)
    counts = np.bincount(a["label"].ravel(), minlength=6)
    assert (counts[1:6] > 100).all(), counts
    assert counts[1] > counts[5]  # cerebellum is the largest structure
    for k in ("ct", "t1", "t2"):
        im = getattr(case, k)
        assert im.GetSize() == case.label.GetSize() and im.GetSpacing() == (2.4, 2.4, 2.4)
        assert im.GetOrigin() == case.label.GetOrigin()
    lab = a["label"]
    brain_like = lab == 0
    ct, t1, t2 = a["ct"].astype(float), a["t1"], a["t2"]
    assert ct.max() > 800  # bone
    assert np.median(ct[lab == 2]) > np.median(ct[(lab == 1)])  # dura hyperdense vs cerebellum
    assert np.median(t1[lab == 3]) > 1.5 * np.median(t1[lab == 1])  # sinuses bright on contrast T1
    assert np.median(t2[lab == 5]) > 1.6 * np.median(t2[lab == 1])  # ventricles (CSF) bright on T2
    assert np.median(t1[lab == 1]) > 1.1 * np.median(t1[(lab == 0) & (t1 > 350) & (t1 < 450)])  # cerebellum vs brain
    assert brain_like.any()


def test_anatomy_is_arranged_plausibly():
    a = _arrays(generate_case(9))["label"]
    k = {v: np.nonzero(a == v) for v in range(1, 6)}  # (K=inferior->superior, J=anterior->posterior, I=right->left)
    mid_i = np.median(k[2][2])
    assert np.ptp(k[2][2]) <= 8  # falx is a thin mid-sagittal sheet (tilted by the random pose)
    assert np.median(np.bincount(k[2][1] * 64 + k[2][0])[np.bincount(k[2][1] * 64 + k[2][0]) > 0]) <= 3
    assert abs(np.median(k[5][2]) - mid_i) < 3  # ventricles either side of the midline
    assert np.median(k[1][0]) < np.median(k[4][0]) < np.median(k[2][0])  # cerebellum < tentorium < falx (height)
    assert np.median(k[1][1]) > np.median(k[5][1])  # cerebellum posterior to the ventricles
    assert k[3][0].max() > k[2][0].max()  # sagittal sinus on top of the falx


def test_phantoms_are_seeded_and_vary():
    a, b, c = (_arrays(generate_case(s)) for s in (1, 1, 2))
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    assert (a["label"] != c["label"]).sum() > 500


def test_full_size_phantom():
    case = generate_case(0, size=(164, 194, 142), spacing=1.2)
    lab = sitk.GetArrayFromImage(case.label)
    assert case.ct.GetSize() == (164, 194, 142) and case.ct.GetSpacing() == (1.2, 1.2, 1.2)
    counts = np.bincount(lab.ravel(), minlength=6)
    assert (counts[1:6] > 2000).all(), counts


def test_dataset_in_abcs_layout(tmp_path):
    ids = generate_dataset(tmp_path, 2, seed=4, first_id=7)
    assert ids == ["007", "008"]
    for f in case_files(tmp_path, "008").values():
        assert f.is_file()
    assert (tmp_path / "007" / "007_labelmap_task1.mha").is_file()
