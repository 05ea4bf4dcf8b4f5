"""bench/bench_demo_rebuild.py: its table of training runs follows scripts/build_demo_model.sh, and its
schedule arithmetic."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_demo_rebuild", REPO / "bench" / "bench_demo_rebuild.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def script_lines() -> list[str]:
    """The build script's lines, continuations joined."""
    return (REPO / "scripts" / "build_demo_model.sh").read_text().replace("\\\n", " ").splitlines()


def script_runs() -> list[tuple[str, str, int, int]]:
    """(stage, structure or '', epochs, iterations) of each training command in the build script."""
    found = []
    for line in script_lines():
        m = re.search(r"train-(coarse|fine)\b", line)
        checked = re.match(r"\s*fine \S+ (\w+) ", line)  # the script's `fine WORKDIR STRUCTURE ...`
        if not (m or checked) or "$@" in line:  # the body of `fine` itself trains what its caller names
            continue
        structure = re.search(r"--structure ([\w ]+?)(?: --|$)", line)
        epochs = re.search(r"--set \w+\.epochs=(\d+)", line)
        iterations = re.search(r"--set \w+\.iterations_per_epoch=(\d+)", line)
        names = [checked.group(1)] if checked else structure.group(1).split() if structure else [""]
        for name in names:
            found.append(("fine" if checked else m.group(1), name, int(epochs.group(1)), int(iterations.group(1))))
    return found


def test_the_bench_times_every_training_run_of_the_build_script(bench):
    runs = script_runs()
    assert len(runs) == len(bench.RUNS), runs
    table = sorted((r.stage, r.structure or "", r.iterations) for r in bench.RUNS.values())
    assert table == sorted((stage, name, iterations) for stage, name, _, iterations in runs)
    # the resume's epochs count from its first run's end: 120 in the script, 60 more in the table
    resumed = bench.RUNS["sagittal_sinus resumed"]
    first = bench.RUNS["sagittal_sinus"]
    assert ("fine", "sagittal_sinus", first.epochs + resumed.epochs, resumed.iterations) in runs
    for r in bench.RUNS.values():
        if r.name != resumed.name:
            assert (r.stage, r.structure or "", r.epochs, r.iterations) in runs, r


def test_the_coarse_windows_are_the_scripts(bench):
    line = next(x for x in script_lines() if "train-coarse" in x)
    coarse = bench.RUNS["coarse"]
    assert f"--set 'coarse.patch_size=[{','.join(map(str, coarse.window))}]'" in line
    assert f"--set coarse.patch_epochs={coarse.window_epochs}" in line


def test_a_windowed_coarse_run_is_timed_on_both_kinds_of_step(bench, monkeypatch, tmp_path):
    timed = []

    def fake_steps(run, cache, steps, out, extra):
        timed.append((out.name, extra))
        return 1.0 if extra else 2.5  # seconds per step on the window, on the whole head

    monkeypatch.setattr(bench, "_time_steps", fake_steps)
    coarse = bench.RUNS["coarse"]
    share = coarse.window_epochs / coarse.epochs
    assert bench.time_run(coarse, tmp_path, 5, tmp_path) == pytest.approx(share * 1.0 + (1 - share) * 2.5)
    assert [extra for _, extra in timed] == [["--set", "coarse.patch_size=[72,80,64]"], []]
    assert len({name for name, _ in timed}) == 2  # two folders: the second timing does not resume the first
    timed.clear()
    assert bench.time_run(bench.RUNS["falx"], tmp_path, 5, tmp_path) == 2.5 and len(timed) == 1


def test_the_schedule_adds_the_serial_runs_to_the_longer_lane(bench):
    minutes = {name: 0.0 for name in bench.RUNS}
    minutes.update({"coarse": 70.0, "sagittal_sinus": 20.0, "sagittal_sinus resumed": 20.0, "ventricles": 10.0,
                    "tentorium": 30.0, "transverse_sinus": 15.0, "cerebellum on necks": 10.0})
    script, bound = bench.schedule_minutes(minutes)
    # lanes: coarse + transverse sinus (+ cerebellum, 0 here) = 85, the sagittal sinus twice +
    # ventricles + tentorium = 80;
    # the neck run comes after both
    assert script == (70 + 15) + 10
    # core-minutes: 70 + 20 + 20 + 10 + 30 + 15 + 2 x 10 (two threads) = 185 -> 92.5 on 2 cores
    assert bound == 92.5


