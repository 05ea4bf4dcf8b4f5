"""Training-step time on CPU with the stock batch-1 convolution and with the two-halves one
(SlicerBrainBarriers/brainbarriers/networks/cpu_conv.py), both measured in this run.

    python bench/bench_cpu_conv.py [--threads 1] [--repeats 5]

First single convolutions of the sizes the demo recipe's networks see, then one forward and
backward pass of each demo network on a crop of the recipe's largest size (fine: 40^3; coarse:
the sample head's 80 x 96 x 80 grid at 2.4 mm), in the usual and the channels-last layout. Prints
milliseconds and the stock / split ratio (above 1: the split is faster).
"""

from __future__ import annotations

import argparse
import time
from contextlib import contextmanager

import torch
from brainbarriers.networks import cpu_conv
from brainbarriers.structures import FINE_TARGETS
from brainbarriers_training.config import load_recipe
from brainbarriers_training.engine import build_network, network_spec
from brainbarriers_training.smoke import cpu_name

CONVS = [  # (in, out, kernel, size): fine crop levels and the coarse U-Net's deeper levels
    (4, 4, (3, 3, 3), 40), (8, 8, (3, 3, 3), 40), (16, 16, (3, 3, 3), 20), (32, 32, (3, 3, 3), 10),
    (8, 8, (3, 3, 1), 40), (8, 8, (1, 1, 3), 40), (32, 32, (3, 3, 3), 20), (64, 64, (3, 3, 3), 10),
]


@contextmanager
def stock_convolution():
    """cpu_conv.conv3d falls through to F.conv3d for every input."""
    original = cpu_conv.would_split
    cpu_conv.would_split = lambda *args, **kwargs: False
    try:
        yield
    finally:
        cpu_conv.would_split = original


def best_ms(fn, repeats: int) -> float:
    fn()  # warm-up: kernel selection and allocations
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1000 * min(times)


def conv_rows(repeats: int) -> None:
    print(f"{'convolution (forward + backward)':40s} {'stock ms':>9s} {'split ms':>9s} {'ratio':>6s}")
    for cin, cout, kernel, n in CONVS:
        x = torch.randn(1, cin, n, n, n, requires_grad=True)
        w = torch.randn(cout, cin, *kernel, requires_grad=True)
        pad = tuple(k // 2 for k in kernel)

        def step(x=x, w=w, pad=pad):
            cpu_conv.conv3d(x, w, None, 1, pad).sum().backward()

        with stock_convolution():
            stock = best_ms(step, repeats)
        split = best_ms(step, repeats)
        name = f"{cin}->{cout} {'x'.join(map(str, kernel))} on {n}^3"
        print(f"{name:40s} {stock:9.1f} {split:9.1f} {stock / split:6.2f}")


def network_rows(repeats: int) -> None:
    recipe = load_recipe("demo")
    targets = {t.key: t for t in FINE_TARGETS}
    nets = [("coarse U-Net", None, (80, 96, 80)), ("HMRNet-p (ventricles)", targets["ventricles"], (40, 40, 40)),
            ("HMRNet-s (falx)", targets["falx"], (40, 40, 40))]
    print(f"\n{'network step (forward + backward)':40s} {'stock ms':>9s} {'split ms':>9s} {'ratio':>6s}")
    for name, target, size in nets:
        torch.manual_seed(0)
        model = build_network(network_spec(recipe, target)).train()
        x = torch.randn(1, 3, *size)
        for layout in (torch.contiguous_format, torch.channels_last_3d):
            model = model.to(memory_format=layout)
            xl = x.contiguous(memory_format=layout)

            def step(model=model, xl=xl):
                model.zero_grad(set_to_none=True)
                out = model(xl)
                (out[0] if isinstance(out, (list, tuple)) else out).float().mean().backward()

            with stock_convolution():
                stock = best_ms(step, repeats)
            split = best_ms(step, repeats)
            label = f"{name}{', channels-last' if layout is torch.channels_last_3d else ''}"
            print(f"{label:40s} {stock:9.1f} {split:9.1f} {stock / split:6.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the demo build trains on 1)")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats; the best is printed")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), {cpu_name()}, best of {args.repeats}")
    conv_rows(args.repeats)
    network_rows(args.repeats)


if __name__ == "__main__":
    main()
