"""Fine-tuning fixes a site shift (slow): a model trained on the original phantoms meets a site whose
falx is thicker and whose CT reads 30 HU higher and T1 30 % brighter; fine-tuned on a few corrected site
cases, it segments held-out site cases better than its parent, by a margin the test asserts."""

from __future__ import annotations

import os
import time

import pytest
import SimpleITK as sitk
import torch
from brainbarriers.structures import targets_for_labels
from brainbarriers_training.config import deep_merge, load_config
from brainbarriers_training.export import export_bundle
from brainbarriers_training.finetune import finetune
from brainbarriers_training.phantom import PhantomCase, generate_case, generate_dataset, write_case
from brainbarriers_training.prepare import prepare
from brainbarriers_training.stages import train_coarse, train_fine

#: Held-out site falx Dice the fine-tuned model must gain over its parent. Measured +0.285 (0.695 -> 0.980;
#: parent trained in 300 s, fine-tuned in 45 s, one torch thread on the shared 2-core development machine,
#: 2026-11-30); the margin leaves room for other CPUs, thread counts and seeds.
MARGIN = 0.15


def write_site(root, cases: int, seed: int) -> None:
    """Phantoms of another site: sheets at least 4 voxels thick (9.6 mm at 2.4 mm), CT +30 HU, T1 x1.3."""
    for n in range(cases):
        c = generate_case(seed * 1000 + n, min_thickness_voxels=4.0)
        ct = sitk.Cast(sitk.Cast(c.ct, sitk.sitkFloat32) + 30.0, sitk.sitkInt16)
        write_case(PhantomCase(ct, c.t1 * 1.3, c.t2, c.label), root, f"{n + 1:03d}")


@pytest.mark.long
def test_finetune_improves_a_shifted_site(tmp_path, capsys):
    torch.set_num_threads(int(os.environ.get("TRAINING_TEST_THREADS", "2")))
    t0 = time.time()
    config = load_config("smoke")
    config["bundle"]["id"] = "phantom-parent"
    generate_dataset(tmp_path / "original", 8, seed=31)
    prepare(tmp_path / "original", tmp_path / "cache", config["data"], progress=False)
    train_coarse(config, tmp_path / "cache", tmp_path / "work")
    train_fine(config, tmp_path / "cache", tmp_path / "work", targets_for_labels(["falx"]))
    parent = export_bundle(tmp_path / "work", tmp_path / "parent")
    t_parent = time.time() - t0

    write_site(tmp_path / "site", 6, seed=5)
    recipe = deep_merge(config, {"finetune": {"holdout_fraction": 0.34}})
    result = finetune(parent, tmp_path / "site", tmp_path / "child", recipe, device="cpu")
    gain = result.candidate_dice - result.parent_dice
    with capsys.disabled():
        print(f"\nsite shift: parent trained in {t_parent:.0f} s, fine-tuned in {time.time() - t0 - t_parent:.0f} s; "
              f"held-out site falx Dice {result.parent_dice:.3f} -> {result.candidate_dice:.3f} (+{gain:.3f}) "
              f"on {result.held_out}, trained on {result.trained_on}")
    assert gain >= MARGIN
