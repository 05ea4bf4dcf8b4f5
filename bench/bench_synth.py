"""Seconds per synthetic head drawn by the domain-randomised generator (training/synth.py).

    python bench/bench_synth.py [--tissue /work/demo_work/demo_tissues.nrrd] [--samples 4] [--threads 1]

Without ``--tissue`` it times a stand-in tissue map of the demo's size (151 x 181 x 151 at 1.2 mm:
nested ellipsoids of every class). Prints the grid, the CPU, and seconds per sample (deformation,
three channels and the label; writing the files is not counted).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from brainbarriers_training import synth
from brainbarriers_training.smoke import cpu_name


def stand_in_map(size: tuple[int, int, int] = (151, 181, 151), spacing: float = 1.2) -> sitk.Image:
    """Nested ellipsoids, outermost first, one per tissue class."""
    k, j, i = np.meshgrid(*[np.linspace(-1, 1, n) for n in size[::-1]], indexing="ij")
    radius = np.sqrt(k**2 + j**2 + i**2)
    tissue = np.zeros(radius.shape, np.uint8)
    classes = [t.value for t in synth.TISSUES if t.key != "air"]
    for n, value in enumerate(classes):
        tissue[radius < 0.95 - 0.9 * n / len(classes)] = value
    image = sitk.GetImageFromArray(tissue)
    image.SetSpacing((spacing,) * 3)
    return image


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tissue", type=Path, default=None)
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1, help="ITK threads")
    args = ap.parse_args(argv)
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(args.threads)
    tissue = sitk.ReadImage(str(args.tissue), sitk.sitkUInt8) if args.tissue else stand_in_map()
    times = []
    for n in range(args.samples):
        start = time.perf_counter()
        synth.synthesize(tissue, np.random.default_rng([0, n]))
        times.append(time.perf_counter() - start)
    print(f"machine: {cpu_name()}, ITK threads {args.threads}")
    print(f"grid {tissue.GetSize()} at {tissue.GetSpacing()[0]:.2f} mm; {args.samples} samples")
    print(f"seconds per sample: mean {np.mean(times):.2f}, min {np.min(times):.2f}, max {np.max(times):.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
