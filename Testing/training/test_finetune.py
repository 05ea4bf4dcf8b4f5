"""Fine-tuning a bundle on site cases: lineage in the manifest, refusal when it does not help, selectable
next to its parent. (Whether it improves a shifted site: test_finetune_site_shift.py, slow.)"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from brainbarriers.bundles import load_bundle
from brainbarriers_training.config import deep_merge, load_config
from brainbarriers_training.finetune import (
    child_version,
    config_for_parent,
    holdout_split,
    merged_volume_stats,
)
from training_helpers import PYTHONPATH, REPO, run_training_cli, write_config

TINY_BUNDLE = REPO / "Testing" / "pipeline" / "tiny_bundle.py"


def _tiny_parent(folder: Path) -> Path:
    """A tiny random falx-only bundle on the phantoms' grids (2.4 mm, coarse 4.8 mm)."""
    spec = importlib.util.spec_from_file_location("tiny_bundle_for_finetune", TINY_BUNDLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.write_tiny_bundle(folder, structures=["falx"], model_id="site-parent", spacing=(2.4, 2.4, 2.4),
                                    coarse_spacing=(4.8, 4.8, 4.8), max_crop=(64, 64, 64))


def _recipe(tmp_path: Path, min_gain: float) -> Path:
    config = deep_merge(load_config("smoke"), {
        "train": {"threads": 1, "num_workers": 0},
        "finetune": {"epochs": 1, "iterations_per_epoch": 2, "holdout_fraction": 0.25, "min_gain": min_gain}})
    return write_config(config, tmp_path / f"recipe_{min_gain}.json")


def test_split_version_and_recipe():
    train, held = holdout_split(["001", "002", "003", "004", "005"], 0.25, 0)
    assert len(held) == 1 and len(train) == 4 and not set(train) & set(held)
    assert holdout_split(["001", "002", "003", "004", "005"], 0.25, 0) == (train, held)  # seeded
    assert holdout_split(["a", "b"], 0.9, 1)[0]  # always one case left to train on
    with pytest.raises(ValueError, match="at least 2 site cases"):
        holdout_split(["001"], 0.25, 0)
    assert child_version("0.1.0") == "0.1.0+site.1" and child_version("0.1.0+site.1") == "0.1.0+site.2"
    parent = {"spacing": [2.0, 2.0, 2.0], "normalisation": {"ct": {"clip": [-50, 90]}},
              "networks": {"coarse": {"architecture": "coarse-unet", "options": {"levels": 3}, "spacing": [4.0, 4.0, 4.0]},
                           "fine": {"falx": {"architecture": "hmrnet-s", "options": {"hr_width": 2, "inter_slice_axis": 2},
                                             "margin": 6, "max_crop": [64, 64, 64]}}}}
    recipe = deep_merge(load_config("smoke"), {"finetune": {"epochs": 3, "iterations_per_epoch": 7, "lr_factor": 0.5}})
    config = config_for_parent(recipe, parent)
    assert config["data"]["spacing"] == [2.0, 2.0, 2.0] and config["data"]["coarse_spacing"] == [4.0, 4.0, 4.0]
    assert config["data"]["normalisation"]["ct"] == {"clip": [-50, 90]}
    # exactly the parent's network: options it leaves out keep the network's defaults, not the recipe's
    assert config["fine"]["networks"]["s"] == {"architecture": "hmrnet-s",
                                               "options": {"hr_width": 2, "activation": "relu"}}
    assert config["fine"]["margin"] == 6 and config["coarse"]["options"] == {"levels": 3}
    for stage, lr in (("coarse", 0.01), ("fine", 0.005)):  # the smoke recipe's rates, halved
        assert config[stage]["epochs"] == 3 and config[stage]["iterations_per_epoch"] == 7
        assert config[stage]["optimizer"]["lr"] == pytest.approx(lr * 0.5)
    stats = merged_volume_stats({"falx": {"cases": 3, "min_ml": 2.0, "max_ml": 4.0, "mean_ml": 3.0}},
                                {"falx": {"cases": 1, "min_ml": 5.0, "max_ml": 5.0, "mean_ml": 5.0},
                                 "ventricles": {"cases": 1, "min_ml": 9.0, "max_ml": 9.0}})
    assert stats == {"falx": {"cases": 4, "min_ml": 2.0, "max_ml": 5.0, "mean_ml": 3.5},
                     "ventricles": {"cases": 1, "min_ml": 9.0, "max_ml": 9.0}}


def test_refusal_then_lineage_and_import(prepared, tmp_path):
    data, _, index = prepared
    parent = _tiny_parent(tmp_path / "parent")
    # an unreachable gain: the candidate is trained and scored, then refused; nothing is written
    refused = run_training_cli(["finetune", "--config", str(_recipe(tmp_path, 1.5)), "--from", str(parent),
                                "--data", str(data), "--out", str(tmp_path / "refused"), "--device", "cpu"], timeout=600)
    assert refused.returncode == 1, refused.stderr[-2000:]
    message = [line for line in refused.stderr.splitlines() if line.strip()]
    assert len(message) == 1 and message[0].startswith("refused: the fine-tuned model is worse than site-parent@0.0.1")
    assert "Traceback" not in refused.stderr and not (tmp_path / "refused").exists()
    scores = json.loads((tmp_path / "refused-work" / "held_out.json").read_text())
    assert scores["cases"] == 1 and 0.0 <= scores["parent"] <= 1.0

    accepted = run_training_cli(["finetune", "--config", str(_recipe(tmp_path, -1.0)), "--from", str(parent),
                                 "--data", str(data), "--out", str(tmp_path / "child"), "--device", "cpu"], timeout=600)
    assert accepted.returncode == 0, accepted.stderr[-2000:]
    child = load_bundle(tmp_path / "child")  # every file verified
    parent_bundle = load_bundle(parent)
    assert child.id == "site-parent" and child.version == "0.0.1+site.1"
    assert child.manifest["parent"] == {"id": "site-parent", "version": "0.0.1", "sha256": parent_bundle.sha256}
    training = child.manifest["training"]
    cases = sorted(e["case"] for e in index["cases"])
    assert training["case_count"] == 3 and len(training["held_out_cases"]) == 1
    assert sorted(training["cases"] + training["held_out_cases"]) == cases
    assert set(child.manifest["volume_stats"]) >= {"falx"}
    assert child.manifest["networks"] == parent_bundle.manifest["networks"]
    # the weights moved away from the parent's
    from safetensors.torch import load_file

    before = load_file(str(parent / "fine_falx.safetensors"))
    after = load_file(str(child.path / "fine_falx.safetensors"))
    assert any(not (before[k] == after[k]).all() for k in before)

    # installed side by side, both are offered by the module's model list
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=PYTHONPATH, BRAINBARRIERS_CACHE=str(tmp_path / "cache"))
    for bundle in (parent, tmp_path / "child"):
        imp = subprocess.run([sys.executable, "-m", "brainbarriers", "models", "import", str(bundle)], env=env,
                             capture_output=True, text=True, timeout=120)
        assert imp.returncode == 0, imp.stderr
    listing = subprocess.run([sys.executable, "-c", "from SlicerBrainBarriersLib.models import list_models; "
                              "print([(e.id, e.version, e.downloaded) for e in list_models()])"],
                             env=env, capture_output=True, text=True, timeout=120)
    assert "('site-parent', '0.0.1', True)" in listing.stdout and "('site-parent', '0.0.1+site.1', True)" in listing.stdout


def test_a_child_of_an_ensemble_has_one_network_per_target(tmp_path):
    """Fine-tuning trains the parent's first network of a target; the other members were never
    trained on the site, so the child's manifest does not name them (and stays valid)."""
    from brainbarriers.bundles import validate_manifest
    from brainbarriers_training.finetune import child_manifest

    spec = importlib.util.spec_from_file_location("tiny_bundle_for_finetune", TINY_BUNDLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    parent = load_bundle(module.write_tiny_bundle(tmp_path / "parent", structures=["sagittal_sinus"],
                                                  ensembles={"sagittal_sinus": 2}))
    assert parent.network_spec("sagittal_sinus")["ensemble"] == ["fine_sagittal_sinus_2.safetensors"]
    child = child_manifest(parent, "0.0.2", ["001"], ["002"], tmp_path, "smoke", {}, {})
    assert "ensemble" not in child["networks"]["fine"]["sagittal_sinus"]
    validate_manifest({**child, "files": [{"path": "coarse.safetensors", "size": 1, "sha256": "0" * 64},
                                          {"path": "fine_sagittal_sinus.safetensors", "size": 1, "sha256": "0" * 64}]})
