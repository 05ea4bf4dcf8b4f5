"""k-fold cross-validation: per fold, train coarse + fine on the other folds and evaluate the held-out one."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from brainbarriers.structures import FINE_TARGETS, FineTarget

from .evaluate import evaluate_model, indexed_cases, write_results
from .export import export_bundle
from .prepare import load_index
from .stages import select_entries, train_coarse, train_fine, train_one_stage


def make_folds(cases: list[str], folds: int, seed: int) -> list[list[str]]:
    """Shuffle the case ids (seeded) and deal them into ``folds`` held-out sets."""
    if folds < 2 or folds > len(cases):
        raise ValueError(f"--folds must be between 2 and the number of cases ({len(cases)}), not {folds}")
    order = list(np.random.default_rng(seed).permutation(sorted(cases)))
    return [sorted(str(c) for c in order[k::folds]) for k in range(folds)]


def cross_validate(config: dict, cache: Path, workdir: Path, folds: int = 5, cases: list[str] | None = None,
                   resume: bool = True, targets: tuple[FineTarget, ...] = FINE_TARGETS) -> str:
    """Train, export and evaluate every fold in workdir/fold_k; returns the pooled summary table
    (also in workdir/evaluation: metrics.csv with the fold per row, summary.txt). Each fold is scored
    through the shipped pipeline on its exported bundle (workdir/fold_k/bundle)."""
    index = load_index(cache)
    ids = [e["case"] for e in select_entries(index, cases)]
    splits = make_folds(ids, folds, int(config.get("seed", 0)))
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "folds.json").write_text(json.dumps(splits, indent=1))
    rows = []
    for k, held_out in enumerate(splits):
        fold_dir = workdir / f"fold_{k}"
        train_ids = [c for c in ids if c not in held_out]
        if config.get("mode") == "one-stage":
            train_one_stage(config, cache, fold_dir, train_ids, resume)
        else:
            train_coarse(config, cache, fold_dir, train_ids, resume)
            train_fine(config, cache, fold_dir, targets, cases=train_ids, resume=resume)
        bundle = export_bundle(fold_dir, fold_dir / "bundle")
        fold_rows = evaluate_model(bundle, indexed_cases(index, held_out), progress=False)
        write_results(fold_rows, fold_dir / "evaluation")
        rows += [{**r, "fold": k} for r in fold_rows]
    return write_results(rows, workdir / "evaluation")
