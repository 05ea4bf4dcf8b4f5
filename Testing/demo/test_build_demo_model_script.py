"""scripts/build_demo_model.sh's order of work, run for real by bash with a recording interpreter in
place of Python (the real commands take hours): the two training lanes run side by side, the neck
run waits for both, and a failed run stops the build before it touches the bundle."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BUNDLE = Path("SlicerBrainBarriers/brainbarriers/models/brainbarriers-demo")

#: Stands in for $PY: records each command with its start and end, makes the folders the script copies
#: next, and fails a command that names $FAIL_ON.
RECORDER = textwrap.dedent("""\
    #!{python}
    import json, os, sys, time
    from pathlib import Path
    args = sys.argv[1:]
    def value(flag):
        return args[args.index(flag) + 1] if flag in args else None
    start = time.monotonic()
    if os.environ.get("FAIL_ON") and os.environ["FAIL_ON"] in " ".join(args):
        sys.exit(3)
    command = next((a for a in args if a.startswith("train-") or a in ("export", "synth", "prepare", "evaluate")),
                   Path(args[0]).name)
    if command.startswith("train-"):
        workdir = Path(value("--workdir"))
        if command == "train-coarse":
            (workdir / "coarse").mkdir(parents=True, exist_ok=True)
        else:
            stage = workdir / "fine" / value("--structure")
            stage.mkdir(parents=True, exist_ok=True)
            # the post-training check: $COLLAPSE names a structure whose first run collapses (NAME! : both)
            collapse = os.environ.get("COLLAPSE", "")
            ok = value("--structure") != collapse.rstrip("!") or ("seed=2030" in args and not collapse.endswith("!"))
            (stage / "check.json").write_text(json.dumps({{"training_crop_dice": 0.7 if ok else 0.3, "ok": ok}}))
            (stage / "trained_with").write_text(" ".join(args))
        # as in the real build the coarse lane is the longer one, so only a wait holds the neck run back
        time.sleep(3.0 if command == "train-coarse" else 0.1)
    elif command == "export":
        Path(value("--out")).mkdir(parents=True)
        (Path(value("--out")) / "exported").write_text("new")
    elif command == "demo_calibrate_coarse.py":
        (Path(args[1]) / "coarse" / "calibration.json").write_text("{{}}")
    elif command == "build_demo_labels.py":
        (Path(value("--data")) / "001").mkdir(parents=True, exist_ok=True)
    with open(os.environ["RECORD"], "a") as fh:
        fh.write(json.dumps({{"command": command, "structure": value("--structure"), "workdir": Path(
            value("--workdir") or (args[1] if command == "demo_calibrate_coarse.py" else ".")).name, "epochs": next(
            (a.split("=")[1] for a in args if ".epochs=" in a), None), "start": start, "end": time.monotonic()}}) + "\\n")
