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
            (workdir / "fine" / value("--structure")).mkdir(parents=True, exist_ok=True)
        # as in the real build the coarse lane is the longer one, so only a wait holds the neck run back
        time.sleep(3.0 if command == "train-coarse" else 0.1)
    elif command == "export":
        Path(value("--out")).mkdir(parents=True)
        (Path(value("--out")) / "exported").write_text("new")
    elif command == "build_demo_labels.py":
        (Path(value("--data")) / "001").mkdir(parents=True, exist_ok=True)
    with open(os.environ["RECORD"], "a") as fh:
        fh.write(json.dumps({{"command": command, "structure": value("--structure"), "workdir": Path(
            value("--workdir") or ".").name, "epochs": next(
            (a.split("=")[1] for a in args if ".epochs=" in a), None), "start": start, "end": time.monotonic()}}) + "\\n")
""")


def run_build(tmp_path: Path, fail_on: str = "", **env_vars: str) -> tuple[subprocess.CompletedProcess, list[dict], Path]:
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
    env = dict(os.environ, PY=str(recorder), RECORD=str(record), FAIL_ON=fail_on, WORK=str(tmp_path / "work"),
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
    lane_a = [("run_a", None, "60"), ("run_a", "transverse_sinus", "60")]
    lane_b = [("run", s, e) for s, e in (("sagittal_sinus", "60"), ("sagittal_sinus", "120"), ("ventricles", "25"),
                                          ("cerebellum", "20"), ("falx", "60"), ("tentorium", "45"))]
    neck = ("run_neck", "cerebellum", "20")
    assert sorted(names, key=str) == sorted(lane_a + lane_b + [neck], key=str), names

    def row(key):
        return next(r for r in training if (r["workdir"], r["structure"], r["epochs"]) == key)

    for lane in (lane_a, lane_b):  # each lane in its order
        assert all(row(a)["end"] <= row(b)["start"] for a, b in zip(lane, lane[1:]))
    assert row(lane_b[0])["start"] < row(lane_a[0])["end"]  # side by side, not one after the other
    assert row(neck)["start"] >= max(row(lane_a[-1])["end"], row(lane_b[-1])["end"])
    export = next(r for r in rows if r["command"] == "export")
    assert export["start"] >= row(neck)["end"]
    assert (root / BUNDLE / "exported").read_text() == "new"


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
    candidate = tmp_path / "cand" / "brainbarriers-demo"
    candidate.mkdir(parents=True)
    for name in ("MODEL_CARD.md", "LICENSE"):
        (candidate / name).write_text("card")
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
