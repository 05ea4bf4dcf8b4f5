"""Spread of the smoke gate over recipe seeds and thread counts, and whether broken methods fail it.

    python bench/smoke_spread.py [--seeds 7 1 2] [--threads 2 1] [--broken] [--parallel 1] [--out DIR]

Each run is ``python -m brainbarriers_training smoke`` in its own process (its own thread count). Prints one
row per run (held-out mean Dice per structure, pass/fail) and the spread per structure over the
runs of the intact method. ``--broken`` adds runs of deliberately broken methods (theta ignored,
BFC removed, wrong inter-slice axes, ReLU heads), which the gate should fail.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from brainbarriers_training.smoke import failures, fn_volume_ratio, method_problems  # noqa: E402

STRUCTURES = ("cerebellum", "falx", "sinuses", "tentorium", "ventricles")

BROKEN = {
    "theta ignored (plain Dice)": ["fine.loss.theta=1.0"],
    "BFC removed": ["fine.networks.p.options.calibration=false", "fine.networks.s.options.calibration=false"],
    "wrong inter-slice axes": ['fine.slice_axes={"falx": "AP", "sagittal_sinus": "AP", "transverse_sinus": "LR"}'],
    "ReLU (the collapse's cause)": ['fine.networks.p.options.activation="relu"', 'fine.networks.s.options.activation="relu"'],
}


def run_one(out: Path, name: str, seed: int, threads: int, overrides: list[str]) -> dict:
    work = out / f"{name.split()[0]}-seed{seed}-t{threads}"
    result = work / "result.json"
    if not result.is_file():
        cmd = [sys.executable, "-m", "brainbarriers_training", "smoke", "--out", str(work), "--seed", str(seed),
               "--threads", str(threads), "--json", str(result)]
        for o in overrides:
            cmd += ["--set", o]
        env = dict(os.environ, OMP_NUM_THREADS=str(threads))
        t0 = time.time()
        proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
        if not result.is_file():
            return {"name": name, "seed": seed, "threads": threads, "error": proc.stderr.strip().splitlines()[-1:]}
        print(f"  done {name} seed {seed} threads {threads} in {time.time() - t0:.0f} s", flush=True)
    data = json.loads(result.read_text())
    dice = {k: sum(r["dice"] for r in data["rows"] if r["structure"] == k) / 3 for k in STRUCTURES}
    collapsed = [k for k, c in data["facts"]["fine_checks"].items() if c and not c["ok"]]
    collapsed += method_problems(json.loads((work / "bundle" / "manifest.json").read_text()))
    return {"name": name, "seed": seed, "threads": threads, "dice": dice, "fn_ratio": fn_volume_ratio(data["rows"]),
            "failures": failures(data["rows"]) + collapsed, "train_s": data["facts"]["train_s"],
            "cpu": data["facts"]["cpu"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[7, 1, 2])
    ap.add_argument("--threads", type=int, nargs="+", default=[2, 1])
    ap.add_argument("--broken", action="store_true")
    ap.add_argument("--parallel", type=int, default=1, help="runs at once (use 1-thread runs when > 1)")
    ap.add_argument("--out", type=Path, default=None, help="keep the runs here (resumable); default: a temp folder")
    args = ap.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="smoke-spread-"))
    jobs = [("intact", s, t, []) for t in args.threads for s in args.seeds]
    if args.broken:
        jobs += [(name, args.seeds[0], args.threads[0], o) for name, o in BROKEN.items()]
    with ThreadPoolExecutor(args.parallel) as pool:
        results = list(pool.map(lambda j: run_one(out, *j), jobs))
    print(f"\nsmoke gate spread ({results[0].get('cpu', '?')}), held-out mean Dice %, fn vol = mean predicted/true volume of falx, sinuses, tentorium")
    print(f"{'method':<30} {'seed':>4} {'thr':>3} " + " ".join(f"{k[:10]:>10}" for k in STRUCTURES)
          + "  fn vol  gate    train s")
    for r in results:
        if "error" in r:
            print(f"{r['name']:<30} {r['seed']:>4} {r['threads']:>3} error: {r['error']}")
            continue
        cells = " ".join(f"{100 * r['dice'][k]:10.1f}" for k in STRUCTURES)
        gate = "FAIL" if r["failures"] else "pass"
        print(f"{r['name']:<30} {r['seed']:>4} {r['threads']:>3} {cells}  {r['fn_ratio']:6.3f}  {gate:<6} {r['train_s']:>6}")
    intact = [r for r in results if r["name"] == "intact" and "dice" in r]
    if intact:
        lo = " ".join(f"{100 * min(r['dice'][k] for r in intact):10.1f}" for k in STRUCTURES)
        hi = " ".join(f"{100 * max(r['dice'][k] for r in intact):10.1f}" for k in STRUCTURES)
        print(f"{'intact: min':<39} {lo}\n{'intact: max':<39} {hi}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
