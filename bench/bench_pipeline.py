"""Time the whole pipeline (read -> coarse -> fine -> export) on one 164x194x142 case at 1.2 mm.

Paper-size networks with random weights (coarse 3D U-Net 5 levels / 32 features, HMRNet-p/-s with
HR 8). A random coarse network gives arbitrary boxes, so by default the fine boxes are fixed to
plausible per-structure sizes (PLAUSIBLE_MM below, plus each target's margin) placed inside the
head: the fine stage then does the work a trained model would. The coarse network still runs at
its declared spacing. Prints per-stage seconds, wall time and peak RSS.

    python bench/bench_pipeline.py [--threads 2] [--coarse-spacing 2.4] [--precision fp32|bf16]
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

#: Extent (LR, AP, IS) in mm of each structure in an adult head (before the crop margin).
PLAUSIBLE_MM = {
    "cerebellum": (110, 60, 50),
    "falx": (10, 150, 70),
    "sagittal_sinus": (12, 170, 100),
    "transverse_sinus": (120, 60, 35),
    "tentorium": (100, 70, 40),
    "ventricles": (50, 80, 50),
}
SIZE = (164, 194, 142)
SPACING = 1.2


def make_case(folder: Path) -> dict[str, Path]:
    """A head-like case (ellipsoid skull and brain) with CT, T1, T2 on one 1.2 mm grid."""
    k, j, i = np.meshgrid(*[np.arange(n, dtype=np.float32) for n in reversed(SIZE)], indexing="ij")
    c = [(n - 1) / 2 for n in SIZE]
    r = ((i - c[0]) / 70) ** 2 + ((j - c[1]) / 85) ** 2 + ((k - c[2]) / 65) ** 2
    rng = np.random.default_rng(0)
    values = {"ct": (-1000, 900, 40), "t1": (0, 60, 400), "t2": (0, 40, 300)}
    paths = {}
    for m, (bg, skull, brain) in values.items():
        a = np.full(r.shape, bg, np.float32)
        a[r < 1] = skull
        a[r < 0.8] = brain
        a += rng.normal(0, 5, a.shape).astype(np.float32)
        img = sitk.GetImageFromArray(a)
        img.SetSpacing((SPACING,) * 3)
        paths[m] = folder / f"bench_{m}.nrrd"
        sitk.WriteImage(img, str(paths[m]))
    return paths


def write_paper_bundle(folder: Path, coarse_spacing: float, max_crop: int) -> Path:
    import torch
    from brainbarriers.bundles import build_manifest, coarse_network, fine_network, write_bundle
    from brainbarriers.networks import build
    from brainbarriers.structures import FINE_TARGETS

    torch.manual_seed(0)
    coarse = coarse_network()
    fine = {t.key: fine_network(t, max_crop=[max_crop] * 3) for t in FINE_TARGETS}
    states = {"coarse.safetensors": build(coarse["architecture"], 3, coarse["out_channels"]).state_dict()}
    for key, spec in fine.items():
        states[f"fine_{key}.safetensors"] = build(spec["architecture"], 3, 2, **spec["options"]).state_dict()
    manifest = build_manifest(model_id="bench-paper-size", version="0.0.0", licence="none (random weights)",
                              coarse=coarse, fine=fine, spacing=[SPACING] * 3, coarse_spacing=[coarse_spacing] * 3,
                              normalisation={"ct": {"clip": [-100, 200]}, "t1": {}, "t2": {}})
    return write_bundle(folder / "bundle", manifest, states)


def plausible_boxes(shape_kji: tuple[int, int, int]) -> dict:
    """Model-grid boxes (K, J, I) of PLAUSIBLE_MM + margin, centred in the volume, clipped."""
    from brainbarriers.structures import fine_target

    boxes = {}
    for key, (lr, ap, si) in PLAUSIBLE_MM.items():
        m = fine_target(key).margin
        size = [round(si / SPACING) + 2 * m, round(ap / SPACING) + 2 * m, round(lr / SPACING) + 2 * m]
        lo = [max(0, (n - s) // 2) for n, s in zip(shape_kji, size)]
        hi = [min(n, a + s) for n, a, s in zip(shape_kji, lo, size)]
        boxes[key] = (tuple(lo), tuple(hi))
    return boxes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--coarse-spacing", type=float, default=2.4)
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    ap.add_argument("--max-crop", type=int, default=160, help="fine max_crop written into the bench bundle")
    ap.add_argument("--quality", default="fast", choices=["fast", "full"])
    ap.add_argument("--coarse-boxes", action="store_true", help="use the random coarse net's boxes (arbitrary)")
    args = ap.parse_args()

    import torch
    from brainbarriers.bundles import load_bundle
    from brainbarriers.cases import run_case
    from brainbarriers.pipeline import Segmenter, SegmentOptions

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        inputs = make_case(tmp)
        bundle_dir = write_paper_bundle(tmp, args.coarse_spacing, args.max_crop)
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        usage = resource.getrusage(resource.RUSAGE_SELF)
        cpu0 = usage.ru_utime + usage.ru_stime
        t0 = time.perf_counter()
        bundle = load_bundle(bundle_dir)
        shape = tuple(reversed(sitk.ReadImage(str(inputs["ct"])).GetSize()))
        # model grid = the input grid here (identity direction, 1.2 mm): boxes are in its (K, J, I) indices
        boxes = None if args.coarse_boxes else plausible_boxes(shape)
        opts = SegmentOptions(quality=args.quality, precision=args.precision, fine_boxes=boxes)
        seg = Segmenter(bundle, "cpu", opts)
        out = run_case(seg, inputs, tmp / "out", "bench", overwrite=True)
        wall = time.perf_counter() - t0
        usage = resource.getrusage(resource.RUSAGE_SELF)
        cpu = usage.ru_utime + usage.ru_stime - cpu0
        report = json.loads(Path(out["report"]).read_text())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"case {SIZE} at {SPACING} mm, coarse at {args.coarse_spacing} mm, {args.precision}, {args.quality}, "
          f"threads {args.threads}, boxes {'coarse (random)' if args.coarse_boxes else 'fixed plausible'}")
    for stage, sec in report["timings_s"].items():
        print(f"  {stage:<24} {sec:8.2f} s")
    for key, box in report["fine_boxes"].items():
        if box:
            (k0, j0, i0), (k1, j1, i1) = box["model_grid_index"]
            print(f"  crop {key:<19} {i1 - i0}x{j1 - j0}x{k1 - k0}")
    print(f"wall (load model .. outputs written): {wall:.1f} s   [target <= 60 s]")
    print(f"CPU time of that part: {cpu:.1f} s over {args.threads} threads (wall on an idle machine is about "
          f"CPU/threads; a shared machine inflates wall, not CPU)")
    print(f"peak RSS: {peak:.0f} MB (before the run: {rss_before:.0f} MB)   [target <= 3072 MB]")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
