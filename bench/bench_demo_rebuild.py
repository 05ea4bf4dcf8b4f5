"""How long `scripts/build_demo_model.sh` trains: seconds per step of each of its training runs, and
the wall time of its schedule on 2 cores.

    python bench/bench_demo_rebuild.py --cache WORK/cache_v3 [--steps 12] [--out DIR]
    python bench/bench_demo_rebuild.py --measured WORK     # a finished build's own logs instead

Each run of the script is started for ``--steps`` steps with its own network, crop and thread count
(``train-coarse`` / ``train-fine --set ...epochs=1 --set ...iterations_per_epoch=STEPS``); seconds per
step come from the ``seconds`` column of its ``log.csv``, first step left out (start-up). The
one-thread runs are timed two at a time, so that each has a neighbour as in the script's two lanes
(the pairs are not the script's, and the last may run partly alone); the two-thread run alone.
Any prepared cache of the demo grid serves (step time does not depend on intensities).
Prints the CPU, each run's steps and minutes, the script's schedule and the lower bound of any
schedule on 2 cores. Not counted: data generation and ``prepare`` (timed by hand, docs/demo.md),
start-up, epoch ends, post-training checks, calibration and export.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from brainbarriers_training.engine import read_log
from brainbarriers_training.smoke import cpu_name

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Run:
    """One training command of scripts/build_demo_model.sh."""

    name: str
    stage: str  # "coarse" or "fine"
    structure: str | None
    epochs: int
    iterations: int
    threads: int
    #: the coarse network's first epochs on windows of this size (``coarse.patch_size`` and
    #: ``coarse.patch_epochs`` in the script), the rest on whole heads
    window: tuple[int, int, int] | None = None
    window_epochs: int = 0

    @property
    def steps(self) -> int:
        return self.epochs * self.iterations

    @property
    def network(self) -> tuple[str, str | None, int]:
        """What a step's time depends on: the resume and its first run share it."""
        return self.stage, self.structure, self.threads


#: The script's training runs; `Testing/demo/test_bench_demo_rebuild.py` checks that each one's
#: epochs and iterations appear in the script. The resume trains from epoch 60 to 120.
RUNS = {
    "coarse": Run("coarse", "coarse", None, 60, 40, 1, window=(72, 80, 64), window_epochs=40),
    "ventricles": Run("ventricles", "fine", "ventricles", 25, 20, 1),
    "cerebellum": Run("cerebellum", "fine", "cerebellum", 20, 20, 1),
    "falx": Run("falx", "fine", "falx", 60, 20, 1),
    "tentorium": Run("tentorium", "fine", "tentorium", 45, 20, 1),
    "sagittal_sinus": Run("sagittal_sinus", "fine", "sagittal_sinus", 60, 20, 1),
    "transverse_sinus": Run("transverse_sinus", "fine", "transverse_sinus", 60, 20, 1),
    "sagittal_sinus resumed": Run("sagittal_sinus resumed", "fine", "sagittal_sinus", 60, 20, 1),
    "cerebellum on necks": Run("cerebellum on necks", "fine", "cerebellum", 20, 20, 2),
}

#: The script's order: two lanes side by side, then the rest one after the other.
SIDE_BY_SIDE = (("coarse", "transverse_sinus", "cerebellum"),
                ("sagittal_sinus", "sagittal_sinus resumed", "ventricles", "falx", "tentorium"))
THEN = ("cerebellum on necks",)


def stage_folder(workdir: Path, run: Run) -> Path:
    """Where `run` writes its log.csv under a training workdir."""
    return workdir / "coarse" if run.stage == "coarse" else workdir / "fine" / run.structure


def seconds_per_step(out_dir: Path) -> float:
    """Mean seconds per step after the first (which carries start-up) from a training run's log.csv."""
    seconds = [row["seconds"] for row in read_log(out_dir)]
    if len(seconds) < 3:
        raise RuntimeError(f"{out_dir}: too few steps to time")
    return (seconds[-1] - seconds[0]) / (len(seconds) - 1)