def test_seconds_per_step_leaves_out_the_first_step(bench, tmp_path):
    log = tmp_path / "log.csv"
    log.write_text("epoch,step,global_step,loss,lr,seconds\n1,1,1,1.0,0.1,30.0\n1,2,2,1.0,0.1,32.0\n"
                   "1,3,3,1.0,0.1,34.0\n")
    assert bench.seconds_per_step(tmp_path) == pytest.approx(4.0 / 2)


def test_measured_reads_each_run_of_a_finished_build_from_its_log(bench, tmp_path, capsys):
    header = "epoch,step,global_step,loss,lr,seconds\n"

    def write_log(folder: Path, steps: int, seconds_per_step: float, first_step: int = 1, rows: str = "") -> str:
        folder.mkdir(parents=True, exist_ok=True)
        rows += "".join(f"0,0,{first_step + i},1.0,0.1,{(i + 1) * seconds_per_step}\n" for i in range(steps))
        (folder / "log.csv").write_text(header + rows)
        return rows

    for name, r in bench.RUNS.items():
        if name.startswith("sagittal_sinus") or name == "cerebellum":
            continue
        folder = ("run_neck/fine/cerebellum" if r.threads > 1 else
                  "run/coarse" if r.stage == "coarse" else f"run/fine/{r.structure}")
        write_log(tmp_path / folder, r.steps, 2.0 if r.stage == "coarse" else 1.0)
    write_log(tmp_path / "cerebellum_before_neck", bench.RUNS["cerebellum"].steps, 1.5)
    first = bench.RUNS["sagittal_sinus"].steps
    rows = write_log(tmp_path / "run/fine/sagittal_sinus", first, 0.6)  # seconds restart at the resume
    write_log(tmp_path / "run/fine/sagittal_sinus", bench.RUNS["sagittal_sinus resumed"].steps, 0.9, first + 1, rows)
    minutes = bench.measured_minutes(tmp_path)
    assert minutes["coarse"] == pytest.approx(2400 * 2.0 / 60)
    assert minutes["sagittal_sinus"] == pytest.approx(first * 0.6 / 60)
    assert minutes["sagittal_sinus resumed"] == pytest.approx(1200 * 0.9 / 60)
    assert minutes["cerebellum"] == pytest.approx(400 * 1.5 / 60)
    assert bench.main(["--measured", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "training along the script's schedule" in out
    assert "coarse: 2.00 s per window step" in out and "2.00 s per whole-head step" in out
    script, bound = bench.schedule_minutes(minutes)
    assert f"at least {bound:.0f} min" in out and bound <= script

    assert "collapsed" not in out

    # a collapsed run the script trained again is build time in its lane: here the tentorium (lane 2)
    # collapsed after its resume-like restart of the seconds column
    rows = write_log(tmp_path / "run/collapsed/tentorium", 100, 0.6)
    write_log(tmp_path / "run/collapsed/tentorium", 100, 0.3, 101, rows)
    assert bench.collapsed_minutes(tmp_path) == pytest.approx({"run/tentorium": (60 + 30) / 60})
    assert bench.lane_of("tentorium") == 1 and bench.lane_of("transverse_sinus") == 0
    assert bench.main(["--measured", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    lanes = [sum(minutes[n] for n in lane) for lane in bench.SIDE_BY_SIDE]
    lanes[1] += 1.5
    expected = max(lanes) + minutes["cerebellum on necks"]
    assert "run/tentorium 1.5 min" in out and f"training along the script's schedule {expected:.0f} min" in out
    assert bench.schedule_minutes(minutes, lanes)[0] == pytest.approx(expected)

    # the same structure collapsed in both workdirs: both runs count, each in the structure's lane
    write_log(tmp_path / "run_a/collapsed/tentorium", 100, 0.6)
    assert bench.collapsed_minutes(tmp_path) == pytest.approx({"run/tentorium": 1.5, "run_a/tentorium": 1.0})

    write_log(tmp_path / "run/fine/falx", 10, 1.0)  # a run cut short is not a measurement
    with pytest.raises(RuntimeError, match="falx"):
        bench.measured_minutes(tmp_path)
