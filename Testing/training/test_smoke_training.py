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
    assert not facts["method"], facts["method"]
    assert not failures(rows), "; ".join(failures(rows)) + f" (Dice thresholds {THRESHOLDS})"


def test_the_gate_names_a_bundle_that_is_not_the_method():
    """Wrong inter-slice axes and removed BFC blocks cost no Dice on the phantoms (measured with
    bench/smoke_spread.py --broken), so the gate checks the exported bundle's networks themselves."""
    from brainbarriers.bundles import build_manifest
    from brainbarriers.structures import FINE_TARGETS
    from brainbarriers_training.config import load_recipe
    from brainbarriers_training.engine import network_spec
    from brainbarriers_training.smoke import method_problems

    def manifest(*overrides):
        recipe = load_recipe("smoke", list(overrides))
        return build_manifest(model_id="m", version="1.0.0", coarse=network_spec(recipe, None),
                              fine={t.key: network_spec(recipe, t) for t in FINE_TARGETS},
                              spacing=recipe.data.spacing, coarse_spacing=recipe.data.coarse_spacing,
                              normalisation=recipe.to_dict()["data"]["normalisation"])

    assert method_problems(manifest()) == []
    wrong = method_problems(manifest('fine.slice_axes={"falx": "AP", "transverse_sinus": "LR"}'))
    assert wrong == ["falx: inter-slice axis AP is not its thin direction LR",
                     "transverse_sinus: inter-slice axis LR is not its thin direction IS"]
    no_bfc = method_problems(manifest("fine.networks.s.options.calibration=false"))
    assert no_bfc == [f"{k}: BFC blocks removed" for k in ("falx", "sagittal_sinus", "transverse_sinus")]
