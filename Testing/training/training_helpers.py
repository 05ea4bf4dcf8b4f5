"""Shared helpers of the training tests: tiny recipes and a prepared phantom set."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from brainbarriers_training.config import deep_merge, load_config
from brainbarriers_training.phantom import generate_dataset
from brainbarriers_training.prepare import prepare

REPO = Path(__file__).resolve().parents[2]
#: this checkout's packages first, whichever checkout the environment's editable install points at
PYTHONPATH = os.pathsep.join([str(REPO), str(REPO / "SlicerBrainBarriers")])

#: A recipe small enough for unit tests: tiny networks, few steps, one thread, no workers.
TINY = {
    "seed": 3,
    "train": {"epochs": 2, "iterations_per_epoch": 4, "batch_size": 2, "num_workers": 0, "threads": 1,
              "checkpoint_every_steps": 1, "progress": False, "tensorboard": False,
              "optimizer": {"name": "adamw", "lr": 0.003}},
    "coarse": {"options": {"levels": 3, "base_width": 4, "max_width": 8}},
    "fine": {"networks": {"p": {"options": {"hr_width": 2, "mr_widths": [4, 4, 8, 8]}},
                          "s": {"options": {"hr_width": 2, "mr_widths": [4, 4, 8, 8]}}}},
}


def tiny_config(**changes) -> dict:
    """The smoke recipe shrunk to TINY; stage-specific schedules of the recipe are dropped so that
    the ``train`` section (TINY + ``changes``) applies to both stages."""
    base = load_config("smoke")
    for stage in ("coarse", "fine"):
        for key in ("epochs", "iterations_per_epoch", "optimizer", "batch_size"):
            base[stage].pop(key, None)
    return deep_merge(base, deep_merge(TINY, changes))


def write_config(config: dict, path: Path) -> Path:
    config = {k: v for k, v in config.items() if not k.startswith("_")}
    path.write_text(json.dumps(config))
    return path


def make_prepared(root: Path, cases: int = 4, seed: int = 11) -> tuple[Path, Path, dict]:
    """(data folder, cache folder, index) of a small phantom set prepared with the smoke spacing."""
    data = root / "data"
    generate_dataset(data, cases, seed=seed)
    cache = root / "cache"
    index = prepare(data, cache, load_config("smoke")["data"], progress=False)
    return data, cache, index


def run_training_cli(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=PYTHONPATH)
    return subprocess.run([sys.executable, "-m", "brainbarriers_training", *args], env=env, capture_output=True, text=True,
                          cwd=REPO, **kwargs)
