"""One-stage mode (Table VI baselines): a single network trained on the whole head at the model
spacing, exported as a one-stage bundle and run end to end by ``brainbarriers segment``."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from brainbarriers.bundles import load_bundle
from brainbarriers.bundles.schema import validate_manifest
from brainbarriers.structures import COARSE_CHANNELS, FINE_TARGETS
from brainbarriers_training.cli import main
from brainbarriers_training.config import ConfigError, as_recipe
from brainbarriers_training.data import TrainingSet
from brainbarriers_training.phantom import case_files
from training_helpers import PYTHONPATH, REPO, tiny_config


def one_stage_config(**train) -> dict:
    cfg = tiny_config(train={"epochs": 1, "iterations_per_epoch": 2, "batch_size": 1, "checkpoint_every_steps": 0,
                             **train})
    cfg["mode"] = "one-stage"
    cfg["coarse"] = {"architecture": "unet3d", "options": {"widths": [4, 8, 8]}, "patch_size": [32, 32, 32]}
    cfg["bundle"] = {"id": "phantom-one-stage", "version": "0.0.1", "licence": "Apache-2.0", "description": "test"}
    return cfg


def test_recipe_mode_is_validated():
    assert as_recipe({}).mode == "two-stage"
    assert as_recipe({"mode": "one-stage"}).mode == "one-stage"
    with pytest.raises(ConfigError, match="'mode' must be"):
        as_recipe({"mode": "onestage"})


def test_one_stage_samples_are_whole_head_at_model_spacing(prepared):
    _, cache, index = prepared
    cfg = {**one_stage_config()["train"], "one_stage": True, "augmentation": {}}
    x, y = TrainingSet(cache, index["cases"], None, cfg, index["spacing"], 1, 0, augment=False)[0]
    with np.load(cache / index["cases"][0]["file"]) as z:
        assert tuple(y.shape) == z["label"].shape  # the model grid, not the coarse one
        assert set(np.unique(y.numpy())) == set(np.unique(z["label"]))  # fine-target indices


def test_one_stage_trains_exports_and_segments(prepared, tmp_path):
    data, cache, _ = prepared
    torch.set_num_threads(1)
    work = tmp_path / "work"
    config = tmp_path / "one.json"
    config.write_text(json.dumps(one_stage_config()))
    assert main(["train", "--config", str(config), "--cache", str(cache), "--workdir", str(work)]) == 0
    assert (work / "one-stage" / "final.safetensors").is_file() and not (work / "coarse").exists()
    spec = json.loads((work / "one-stage" / "network.json").read_text())
    assert spec["architecture"] == "unet3d" and spec["out_channels"] == COARSE_CHANNELS

    out = tmp_path / "bundle"
    assert main(["export", "--workdir", str(work), "--out", str(out), "--cache", str(cache)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    validate_manifest(manifest, "one-stage bundle")
    assert manifest["mode"] == "one-stage" and manifest["networks"]["fine"] == {}
    assert manifest["structures"] == [t.key for t in FINE_TARGETS]
    assert manifest["networks"]["coarse"]["spacing"] == manifest["spacing"]
    bad = {**manifest, "mode": "three-stage"}
    with pytest.raises(Exception, match="mode"):
        validate_manifest(bad, "bad mode")
    assert load_bundle(out).build_network("coarse") is not None

    files_in = case_files(data, "001")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=PYTHONPATH)
    seg = subprocess.run([sys.executable, "-m", "brainbarriers", "segment", "--ct", str(files_in["ct"]),
                          "--t1", str(files_in["t1"]), "--t2", str(files_in["t2"]), "--output", str(tmp_path / "seg"),
                          "--model", str(out), "--device", "cpu", "--case", "p001", "--quality", "full"],
                         env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert seg.returncode == 0, seg.stderr[-2000:]
    labels = sitk.ReadImage(str(tmp_path / "seg" / "p001_labels.nii.gz"))
    reference = sitk.ReadImage(str(files_in["ct"]))
    assert labels.GetSize() == reference.GetSize()
    assert np.allclose(labels.GetOrigin(), reference.GetOrigin(), atol=1e-4)  # NIfTI stores float32
    values = set(np.unique(sitk.GetArrayViewFromImage(labels)).tolist())
    assert values <= {0, 1, 2, 3, 4, 5}
    assert {"p001.seg.nrrd", "p001_report.json"} <= {p.name for p in (tmp_path / "seg").iterdir()}
    report = json.loads((tmp_path / "seg" / "p001_report.json").read_text())
    assert report["fine_boxes"] == {} and report["quality"] == "full"  # no coarse localisation; flip TTA ran


def test_one_stage_recipe_refuses_train_fine(prepared, tmp_path, capsys):
    _, cache, _ = prepared
    config = tmp_path / "one.json"
    config.write_text(json.dumps(one_stage_config()))
    assert main(["train-fine", "--config", str(config), "--cache", str(cache), "--workdir", str(tmp_path / "w")]) == 2
    assert "one-stage" in capsys.readouterr().err


def test_compare_lists_a_one_stage_baseline(prepared, tmp_path):
    from brainbarriers_training.compare import compare, network_recipe

    _, cache, _ = prepared
    torch.set_num_threads(1)
    md = compare(tiny_config(train={"epochs": 1, "iterations_per_epoch": 2}), cache, tmp_path, ["unet3d:one-stage"],
                 folds=2, options={"unet3d": {"widths": [4, 8, 8]}})
    assert "| unet3d:one-stage |" in md
    manifest = json.loads((tmp_path / "unet3d-one-stage" / "fold_0" / "bundle" / "manifest.json").read_text())
    assert manifest["mode"] == "one-stage" and manifest["networks"]["coarse"]["architecture"] == "unet3d"
    assert (tmp_path / "unet3d-one-stage" / "evaluation" / "metrics.csv").is_file()
    with pytest.raises(ValueError, match="unknown network 'unet4d'"):
        network_recipe(tiny_config(), "unet4d:one-stage")


def test_finetune_refuses_a_one_stage_parent():
    from brainbarriers_training.finetune import config_for_parent

    with pytest.raises(ValueError, match="is one-stage"):
        config_for_parent(tiny_config(), {"mode": "one-stage", "id": "m", "networks": {"coarse": {}, "fine": {}}})