def time_run(run: Run, cache: Path, steps: int, work: Path) -> float:
    """Train `run`'s network for `steps` steps; its mean seconds per step over the whole run (a
    windowed coarse run is timed on windows and on whole heads, weighted by their epochs)."""
    if run.window is None:
        return _time_steps(run, cache, steps, work / run.name.replace(" ", "_"), [])
    on_window = _time_steps(run, cache, steps, work / f"{run.name}_window",
                            ["--set", f"{run.stage}.patch_size=[{','.join(map(str, run.window))}]"])
    whole = _time_steps(run, cache, steps, work / run.name, [])
    share = run.window_epochs / run.epochs
    return share * on_window + (1 - share) * whole


def _time_steps(run: Run, cache: Path, steps: int, out: Path, extra: list[str]) -> float:
    shutil.rmtree(out, ignore_errors=True)  # a finished checkpoint there would resume with no steps to time
    cmd = [sys.executable, "-m", "brainbarriers_training", f"train-{run.stage}", "--config", "demo",
           "--threads", str(run.threads), "--cache", str(cache), "--workdir", str(out),
           "--set", f"{run.stage}.epochs=1", "--set", f"{run.stage}.iterations_per_epoch={steps}", *extra]
    if run.structure:
        cmd += ["--structure", run.structure]
    subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=REPO)
    return seconds_per_step(stage_folder(out, run))


def measured_minutes(work: Path) -> dict[str, float]:
    """Minutes each training run of a finished build in ``work`` trained, from the ``seconds`` column
    of its log.csv (which restarts at a resume: the resumed rows are those past the first run's steps)."""
    first = RUNS["sagittal_sinus"].steps
    minutes = {}
    for name, r in RUNS.items():
        if name == "cerebellum":  # the build replaces it by the neck run and keeps it here
            folder = work / "cerebellum_before_neck"
        else:
            folder = stage_folder(work / ("run_neck" if r.threads > 1 else "run"), r)
        rows = read_log(folder)
        if name == "sagittal_sinus":
            rows = [x for x in rows if x["global_step"] <= first]
        elif name == "sagittal_sinus resumed":
            rows = [x for x in rows if x["global_step"] > first]
        if len(rows) != r.steps:
            raise RuntimeError(f"{folder}: {len(rows)} logged steps for {name}, the script trains {r.steps}")
        minutes[name] = rows[-1]["seconds"] / 60
    return minutes


def collapsed_minutes(work: Path) -> dict[str, float]:
    """Minutes of each run that its post-training check found collapsed, which the script then
    trained again with another seed (kept in ``WORKDIR/collapsed/STRUCTURE``): build time that
    the runs of `measured_minutes` leave out. Keyed ``WORKDIR/STRUCTURE``, so that one structure
    collapsed in two workdirs counts twice."""
    minutes = {}
    for folder in sorted(work.glob("run*/collapsed/*")):
        seconds = [row["seconds"] for row in read_log(folder)]
        # the seconds column restarts at a resume: add up each segment's last value
        ends = [a for a, b in zip(seconds, seconds[1:]) if b < a] + seconds[-1:]
        minutes[f"{folder.parent.parent.name}/{folder.name}"] = sum(ends) / 60
    return minutes


def lane_of(structure: str) -> int:
    """Index in SIDE_BY_SIDE of the lane that trains `structure`'s network."""
    return next(i for i, lane in enumerate(SIDE_BY_SIDE) if any(RUNS[n].structure == structure for n in lane))


def lane_minutes(minutes: dict[str, float]) -> list[float]:
    """Minutes of each lane of SIDE_BY_SIDE, its runs one after the other."""
    return [sum(minutes[n] for n in lane) for lane in SIDE_BY_SIDE]


