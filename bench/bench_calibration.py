"""How long the demo coarse network's calibration (scripts/demo_calibrate_coarse.py) takes: its offset
search scored by argmax for every trial (as before 2026-12-06) against the sweep it uses now.

    python bench/bench_calibration.py --workdir WORK/run --cache WORK/cache [--cases 8]

WORK is a finished demo build's work folder (its coarse network, uncalibrated weights if kept).
Times, on ``--cases`` training cases with all inputs and T1 only as the script does: the coarse
network's forward pass per input set, and one pass over every class and offset of the grid by each
method, checking that both give the same scores. Prints the CPU, the figures, the ratio, and both
calibrations' minutes projected to all cases of the cache (inference plus two rounds of the grid).
One thread, as the build runs it.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path

import numpy as np
import torch
from brainbarriers_training.smoke import cpu_name
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parents[1]


def calibration_module():
    spec = importlib.util.spec_from_file_location("demo_calibrate_coarse", REPO / "scripts" / "demo_calibrate_coarse.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workdir", type=Path, required=True, help="a demo build's run folder (coarse/ inside)")
    ap.add_argument("--cache", type=Path, required=True, help="its prepared cache (WORK/cache)")
    ap.add_argument("--cases", type=int, default=8)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    cal = calibration_module()
    coarse = args.workdir / "coarse"
    weights = coarse / "final_uncalibrated.safetensors"
    net = cal.coarse_network(coarse, load_file(str(weights if weights.exists() else coarse / "final.safetensors")))
    files = sorted(args.cache.glob("*.npz"))
    start = time.perf_counter()
    logits, labels = cal.coarse_logits(net, files[:args.cases])
    forward = (time.perf_counter() - start) / len(logits)
    n = logits[0].shape[0]
    off = np.zeros(n)
    boxes = [{c: cal.bounding_box(lab == c) for c in range(1, n)} for lab in labels]

    start = time.perf_counter()
    by_argmax = []
    for c in range(1, n):
        for o in cal.OFFSETS:
            trial = off.copy()
            trial[c] = o
            by_argmax.append(float(np.mean([cal.box_iou((lg + trial[:, None, None, None]).argmax(0) == c, lab == c)
                                            for lg, lab in zip(logits, labels)])))
    argmax_s = time.perf_counter() - start
    start = time.perf_counter()
    by_sweep = [s for c in range(1, n) for s in cal.sweep(logits, boxes, c, off, cal.OFFSETS)]
    sweep_s = time.perf_counter() - start
    if by_sweep != by_argmax:
        raise SystemExit("the sweep's scores differ from argmax scoring")

    cases = len(files)
    per_grid_case = {"argmax": argmax_s / len(logits), "sweep": sweep_s / len(logits)}
    print(f"machine: {cpu_name()}; 1 thread; {args.cases} cases x {len(cal.SUBSETS)} input sets, "
          f"{n - 1} classes x {len(cal.OFFSETS)} offsets")
    print(f"coarse forward pass: {forward:.2f} s per input set")
    print(f"one pass over the grid: argmax scoring {argmax_s:.1f} s, sweep {sweep_s:.1f} s "
          f"(ratio {argmax_s / sweep_s:.1f}x), the same scores")
    for method, t in per_grid_case.items():
        total = cases * len(cal.SUBSETS) * (forward + 2 * t)
        print(f"projected calibration on the cache's {cases} cases, {method}: {total / 60:.1f} min")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
