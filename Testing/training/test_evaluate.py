import csv
import shutil

import numpy as np
import SimpleITK as sitk
import torch
from brainbarriers.structures import targets_for_labels
from brainbarriers_training.cli import main
from brainbarriers_training.crossval import cross_validate, make_folds
from brainbarriers_training.evaluate import summary_table
from brainbarriers_training.phantom import case_files
from training_helpers import tiny_config


def test_evaluate_prediction_files(prepared, tmp_path, capsys):
    data, _, _ = prepared
    preds = tmp_path / "preds"
    preds.mkdir()
    shutil.copy(case_files(data, "001")["label"], preds / "001_labels.mha")
    lab = sitk.ReadImage(str(case_files(data, "002")["label"]))
    arr = sitk.GetArrayFromImage(lab)
    arr[arr == 5] = 0  # ventricles missed entirely
    moved = sitk.GetImageFromArray(np.roll(arr, 1, axis=0))  # everything else one voxel (2.4 mm) off
    moved.CopyInformation(lab)
    sitk.WriteImage(moved, str(preds / "002.nii.gz"))
    assert main(["evaluate", "--predictions", str(preds), "--data", str(data), "--out", str(tmp_path / "ev")]) == 0
    table = capsys.readouterr().out
    assert main(["evaluate", "--predictions", str(preds), "--data", str(data), "--cases", "002",
                 "--out", str(tmp_path / "ev_one")]) == 0  # --cases picks among the predictions too
    assert {r["case"] for r in csv.DictReader(open(tmp_path / "ev_one" / "metrics.csv"))} == {"002"}
    capsys.readouterr()
    rows = list(csv.DictReader(open(tmp_path / "ev" / "metrics.csv")))
    assert len(rows) == 10
    r1 = {r["structure"]: r for r in rows if r["case"] == "001"}
    assert all(float(r["dice"]) == 1.0 and float(r["assd"]) == 0.0 for r in r1.values())
    r2 = {r["structure"]: r for r in rows if r["case"] == "002"}
    # a missed structure is counted: Dice 0 and the image diagonal as its distances
    diagonal = (64**2 * 3) ** 0.5 * 2.4
    assert float(r2["ventricles"]["dice"]) == 0.0 and r2["ventricles"]["outcome"] == "missed"
    assert abs(float(r2["ventricles"]["assd"]) - diagonal) < 1e-3 and abs(float(r2["ventricles"]["hd95"]) - diagonal) < 1e-3
    assert "1" == table.splitlines()[-2].split()[-1]  # ventricles: one miss
    assert 0.3 < float(r2["cerebellum"]["dice"]) < 1.0 and float(r2["cerebellum"]["hd95"]) >= 2.4 - 1e-6
    assert table.splitlines()[0].split()[:3] == ["Structure", "Dice", "%"]
    assert [line.split()[0] for line in table.splitlines()[1:]] == [
        "cerebellum", "falx", "sinuses", "tentorium", "ventricles", "average"]


def test_summary_table_layout():
    rows = [{"case": "a", "structure": "falx", "dice": 0.8, "assd": 0.5, "hd95": 2.0, "surface_dice": 0.9},
            {"case": "b", "structure": "falx", "dice": 0.6, "assd": float("nan"), "hd95": 4.0, "surface_dice": 0.7}]
    rows[1]["outcome"] = "missed"
    lines = summary_table(rows).splitlines()
    assert lines[1].split() == ["falx", "70.0", "±", "10.0", "0.500", "±", "0.000", "3.00", "±", "1.00",
                                "80.0", "±", "10.0", "1"]
    assert lines[2].split()[0] == "average"


def test_folds_partition_cases():
    folds = make_folds([f"{i:03d}" for i in range(11)], 5, seed=1)
    flat = sorted(c for f in folds for c in f)
    assert flat == [f"{i:03d}" for i in range(11)] and all(2 <= len(f) <= 3 for f in folds)


def test_cross_validate_runs_every_fold(prepared, tmp_path):
    _, cache, _ = prepared
    torch.set_num_threads(1)
    cfg = tiny_config(train={"epochs": 1, "iterations_per_epoch": 1, "batch_size": 1, "checkpoint_every_steps": 0})
    table = cross_validate(cfg, cache, tmp_path, folds=2, targets=targets_for_labels(["ventricles", "cerebellum"]))
    assert "average" in table
    rows = list(csv.DictReader(open(tmp_path / "evaluation" / "metrics.csv")))
    assert sorted({r["case"] for r in rows}) == ["001", "002", "003", "004"]
    for k in (0, 1):
        assert (tmp_path / f"fold_{k}" / "evaluation" / "summary.txt").is_file()
        assert (tmp_path / f"fold_{k}" / "fine" / "ventricles" / "final.safetensors").is_file()


def test_evaluate_equals_scoring_the_segment_command_outputs(prepared, tmp_path):
    """`python -m brainbarriers_training evaluate --model` gives exactly the Dice of `brainbarriers segment`'s labels."""
    from brainbarriers.cli import main as segment_main

    data, _, _ = prepared
    files = case_files(data, "002")
    torch.set_num_threads(1)
    assert main(["evaluate", "--model", "brainbarriers-demo", "--data", str(data), "--cases", "002",
                 "--device", "cpu", "--out", str(tmp_path / "ev")]) == 0
    ours = {r["structure"]: r for r in csv.DictReader(open(tmp_path / "ev" / "metrics.csv"))}
    assert segment_main(["segment", "--ct", str(files["ct"]), "--t1", str(files["t1"]), "--t2", str(files["t2"]),
                         "--model", "brainbarriers-demo", "--device", "cpu", "--output", str(tmp_path / "seg"),
                         "--case", "002", "--progress", "none"]) == 0
    preds = tmp_path / "preds"
    preds.mkdir()
    shutil.copy(tmp_path / "seg" / "002_labels.nii.gz", preds / "002_labels.nii.gz")
    assert main(["evaluate", "--predictions", str(preds), "--data", str(data), "--out", str(tmp_path / "ev2")]) == 0
    theirs = {r["structure"]: r for r in csv.DictReader(open(tmp_path / "ev2" / "metrics.csv"))}
    assert set(ours) == set(theirs) == {"cerebellum", "falx", "sinuses", "tentorium", "ventricles"}
    for key in ours:
        for metric in ("dice", "assd", "hd95", "surface_dice", "outcome"):
            assert ours[key][metric] == theirs[key][metric], (key, metric)
    assert any(float(r["dice"]) > 0.05 for r in ours.values())  # a real comparison, not of two empty maps


def test_scoring_only_the_labelled_structures():
    """A label map of the ventricles alone: the others are not scored as false structures."""
    import pytest
    from brainbarriers_training.evaluate import evaluate_labels

    gt = np.zeros((20, 20, 20), np.int16)
    gt[5:10, 5:10, 5:10] = 5
    pred = gt.copy()
    pred[12:15, 12:15, 12:15] = 1  # a cerebellum the label map says nothing about
    everything = evaluate_labels(pred, gt, (1.0, 1.0, 1.0), "c")
    assert {r["structure"]: r["outcome"] for r in everything}["cerebellum"] == "false structure"
    rows = evaluate_labels(pred, gt, (1.0, 1.0, 1.0), "c", structures=["ventricles"])
    assert [r["structure"] for r in rows] == ["ventricles"] and rows[0]["dice"] == 1.0
    with pytest.raises(ValueError, match="unknown structure 'ventricle'"):
        evaluate_labels(pred, gt, (1.0, 1.0, 1.0), "c", structures=["ventricle"])
