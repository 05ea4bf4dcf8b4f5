"""FocusNetv2's adversarial shape constraint trained by the engine (alternating updates)."""

import pytest
import torch
from brainbarriers.structures import fine_target
from brainbarriers_training.config import stage_config
from brainbarriers_training.engine import CHECKPOINT, load_checkpoint, train
from training_helpers import tiny_config

FOCUSNETV2 = {"architecture": "focusnetv2", "options": {"widths": [4, 8, 8], "sos_width": 4, "roi_size": [8, 8, 8]}}


def _config(**loss):
    cfg = tiny_config(train={"epochs": 1, "iterations_per_epoch": 3, "batch_size": 1, "checkpoint_every_steps": 0})
    cfg["fine"]["networks"] = {"p": FOCUSNETV2, "s": FOCUSNETV2}
    cfg["fine"]["loss"] = {"name": "focusnet", **loss}
    return cfg


def test_shape_constraint_updates_the_autoencoder_each_step(prepared, tmp_path):
    _, cache, index = prepared
    torch.set_num_threads(1)
    cfg = _config(shape_constraint=True)
    summary = train(cfg, stage_config(cfg, "fine"), cache, index["cases"], tmp_path / "ventricles",
                    fine_target("ventricles"), spacing=index["spacing"])
    assert summary["global_step"] == 3 and all(torch.isfinite(torch.tensor(summary["epoch_losses"])))
    adversary = load_checkpoint(tmp_path / "ventricles" / CHECKPOINT)["adversary"]
    steps = {int(s["step"]) for s in adversary["optimizer"]["state"].values()}
    assert steps == {3}  # D stepped once per training step, alternating with the network

    plain = _config()
    train(plain, stage_config(plain, "fine"), cache, index["cases"], tmp_path / "plain", fine_target("ventricles"),
          spacing=index["spacing"])
    assert load_checkpoint(tmp_path / "plain" / CHECKPOINT)["adversary"] is None


def test_shape_constraint_needs_focusnetv2(prepared, tmp_path):
    _, cache, index = prepared
    cfg = _config(shape_constraint=True)
    cfg["fine"]["loss"]["name"] = "dice_ce"
    with pytest.raises(ValueError, match="shape_constraint needs the focusnet loss on a focusnetv2"):
        train(cfg, stage_config(cfg, "fine"), cache, index["cases"], tmp_path / "v", fine_target("ventricles"),
              spacing=index["spacing"])
