"""Coarse training-step time on CPU with the stock instance norm and with the channels-last one
(InstanceNormChannelsLast in SlicerBrainBarriers/brainbarriers/networks/blocks.py), both in this run.

    python bench/bench_norm_channels_last.py [--threads 1] [--steps 8] [--rounds 3]

One optimizer step of the demo recipe's coarse network (channels-last, as the recipe trains it) on
the sample head's 80 x 96 x 80 grid at 2.4 mm with the recipe's loss; the two norms alternate in
rounds (so that a neighbour's load falls on both), and each prints its median seconds per step
(first step of each round left out) and the stock / channels-last ratio (above 1: the new norm is
faster).
"""

from __future__ import annotations

import argparse
import statistics
import time
from contextlib import contextmanager

import torch
from brainbarriers.networks import blocks
from brainbarriers_training.config import load_recipe, stage_config
from brainbarriers_training.engine import build_network, make_loss, make_optimizer, network_spec
from brainbarriers_training.smoke import cpu_name

SHAPE = (80, 96, 80)


@contextmanager
def stock_norm():
    """The training-mode conv units take nn.InstanceNorm3d for every tensor."""
    original = blocks.trains_channels_last
    blocks.trains_channels_last = lambda *args: False
    try:
        yield
    finally:
        blocks.trains_channels_last = original


def step_times(steps: int, stock: bool) -> list[float]:
    recipe = load_recipe("demo")
    cfg = stage_config(recipe, "coarse")
    torch.manual_seed(0)
    model = build_network(network_spec(recipe, None)).train().to(memory_format=torch.channels_last_3d)
    loss_fn = make_loss(cfg, None)
    optimizer = make_optimizer(model, cfg["optimizer"])
    x = torch.randn(1, 3, *SHAPE).contiguous(memory_format=torch.channels_last_3d)
    y = torch.randint(0, 7, (1, *SHAPE))
    times = []
    with stock_norm() if stock else _unchanged():
        for _ in range(steps + 1):
            start = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            loss_fn(model(x), y).backward()
            optimizer.step()
            times.append(time.perf_counter() - start)
    return times[1:]


@contextmanager
def _unchanged():
    yield


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"CPU: {cpu_name()}; torch {torch.__version__}; {args.threads} thread(s); "
          f"coarse network, demo recipe, {SHAPE[0]} x {SHAPE[1]} x {SHAPE[2]}")
    stock: list[float] = []
    ours: list[float] = []
    for _ in range(args.rounds):
        stock += step_times(args.steps, stock=True)
        ours += step_times(args.steps, stock=False)
    a, b = statistics.median(stock), statistics.median(ours)
    print(f"stock instance norm:        {a:.3f} s per step (median of {len(stock)})")
    print(f"channels-last instance norm: {b:.3f} s per step (median of {len(ours)})")
    print(f"ratio stock / channels-last: {a / b:.2f}")


if __name__ == "__main__":
    main()
