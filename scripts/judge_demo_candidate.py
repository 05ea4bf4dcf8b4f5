"""Judge a candidate demo bundle against the shipped one by the rule of docs/demo-candidates.md.

    python scripts/judge_demo_candidate.py --candidate C_HEADS --baseline B_HEADS \\
        --candidate-eval C_EVAL --baseline-eval B_EVAL \\
        --candidate-devheads C_DEV --baseline-devheads B_DEV

The folders are what the rule's commands write, for each bundle: ``scripts/heldout_report.py --data
DEV --out *_HEADS`` (generated development heads) and ``--set devheads --out *_DEV`` (their
``anatomy.json``), and ``python -m brainbarriers_training evaluate --predictions *_HEADS --data DEV
--out *_EVAL`` (its ``metrics.csv``). The criteria (the fifth candidate's, since 2026-12-06):
(1) each structure's mean Dice at most ``--structure-margin`` points below the shipped model's;
(2) the average of the five at most ``--average-margin`` below; (3) the vertex sinus in one piece
on at least as many generated heads, less ``--piece-margin``; (4) on the development heads every
check of ``brainbarriers_training.anatomy.HEAD_CHECKS`` that the shipped model meets is met.
Checks run on the unrounded figures (the printed tables round to 2 decimals, and a figure can sit
within 0.01 of its bound). Prints each figure with the spread of the per-head differences, then
the verdict; exit status 0 when every criterion is met, 1 when one is not.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
from pathlib import Path

from brainbarriers_training.anatomy import head_checks

STRUCTURES = ("cerebellum", "falx", "sinuses", "tentorium", "ventricles")


def read_dice(eval_dir: Path) -> dict[str, dict[str, float]]:
    """structure -> case -> Dice % from an ``evaluate`` output folder's metrics.csv."""
    out: dict[str, dict[str, float]] = {}
    with open(eval_dir / "metrics.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            out.setdefault(row["structure"], {})[row["case"]] = 100.0 * float(row["dice"])
    return out


def read_anatomy(report_dir: Path) -> dict[str, dict[str, float]]:
    return json.loads((report_dir / "anatomy.json").read_text())


def one_piece(anatomy: dict[str, dict[str, float]]) -> int:
    return sum(r.get("vertex_sinus_components") == 1 for r in anatomy.values())


def judge(cand_dice: dict, base_dice: dict, cand_heads: dict, base_heads: dict, cand_dev: dict, base_dev: dict,
          structure_margin: float = 3.0, average_margin: float = 1.5, piece_margin: int = 1) -> tuple[list[str], bool]:
    """The rule's lines to print, and whether every criterion is met."""
    lines = []
    lines.append(f"{'structure':11s} {'candidate':>9s} {'shipped':>8s} {'diff':>6s} {'sd':>5s}  (1) each at most "
                 f"{structure_margin:g} below")
    means_c, means_b = [], []
    for s in STRUCTURES:
        cases = sorted(base_dice[s])
        if sorted(cand_dice.get(s, {})) != cases:
            raise ValueError(f"{s}: the two evaluations cover different cases")
        c = statistics.mean(cand_dice[s][k] for k in cases)
        b = statistics.mean(base_dice[s][k] for k in cases)
        diffs = [cand_dice[s][k] - base_dice[s][k] for k in cases]
        spread = statistics.stdev(diffs) if len(diffs) > 1 else 0.0
        ok = c >= b - structure_margin
        means_c.append(c)
        means_b.append(b)
        lines.append(f"{s:11s} {c:9.1f} {b:8.1f} {c - b:+6.1f} {spread:5.1f}  {'met' if ok else 'NOT MET'}")
    c, b = statistics.mean(means_c), statistics.mean(means_b)
    ok = c >= b - average_margin
    lines.append(f"{'average':11s} {c:9.1f} {b:8.1f} {c - b:+6.1f} {'':5s}  (2) at most {average_margin:g} below: "
                 f"{'met' if ok else 'NOT MET'}")
    if sorted(cand_heads) != sorted(base_heads):
        raise ValueError("the two anatomy reports cover different heads")
    pc, pb = one_piece(cand_heads), one_piece(base_heads)
    ok = pc >= pb - piece_margin
    lines.append(f"vertex sinus in one piece on {pc} of {len(cand_heads)} heads (shipped: {pb}); (3) at least "
                 f"{pb - piece_margin}: {'met' if ok else 'NOT MET'}")
    if sorted(cand_dev) != sorted(base_dev):
        raise ValueError("the two development-head reports cover different heads")
    for case in sorted(base_dev):
        shipped, candidate = head_checks(base_dev[case]), head_checks(cand_dev[case])
        lost = [name for name, ok in shipped.items() if ok and not candidate[name]]
        lines.append(f"development head {case}: candidate meets {sorted(n for n, ok in candidate.items() if ok)}; "
                     f"(4) {'met' if not lost else 'NOT MET, lost: ' + ', '.join(lost)}")
    met = not any("NOT MET" in line for line in lines)  # every criterion's line says whether it is met
    lines.append("all criteria met" if met else "not every criterion is met")
    return lines, met


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    for who in ("candidate", "baseline"):
        ap.add_argument(f"--{who}", type=Path, required=True, help=f"heldout_report.py --data DEV --out, {who}")
        ap.add_argument(f"--{who}-eval", type=Path, required=True, help=f"evaluate --predictions --out, {who}")
        ap.add_argument(f"--{who}-devheads", type=Path, required=True, help=f"heldout_report.py --set devheads --out, {who}")
    ap.add_argument("--structure-margin", type=float, default=3.0)
    ap.add_argument("--average-margin", type=float, default=1.5)
    ap.add_argument("--piece-margin", type=int, default=1)
    args = ap.parse_args(argv)
    try:
        lines, met = judge(read_dice(args.candidate_eval), read_dice(args.baseline_eval), read_anatomy(args.candidate),
                           read_anatomy(args.baseline), read_anatomy(args.candidate_devheads),
                           read_anatomy(args.baseline_devheads), args.structure_margin, args.average_margin,
                           args.piece_margin)
    except (OSError, KeyError, ValueError, json.JSONDecodeError) as e:
        print(f"judge_demo_candidate: {e}", file=sys.stderr)
        return 2
    print("\n".join(lines))
    return 0 if met else 1


if __name__ == "__main__":
    raise SystemExit(main())