def schedule_minutes(minutes: dict[str, float], lanes: list[float] | None = None) -> tuple[float, float]:
    """(the script's wall minutes, the lower bound of any schedule on 2 cores). ``lanes``: the
    lanes' minutes when they hold more than `minutes`' runs (collapsed runs trained again)."""
    lanes = lane_minutes(minutes) if lanes is None else lanes
    script = max(lanes) + sum(minutes[n] for n in THEN)
    core_minutes = sum(minutes[n] * RUNS[n].threads for n in RUNS)
    bound = max(core_minutes / 2, max(minutes.values()))
    return script, bound


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cache", type=Path, help="a prepared demo cache (e.g. WORK/cache_v3)")
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--out", type=Path, default=None, help="keep the short runs here")
    ap.add_argument("--measured", type=Path, metavar="WORK",
                    help="instead of timing: read the logs of a finished build in WORK")
    args = ap.parse_args(argv)
    if args.measured:
        return print_measured(args.measured)
    if args.cache is None:
        ap.error("--cache is needed to time the runs (or --measured WORK to read a finished build)")
    work = args.out or Path(tempfile.mkdtemp(prefix="bench_rebuild_"))
    distinct = {r.network: r for r in RUNS.values()}
    one_thread = [r for r in distinct.values() if r.threads == 1]
    with ThreadPoolExecutor(2) as pool:
        per_step = dict(zip([r.network for r in one_thread],
                            pool.map(lambda r: time_run(r, args.cache, args.steps, work), one_thread)))
    for r in distinct.values():
        if r.threads > 1:
            per_step[r.network] = time_run(r, args.cache, args.steps, work)
    minutes = {n: r.steps * per_step[r.network] / 60 for n, r in RUNS.items()}
    print(f"machine: {cpu_name()}; {args.steps} steps per timing, one-thread runs timed two at a time")
    print_runs(minutes)
    script, bound = schedule_minutes(minutes)
    print(f"scripts/build_demo_model.sh training: {script:.0f} min wall on 2 cores "
          f"(lanes {' | '.join(' + '.join(lane) for lane in SIDE_BY_SIDE)}, then {' + '.join(THEN)})")
    print_bound(bound)
    return 0


def print_bound(bound: float) -> None:
    print(f"any schedule of these runs on 2 cores: at least {bound:.0f} min (core-minutes / 2, or the longest run)")


def print_runs(minutes: dict[str, float]) -> None:
    print(f"{'run':<24}{'threads':>8}{'steps':>7}{'s/step':>8}{'min':>7}")
    for n, r in RUNS.items():
        print(f"{n:<24}{r.threads:>8}{r.steps:>7}{60 * minutes[n] / r.steps:>8.2f}{minutes[n]:>7.1f}")


def print_window_split(run: Run, folder: Path) -> None:
    """Seconds per step of a windowed run's window steps and whole-head steps, from its log.csv."""
    seconds = [row["seconds"] for row in read_log(folder)]
    cut = run.window_epochs * run.iterations
    if not 2 < cut < len(seconds):
        return
    on_window = (seconds[cut - 1] - seconds[0]) / (cut - 1)
    whole = (seconds[-1] - seconds[cut - 1]) / (len(seconds) - cut)
    print(f"{run.name}: {on_window:.2f} s per window step (first {cut}, first step left out), "
          f"{whole:.2f} s per whole-head step")


def print_measured(work: Path) -> int:
    minutes = measured_minutes(work)
    # no machine name: the logs may come from another machine than the one reading them
    print(f"training runs of the build in {work} (minutes from each run's log.csv: training steps only)")
    print_runs(minutes)
    for r in RUNS.values():
        if r.window is not None:
            print_window_split(r, stage_folder(work / "run", r))
    lanes = lane_minutes(minutes)
    print("lanes: " + " | ".join(f"{' + '.join(lane)} {m:.0f} min" for lane, m in zip(SIDE_BY_SIDE, lanes))
          + f"; then {' + '.join(THEN)} {sum(minutes[n] for n in THEN):.0f} min")
    script, bound = schedule_minutes(minutes)
    print(f"training along the script's schedule: {script:.0f} min")
    print_bound(bound)
    again = collapsed_minutes(work)
    if again:
        for key, m in again.items():
            lanes[lane_of(key.split("/")[-1])] += m
        print("collapsed and trained again (WORKDIR/collapsed): "
              + ", ".join(f"{key} {m:.1f} min" for key, m in again.items())
              + "; with them the lanes " + " | ".join(f"{m:.0f}" for m in lanes)
              + f" min, training along the script's schedule {schedule_minutes(minutes, lanes)[0]:.0f} min")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
