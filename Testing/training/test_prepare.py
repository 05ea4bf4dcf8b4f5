import json
import shutil

import numpy as np
import SimpleITK as sitk
from brainbarriers.preprocessing import normalise
from brainbarriers.structures import FINE_TARGETS
from brainbarriers_training.cli import main
from brainbarriers_training.config import load_config
from brainbarriers_training.phantom import case_files, generate_case, generate_dataset, write_case
from brainbarriers_training.prepare import load_case, load_index
from training_helpers import make_prepared, run_training_cli


def test_prepare_abcs_layout_reports_broken_cases(tmp_path, capsys):
    data = tmp_path / "abcs"
    generate_dataset(data, 3, seed=2, first_id=1)
    # broken 004: T2 on another grid; 005: missing label map; 006: corrupt CT file
    case = generate_case(99)
    write_case(case, data, "004")
    t2 = sitk.Resample(case.t2, [60, 64, 64], sitk.Transform(), sitk.sitkLinear, case.t2.GetOrigin(),
                       case.t2.GetSpacing(), case.t2.GetDirection())
    sitk.WriteImage(t2, str(case_files(data, "004")["t2"]))
    write_case(generate_case(98), data, "005")
    case_files(data, "005")["label"].unlink()
    write_case(generate_case(97), data, "006")
    case_files(data, "006")["ct"].write_bytes(b"not an image")

    cache = tmp_path / "cache"
    rc = main(["prepare", "--config", "smoke", "--data", str(data), "--cache", str(cache)])
    out = capsys.readouterr().out
    assert rc == 0
    index = load_index(cache)
    assert [c["case"] for c in index["cases"]] == ["001", "002", "003"]
    problems = {p["case"]: p["problem"] for p in index["problems"]}
    assert set(problems) == {"004", "005", "006"}
    assert "t2 size" in problems["004"] and "label file missing" in problems["005"] and "ct" in problems["006"]
    for name in ("004", "005", "006"):
        assert f"problem case {name}" in out

    entry = index["cases"][0]
    image, label = load_case(cache, entry)
    cimage, clabel = load_case(cache, entry, coarse=True)
    assert image.shape == (3, 64, 64, 64) and image.dtype == np.float32
    assert cimage.shape == (3, 32, 32, 32) and clabel.shape == (32, 32, 32)
    # normalised as brainbarriers.preprocessing does (same grid here: the phantom spacing is the model's)
    for c, m in enumerate(("ct", "t1", "t2")):
        raw = sitk.Cast(sitk.ReadImage(str(case_files(data, "001")[m])), sitk.sitkFloat32)  # already on the model grid
        expected = normalise(sitk.GetArrayFromImage(raw), m, load_config("smoke")["data"]["normalisation"][m])
        np.testing.assert_allclose(image[c], expected, atol=1e-4)
    # every fine target present (sinus split into two), boxes consistent with the label
    for t in FINE_TARGETS:
        mask = label == t.coarse_index
        assert mask.sum() > 20, t.key
        (k0, j0, i0), (k1, j1, i1) = entry["boxes"][t.key]
        assert mask[k0:k1, j0:j1, i0:i1].sum() == mask.sum()
    raw = sitk.GetArrayFromImage(sitk.ReadImage(str(case_files(data, "001")["label"])))
    s = [t.coarse_index for t in FINE_TARGETS if t.label == 3]
    assert np.isin(label, s).sum() == (raw == 3).sum()  # same grid here: the split keeps every voxel


def test_prepare_flat_folder_and_csv(tmp_path):
    nested = tmp_path / "nested"
    generate_dataset(nested, 2, seed=5)
    flat = tmp_path / "flat"
    flat.mkdir()
    for f in nested.glob("*/*.mha"):
        shutil.copy(f, flat / f.name)
    main(["prepare", "--config", "smoke", "--data", str(flat), "--cache", str(tmp_path / "c1")])
    assert [c["case"] for c in load_index(tmp_path / "c1")["cases"]] == ["001", "002"]

    csv = tmp_path / "cases.csv"
    rows = ["case,ct,t1,t2,label"]
    for cid in ("001", "002"):
        f = case_files(nested, cid)
        rows.append(f"patient{cid},{f['ct']},nested/{cid}/{cid}_t1.mha,{f['t2']},{f['label']}")
    csv.write_text("\n".join(rows) + "\n")
    main(["prepare", "--config", "smoke", "--data", str(csv), "--cache", str(tmp_path / "c2")])
    index = json.loads((tmp_path / "c2" / "index.json").read_text())
    assert [c["case"] for c in index["cases"]] == ["patient001", "patient002"] and not index["problems"]


def test_user_errors_are_one_line(tmp_path):
    r = run_training_cli(["prepare", "--data", str(tmp_path / "nope"), "--cache", str(tmp_path / "c")])
    assert r.returncode == 2 and r.stderr.strip().startswith("error:") and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    r = run_training_cli(["train-coarse", "--config", "nosuchrecipe", "--cache", str(tmp_path), "--workdir", str(tmp_path)])
    assert r.returncode == 2 and "no config" in r.stderr and "Traceback" not in r.stderr


def test_coarse_labels_keep_thin_targets():
    from brainbarriers_training.prepare import thin_preserving_labels

    arr = np.zeros((20, 20, 20), np.uint8)
    arr[2:18, 2:18, 9] = 2  # a one-voxel sheet (falx-like)
    arr[4:12, 4:12, 12:18] = 1  # a plump block
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing((1.2, 1.2, 1.2))
    nearest = sitk.GetArrayFromImage(sitk.Resample(img, [5, 5, 5], sitk.Transform(), sitk.sitkNearestNeighbor,
                                                   img.GetOrigin(), (4.8, 4.8, 4.8)))
    from brainbarriers.geometry import model_grid

    coarse = sitk.GetArrayFromImage(thin_preserving_labels(img, model_grid(img, (4.8, 4.8, 4.8))))
    assert coarse.shape == (5, 5, 5)
    assert not (nearest == 2).any()  # nearest-neighbour loses the sheet
    assert (coarse == 2).sum() >= 9 and (coarse == 1).any()


def test_training_refuses_a_cache_prepared_at_other_spacings(tmp_path):
    # a coarse network trained on the cache's grid would be exported with the recipe's spacing
    _, cache, index = make_prepared(tmp_path, cases=2)
    for stage, key in (("train-coarse", "coarse_spacing"), ("train-fine", "spacing")):
        wrong = [2 * v for v in index[key]]
        run = run_training_cli([stage, "--config", "smoke", "--cache", str(cache), "--workdir", str(tmp_path / "run"),
                                "--set", f"data.{key}={json.dumps(wrong)}"]
                               + (["--structure", "falx"] if stage == "train-fine" else []), timeout=300)
        assert run.returncode == 2, run.stderr
        assert run.stderr.count("\n") == 1 and "Traceback" not in run.stderr
        assert f"prepared with {key}" in run.stderr and "run `prepare` again" in run.stderr
        assert not (tmp_path / "run").exists() or not any((tmp_path / "run").rglob("*.safetensors"))