""")


def run_build(tmp_path: Path, fail_on: str = "", collapse: str = "", **env_vars: str) -> tuple[subprocess.CompletedProcess, list[dict], Path]:
    root = tmp_path / "repo"
    (root / "scripts").mkdir(parents=True)
    shutil.copy(REPO / "scripts" / "build_demo_model.sh", root / "scripts")
    (root / BUNDLE).mkdir(parents=True)
    for name in ("MODEL_CARD.md", "LICENSE"):
        (root / BUNDLE / name).write_text("old")
    recorder = tmp_path / "py"
    recorder.write_text(RECORDER.format(python=sys.executable))
    recorder.chmod(0o755)
    record = tmp_path / "record.jsonl"
    env = dict(os.environ, PY=str(recorder), RECORD=str(record), FAIL_ON=fail_on, COLLAPSE=collapse, WORK=str(tmp_path / "work"),
               PLAIN=str(tmp_path / "plain"), DATA=str(tmp_path / "data"), NECK=str(tmp_path / "neck"), **env_vars)
    run = subprocess.run(["bash", str(root / "scripts" / "build_demo_model.sh")], env=env, capture_output=True,
                         text=True, timeout=120)
    return run, read_record(record), root


def read_record(record: Path) -> list[dict]:
    return [json.loads(line) for line in record.read_text().splitlines()] if record.exists() else []


def test_the_two_lanes_run_side_by_side_and_the_neck_run_waits_for_both(tmp_path):
    run, rows, root = run_build(tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    training = [r for r in rows if r["command"].startswith("train-")]
    names = [(r["workdir"], r["structure"], r["epochs"]) for r in training]
    lane_a = [("run_a", None, "60"), ("run_a", "transverse_sinus", "60"), ("run_a", "cerebellum", "20")]
    lane_b = [("run", s, e) for s, e in (("sagittal_sinus", "60"), ("sagittal_sinus", "120"), ("ventricles", "25"),
                                          ("falx", "60"), ("tentorium", "45"))]
    neck = ("run_neck", "cerebellum", "20")
    assert sorted(names, key=str) == sorted(lane_a + lane_b + [neck], key=str), names

    def row(key):
        return next(r for r in training if (r["workdir"], r["structure"], r["epochs"]) == key)

    for lane in (lane_a, lane_b):  # each lane in its order
        assert all(row(a)["end"] <= row(b)["start"] for a, b in zip(lane, lane[1:]))
    assert row(lane_b[0])["start"] < row(lane_a[0])["end"]  # side by side, not one after the other
    assert row(neck)["start"] >= max(row(lane_a[-1])["end"], row(lane_b[-1])["end"])
    # the calibration needs only the coarse network, so it runs in its lane, not after both
    calibration = next(r for r in rows if r["command"] == "demo_calibrate_coarse.py")
    assert calibration["workdir"] == "run_a"
    assert row(lane_a[0])["end"] <= calibration["start"] and calibration["end"] <= row(lane_a[1])["start"]
    assert (tmp_path / "work" / "run" / "coarse" / "calibration.json").exists()  # copied with the coarse run
    # the neck run starts from the coarse lane's cerebellum, kept afterwards for the bench
    assert "run_a" in (tmp_path / "work" / "cerebellum_before_neck" / "trained_with").read_text()
    assert not any(r["command"] == "train-fine" and r["structure"] == "transverse_sinus" and r is not row(lane_a[1])
                   for r in rows)  # no check failed, so nothing was trained twice
    export = next(r for r in rows if r["command"] == "export")
    assert export["start"] >= row(neck)["end"]
    # by default a candidate, with the shipped bundle's card and licence; the shipped bundle untouched
    assert (tmp_path / "work" / "candidate" / "brainbarriers-demo" / "exported").read_text() == "new"
    assert (tmp_path / "work" / "MODEL_CARD.md").read_text() == "old"
    assert (root / BUNDLE / "MODEL_CARD.md").read_text() == "old" and not (root / BUNDLE / "exported").exists()
    assert "evaluate" not in [r["command"] for r in rows]


def test_only_an_explicit_bundle_path_replaces_the_shipped_bundle_and_runs_the_hold_out(tmp_path):
    run, rows, root = run_build(tmp_path, BUNDLE=str(BUNDLE))
    assert run.returncode == 0, run.stderr[-2000:]
    assert (root / BUNDLE / "exported").read_text() == "new"
    assert [r["command"] for r in rows].count("evaluate") == 1


@pytest.mark.parametrize("structure", ["transverse_sinus", "tentorium"])
def test_a_collapsed_network_is_trained_again_with_another_seed_and_the_first_run_kept(tmp_path, structure):
    run, rows, _ = run_build(tmp_path, collapse=structure)
    assert run.returncode == 0, run.stderr[-2000:]
    runs = [r for r in rows if r["command"] == "train-fine" and r["structure"] == structure]
    assert len(runs) == 2 and runs[0]["end"] <= runs[1]["start"]
    assert f"{structure} collapsed: trained again with seed 2030" in run.stdout
    workdir = tmp_path / "work" / runs[0]["workdir"]
    assert json.loads((workdir / "collapsed" / structure / "check.json").read_text())["ok"] is False
    assert "seed=2030" in (tmp_path / "work" / "run" / "fine" / structure / "trained_with").read_text()
    assert any(r["command"] == "export" for r in rows)
    others = [r for r in rows if r["command"] == "train-fine" and r["structure"] not in (structure, "cerebellum")]
    assert all(r["structure"] == "sagittal_sinus" or others.count(r) == 1 for r in others)
    assert "collapsed on both seeds" not in run.stdout


def test_a_network_collapsed_on_both_seeds_is_exported_and_named_at_the_end(tmp_path):
    run, rows, _ = run_build(tmp_path, collapse="transverse_sinus!")
    assert run.returncode == 0, run.stderr[-2000:]
    assert len([r for r in rows if r["command"] == "train-fine" and r["structure"] == "transverse_sinus"]) == 2
    assert any(r["command"] == "export" for r in rows)
    last = run.stdout.strip().splitlines()[-2:]
    assert last[0] == "build_demo_model.sh: collapsed on both seeds, exported as trained: transverse_sinus", last
    assert last[1].startswith("build_demo_model.sh: ") and last[1].endswith("min (FROM=data)")


@pytest.mark.parametrize("failing", ["train-coarse", "transverse_sinus", "tentorium"])
def test_a_failed_training_run_stops_the_build_before_the_bundle_is_touched(tmp_path, failing):
    run, rows, root = run_build(tmp_path, fail_on=failing)
    assert run.returncode != 0
    assert not any(r["command"] == "export" for r in rows)
    assert (root / BUNDLE / "MODEL_CARD.md").read_text() == "old" and not (root / BUNDLE / "exported").exists()


def test_a_failed_run_in_the_foreground_lane_stops_the_background_lane(tmp_path):
    # the sagittal sinus starts the foreground lane while the coarse network trains in the other
    run, _, _ = run_build(tmp_path, fail_on="sagittal_sinus")
    assert run.returncode != 0
    time.sleep(4.0)  # longer than the coarse run: had it gone on, its lane would have recorded by now
    rows = read_record(tmp_path / "record.jsonl")
    assert not any(r["workdir"] == "run_a" for r in rows), rows


def test_from_train_into_a_candidate_bundle_leaves_data_shipped_bundle_and_hold_out_alone(tmp_path):
    candidate = tmp_path / "cand" / "brainbarriers-demo"  # its folder need not exist
    (tmp_path / "plain" / "001").mkdir(parents=True)  # what the earlier build left
    run, rows, root = run_build(tmp_path, FROM="train", BUNDLE=str(candidate))
    assert run.returncode == 0, run.stderr[-2000:]
    commands = [r["command"] for r in rows]
    assert not {"build_sample.py", "build_demo_labels.py", "build_heldout.py", "synth", "prepare"} & set(commands)
    assert sum(c.startswith("train-") for c in commands) == 9
    assert (candidate / "exported").read_text() == "new"
    assert (root / BUNDLE / "MODEL_CARD.md").read_text() == "old" and not (root / BUNDLE / "exported").exists()
    assert "evaluate" not in commands  # a candidate meets the hold-out only after its adoption
    assert "not evaluated on the hold-out" in run.stdout
    assert run.stdout.rstrip().splitlines()[-1] == "build_demo_model.sh: 0 min (FROM=train)"  # its own clock


def test_an_unknown_starting_point_is_refused_before_any_work(tmp_path):
    run, rows, _ = run_build(tmp_path, FROM="training")
    assert run.returncode == 2 and "FROM must be data or train" in run.stderr
    assert rows == []


def test_an_unknown_resume_value_is_refused_before_any_work(tmp_path):
    run, rows, _ = run_build(tmp_path, RESUME="yes")
    assert run.returncode == 2 and "RESUME must be 0 or 1" in run.stderr
    assert rows == []


def earlier_build(work: Path) -> list[Path]:
    """Checkpoints an earlier build left: training would resume from them and train no step."""
    checkpoints = [work / "run_a" / "coarse" / "checkpoint.pt", work / "run" / "fine" / "falx" / "checkpoint.pt",
                   work / "run_neck" / "fine" / "cerebellum" / "checkpoint.pt"]
    for path in checkpoints:
        path.parent.mkdir(parents=True)
        path.write_text("earlier build")
    return checkpoints


def test_a_rebuild_trains_from_scratch_and_keeps_the_earlier_build_aside(tmp_path):
    (tmp_path / "plain" / "001").mkdir(parents=True)
    checkpoints = earlier_build(tmp_path / "work")
    (tmp_path / "work" / "previous" / "run").mkdir(parents=True)  # the build before that one
    run, rows, _ = run_build(tmp_path, FROM="train")
    assert run.returncode == 0, run.stderr[-2000:]
    assert not any(path.exists() for path in checkpoints)
    for path in checkpoints:
        kept = tmp_path / "work" / "previous" / path.relative_to(tmp_path / "work")
        assert kept.read_text() == "earlier build"
    assert sum(r["command"].startswith("train-") for r in rows) == 9


def test_resume_goes_on_with_an_interrupted_build(tmp_path):
    (tmp_path / "plain" / "001").mkdir(parents=True)
    checkpoints = earlier_build(tmp_path / "work")
    run, _, _ = run_build(tmp_path, FROM="train", RESUME="1")
    assert run.returncode == 0, run.stderr[-2000:]
    assert all(path.read_text() == "earlier build" for path in checkpoints)  # where the training resumes
    assert not (tmp_path / "work" / "previous").exists()
