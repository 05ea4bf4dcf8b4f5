"""scripts/judge_demo_candidate.py: the rule of docs/demo-candidates.md, on unrounded figures,
run as a command on folders laid out as the rule's commands write them."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

from brainbarriers_training.anatomy import head_checks

REPO = Path(__file__).resolve().parents[2]
STRUCTURES = ("cerebellum", "falx", "sinuses", "tentorium", "ventricles")
CASES = ("1401", "1402", "1403", "1404")
#: a development head that meets every check but the falx edge (as 0.5.0 on 101)
DEV = {"cerebellum_ml": 184.0, "cerebellum_x": 0.5, "cerebellum_y": 0.72, "cerebellum_z": 0.43,
       "right_lateral_ventricle_found_ml": 4.0, "right_lateral_ventricle_label_ml": 4.2,
       "left_lateral_ventricle_found_ml": 5.0, "left_lateral_ventricle_label_ml": 5.2,
       "falx_front": 0.1, "falx_back": 0.88, "falx_on_midline": 1.0, "falx_edge_above_roof_mm": 0.0,
       "vertex_sinus_components": 1.0, "vertex_sinus_largest_fraction": 1.0, "vertex_sinus_span": 0.8}


def write_bundle_figures(root: Path, dice: dict[str, float], pieces: tuple[int, ...], dev: dict) -> dict[str, Path]:
    """The three folders of one bundle: generated heads' anatomy, their evaluation, development heads."""
    heads, evaluation, devheads = root / "heads", root / "eval", root / "dev"
    for folder in (heads, evaluation, devheads):
        folder.mkdir(parents=True)
    with open(evaluation / "metrics.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["case", "structure", "dice"])
        for i, case in enumerate(CASES):  # per-head scores spread around the mean
            for s in STRUCTURES:
                writer.writerow([case, s, (dice[s] + (i - 1.5) * 2.0) / 100.0])
    (heads / "anatomy.json").write_text(json.dumps({c: {"vertex_sinus_components": float(p)} for c, p in zip(CASES, pieces)}))
    (devheads / "anatomy.json").write_text(json.dumps({"101": dev}))
    return {"": heads, "-eval": evaluation, "-devheads": devheads}


def judge(tmp_path: Path, cand_dice: dict, cand_pieces=(1, 1, 1, 2), cand_dev=DEV) -> subprocess.CompletedProcess:
    base = write_bundle_figures(tmp_path / "base", dict.fromkeys(STRUCTURES, 50.0), (1, 1, 1, 2), DEV)
    cand = write_bundle_figures(tmp_path / "cand", cand_dice, cand_pieces, cand_dev)
    args = [a for suffix in base for a in (f"--candidate{suffix}", str(cand[suffix]), f"--baseline{suffix}", str(base[suffix]))]
    return subprocess.run([sys.executable, str(REPO / "scripts/judge_demo_candidate.py"), *args],
                          capture_output=True, text=True, timeout=120)


def test_a_candidate_equal_to_the_shipped_model_meets_the_rule(tmp_path):
    run = judge(tmp_path, dict.fromkeys(STRUCTURES, 50.0))
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.strip().endswith("all criteria met")
    assert "NOT MET" not in run.stdout


def test_one_structure_more_than_three_points_down_fails_criteria_1(tmp_path):
    dice = dict.fromkeys(STRUCTURES, 50.0) | {"ventricles": 46.9}
    run = judge(tmp_path, dice)
    assert run.returncode == 1, run.stdout + run.stderr
    line = next(x for x in run.stdout.splitlines() if x.startswith("ventricles"))
    assert "-3.1" in line and line.endswith("NOT MET"), line
    # 3.1 down in one structure of five moves the average by 0.62 only: criterion 2 is met
    assert "(2) at most 1.5 below: met" in run.stdout


def test_the_average_and_the_vertex_sinus_pieces_are_criteria_2_and_3(tmp_path):
    dice = dict.fromkeys(STRUCTURES, 48.0)  # each 2 down: (1) met, the average 2 down: (2) not
    run = judge(tmp_path, dice, cand_pieces=(1, 2, 2, 2))  # 1 head in one piece against 3
    assert run.returncode == 1
    assert "(2) at most 1.5 below: NOT MET" in run.stdout
    assert "in one piece on 1 of 4 heads (shipped: 3); (3) at least 2: NOT MET" in run.stdout


def test_a_development_check_is_judged_on_the_unrounded_figure(tmp_path):
    equal = dict.fromkeys(STRUCTURES, 50.0)
    # 0.449 prints as 0.45 in heldout_report's table, yet is under the cerebellum check's bound
    assert judge(tmp_path / "under", equal, cand_dev=DEV | {"cerebellum_z": 0.449}).returncode == 0
    run = judge(tmp_path / "over", equal, cand_dev=DEV | {"cerebellum_z": 0.4501})
    assert run.returncode == 1
    assert "development head 101" in run.stdout and "NOT MET, lost: cerebellum" in run.stdout
    # a check the shipped model fails too (the falx edge here) is not asked of the candidate
    assert "falx_edge" not in run.stdout.split("lost:")[1]


def test_a_missing_folder_is_one_line_and_exit_2(tmp_path):
    run = subprocess.run([sys.executable, str(REPO / "scripts/judge_demo_candidate.py"), *[
        a for s in ("", "-eval", "-devheads") for a in (f"--candidate{s}", str(tmp_path / "no"), f"--baseline{s}", str(tmp_path / "no"))]],
        capture_output=True, text=True, timeout=120)
    assert run.returncode == 2
    assert run.stderr.startswith("judge_demo_candidate: ") and len(run.stderr.strip().splitlines()) == 1, run.stderr


def test_a_structure_not_found_fails_its_check():
    assert head_checks(DEV) == {"cerebellum": True, "ventricles": True, "falx": True, "falx_edge": False,
                                "sagittal_sinus": True}
    no_falx = {k: v for k, v in DEV.items() if not k.startswith("falx")}
    assert head_checks(no_falx)["falx"] is False and head_checks(no_falx)["falx_edge"] is False
    halves = DEV | {"vertex_sinus_components": 2.0, "vertex_sinus_largest_fraction": 0.5}
    assert head_checks(halves)["sagittal_sinus"] is False
