"""The training stages as functions: coarse, coarse-checkpoint boxes, fine (per target)."""

from __future__ import annotations

import json
from pathlib import Path

from brainbarriers.structures import FINE_TARGETS, FineTarget

from .config import stage_config
from .engine import dist_info, train
from .prepare import load_index

BOXES = "coarse_boxes.json"


def select_entries(index: dict, cases: list[str] | None) -> list[dict]:
    entries = index["cases"]
    if cases:
        wanted = set(cases)
        missing = wanted - {e["case"] for e in entries}
        if missing:
            raise ValueError(f"cases not in the prepared data: {sorted(missing)}")
        entries = [e for e in entries if e["case"] in wanted]
    if not entries:
        raise ValueError("no prepared cases to train on")
    return entries


def milestone_epochs(fractions: list[float], epochs: int) -> list[int]:
    return sorted({min(epochs, max(1, round(f * epochs))) for f in fractions})


def check_cache_grid(index: dict, config: dict, key: str) -> None:
    """Refuse a cache prepared at another spacing than the recipe's ``data.<key>``: the network would
    train on that grid while the exported bundle tells the pipeline the recipe's."""
    have = [float(v) for v in index[key]]
    want = [float(v) for v in config["data"][key]]
    if any(abs(a - b) > 1e-6 for a, b in zip(have, want)):
        raise ValueError(f"the cache was prepared with {key} {have} mm but the recipe asks for {want} mm; "
                         f"run `prepare` again with this recipe (or the same --set)")


def train_coarse(config: dict, cache: Path, workdir: Path, cases: list[str] | None = None, resume: bool = True,
                 init_weights: dict | None = None) -> dict:
    """Train the coarse network into workdir/coarse; afterwards predict the boxes of every training
    case with the checkpoints saved at the ``box_checkpoints`` fractions of training (paper: 1/3,
    2/3, end) into workdir/coarse/coarse_boxes.json for the fine stage. ``init_weights``: a state
    dict to continue from (a released coarse network trained further on new material)."""
    index = load_index(cache)
    check_cache_grid(index, config, "coarse_spacing")
    entries = select_entries(index, cases)
    cfg = stage_config(config, "coarse")
    out = Path(workdir) / "coarse"
    milestones = milestone_epochs(cfg.get("box_checkpoints", []), int(cfg["epochs"]))
    summary = train(config, cfg, Path(cache), entries, out, None, spacing=index["coarse_spacing"],
                    milestones=milestones, resume=resume, init_weights=init_weights)
    rank, _, _ = dist_info()
    if rank == 0 and milestones:
        from .boxes import predict_boxes

        checkpoints = {f"epoch_{m:04d}": out / f"epoch_{m:04d}.safetensors" for m in milestones}
        boxes = predict_boxes(Path(cache), entries, checkpoints, out)
        (out / BOXES).write_text(json.dumps(boxes))
        summary["box_checkpoints"] = sorted(checkpoints)
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()  # the other processes read coarse_boxes.json next (train-fine)
    return summary


ONE_STAGE = "one-stage"


def train_one_stage(config: dict, cache: Path, workdir: Path, cases: list[str] | None = None,
                    resume: bool = True) -> dict:
    """One-stage mode (Table VI baselines): the ``coarse`` section's network, trained by the same
    loop as the coarse stage but on the whole head at the model spacing, into workdir/one-stage."""
    index = load_index(cache)
    check_cache_grid(index, config, "spacing")
    entries = select_entries(index, cases)
    cfg = {**stage_config(config, "coarse"), "one_stage": True}
    return train(config, cfg, Path(cache), entries, Path(workdir) / ONE_STAGE, None, spacing=index["spacing"],
                 resume=resume)


def train_fine(config: dict, cache: Path, workdir: Path, targets: tuple[FineTarget, ...] = FINE_TARGETS,
               cases: list[str] | None = None, resume: bool = True, init_weights: dict | None = None) -> dict:
    """Train one fine network per target into workdir/fine/<key>. Localisation comes from the coarse
    checkpoints' boxes (workdir/coarse/coarse_boxes.json) when present and the recipe asks for
    them, else from the ground-truth boxes. ``init_weights``: a state dict to continue from (one
    target's released network trained further on new material)."""
    index = load_index(cache)
    check_cache_grid(index, config, "spacing")
    entries = select_entries(index, cases)
    cfg = stage_config(config, "fine")
    boxes = None
    box_file = Path(workdir) / "coarse" / BOXES
    if cfg.get("box_source", "coarse_checkpoints") == "coarse_checkpoints" and box_file.is_file():
        boxes = json.loads(box_file.read_text())
    summaries = {}
    rank, _, _ = dist_info()
    for t in targets:
        stage_dir = Path(workdir) / "fine" / t.key
        summaries[t.key] = train(config, cfg, Path(cache), entries, stage_dir, t, boxes=boxes,
                                 spacing=index["spacing"], resume=resume, init_weights=init_weights)
        summaries[t.key]["box_source"] = "coarse checkpoints" if boxes else "ground truth"
        if rank == 0:
            summaries[t.key]["check"] = check_fine_network(Path(cache), entries, t, stage_dir)
    return summaries


#: A trained fine network must reach this mean Dice in true-box crops of its own training cases.
MIN_TRAINING_DICE = 0.5


def check_fine_network(cache: Path, entries: list[dict], target: FineTarget, stage_dir: Path,
                       cases: int = 4) -> dict:
    """Run a trained fine network on true-box crops (+ its margin) of a few of its training cases.

    A network whose units died (all-zero inputs to its head) predicts no foreground anywhere and
    fails this at once; it is written to the stage summary and logged, so that a collapsed run is
    seen when it happens, not after evaluation.
    """
    import numpy as np
    import torch
    from brainbarriers import geometry
    from brainbarriers.predict import Runner

    from .boxes import load_checkpoint_network
    from .data import as_box
    from .engine import FINAL, atomic_write_text
    from .metrics import dice
    from .prepare import load_case

    runner = Runner(torch.device("cpu"))
    net, spec = load_checkpoint_network(stage_dir, stage_dir / FINAL, runner)
    scores = []
    for entry in [e for e in entries if e["boxes"].get(target.key)][:cases]:
        image, label = load_case(cache, entry)
        box = geometry.expand_box(as_box(entry["boxes"][target.key]), int(spec["margin"]), label.shape)
        region = geometry.box_slices(box)
        prob = runner.predict(net, image[(slice(None), *region)], tuple(spec["max_crop"]))[1]
        scores.append(dice(prob > 0.5, label[region] == target.coarse_index))
    mean = float(np.mean(scores)) if scores else float("nan")
    result = {"training_crop_dice": round(mean, 4), "cases": len(scores), "ok": bool(scores) and mean >= MIN_TRAINING_DICE}
    atomic_write_text(stage_dir / "check.json", json.dumps(result))
    if not result["ok"]:
        print(f"warning: the {target.key} network reaches only Dice {mean:.3f} on its own training crops "
              f"(< {MIN_TRAINING_DICE}); the run has collapsed, train it again (another seed) or check the data")
    return result
