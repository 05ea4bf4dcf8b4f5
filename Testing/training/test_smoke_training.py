"""Smoke training on phantoms with the smoke recipe, scored on held-out phantoms through the exported
bundle and the shipped pipeline (slow: CI's slow budget)."""

import os

import pytest
import torch
from brainbarriers_training.smoke import THRESHOLDS, failures, report, run_smoke


@pytest.mark.slow
def test_smoke_recipe_reaches_target_dice(tmp_path, capsys):
    # 2 threads on CI's dedicated cores; on a shared, loaded machine set TRAINING_TEST_THREADS=1
    torch.set_num_threads(int(os.environ.get("TRAINING_TEST_THREADS", "2")))
    rows, facts = run_smoke(tmp_path)
    with capsys.disabled():  # the figures are part of the result: print them even when the test passes
        print("\n" + report(rows, facts))
    dead = {k: c for k, c in facts["fine_checks"].items() if c and not c["ok"]}
    assert not dead, f"fine networks that find no foreground in their own training crops: {dead}"
    assert not failures(rows), "; ".join(failures(rows)) + f" (Dice thresholds {THRESHOLDS})"
