"""Pictures for docs/demo.md: the demo training labels over the sample case.

Usage: python scripts/demo_figures.py LABELS.nrrd|mha OUT.png [--image Resources/SampleData/sample_t1.nrrd] [--lps]
       [--slices k,j,i ...] [--title TEXT]
       python scripts/demo_figures.py --synthetic DATA OUT.png --cases 002 003 004
Each --slices gives one row: axial slice k, coronal slice j, sagittal slice i (array indices).
``--synthetic`` draws one row per case of an ABCs-layout folder: CT, T1 and T2 (mid-axial), the
T1 mid-sagittal, and the labels over the T1 (mid-axial).
Colours come from brainbarriers.structures.OUTPUT_LABELS.
"""

from __future__ import annotations

import argparse

import matplotlib
import numpy as np
import SimpleITK as sitk

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from brainbarriers.structures import OUTPUT_LABELS  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402


def overlay(ax, image: np.ndarray, labels: np.ndarray, window: tuple[float, float], aspect: float = 1.0) -> None:
    ax.imshow(image, cmap="gray", vmin=window[0], vmax=window[1], origin="lower", aspect=aspect)
    rgba = np.zeros((*labels.shape, 4))
    for lab in OUTPUT_LABELS:
        rgba[labels == lab.value] = (*lab.color_float, 0.75)
    ax.imshow(rgba, origin="lower", interpolation="nearest", aspect=aspect)
    ax.axis("off")


def synthetic_rows(data: str, cases: list[str], output: str) -> None:
    fig, axes = plt.subplots(len(cases), 5, figsize=(12.5, 2.7 * len(cases)), squeeze=False)
    for r, case in enumerate(cases):
        arrays = {key: sitk.GetArrayFromImage(sitk.ReadImage(f"{data}/{case}/{case}_{key}.mha")).astype(np.float32)
                  for key in ("ct", "t1", "t2", "labelmap_task1")}
        k, _, i = (s // 2 for s in arrays["t1"].shape)
        for c, key in enumerate(("ct", "t1", "t2")):
            window = (-100, 200) if key == "ct" else (0, 255)
            axes[r, c].imshow(arrays[key][k][::-1], cmap="gray", vmin=window[0], vmax=window[1], origin="lower")
            axes[r, c].set_title(f"{case} {key.upper()}", fontsize=9)
            axes[r, c].axis("off")
        axes[r, 3].imshow(arrays["t1"][:, :, i], cmap="gray", vmin=0, vmax=255, origin="lower")
        axes[r, 3].set_title(f"{case} T1 sagittal", fontsize=9)
        axes[r, 3].axis("off")
        overlay(axes[r, 4], arrays["t1"][k][::-1], arrays["labelmap_task1"][k][::-1].astype(int), (0, 255))
        axes[r, 4].set_title(f"{case} labels", fontsize=9)
    fig.tight_layout()
    fig.savefig(output, dpi=70)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("labels", nargs="?")
    p.add_argument("output", nargs="?")
    p.add_argument("--synthetic", default=None, metavar="DATA")
    p.add_argument("--cases", nargs="+", default=["002", "003", "004"])
    p.add_argument("--image", default="Resources/SampleData/sample_t1.nrrd")
    p.add_argument("--slices", nargs="+", default=None)
    p.add_argument("--title", default="")
    p.add_argument("--lps", action="store_true",
                   help="reorient image and labels to LPS first (heads stored in another layout, e.g. LIA)")
    args = p.parse_args(argv)
    if args.synthetic:
        synthetic_rows(args.synthetic, args.cases, args.labels)
        return 0
    image_sitk, labels_sitk = sitk.ReadImage(args.image), sitk.ReadImage(args.labels)
    if args.lps:
        image_sitk, labels_sitk = sitk.DICOMOrient(image_sitk, "LPS"), sitk.DICOMOrient(labels_sitk, "LPS")
    img = sitk.GetArrayFromImage(image_sitk).astype(np.float32)
    lab = sitk.GetArrayFromImage(labels_sitk)
    window = (-100, 200) if img.min() < -500 else tuple(np.percentile(img[img > 0], [1, 99.5]))
    rows = [tuple(int(v) for v in s.split(",")) for s in (args.slices or [",".join(str(s // 2) for s in img.shape)])]
    fig, axes = plt.subplots(len(rows), 3, figsize=(10, 3.6 * len(rows)), squeeze=False)
    for r, (k, j, i) in enumerate(rows):
        # axial: rows j (anterior at bottom->flip so anterior is up), columns i (patient right on the left)
        overlay(axes[r, 0], img[k][::-1], lab[k][::-1], window)
        axes[r, 0].set_title(f"axial k={k}", fontsize=9)
        overlay(axes[r, 1], img[:, j, :], lab[:, j, :], window)
        axes[r, 1].set_title(f"coronal j={j}", fontsize=9)
        overlay(axes[r, 2], img[:, :, i], lab[:, :, i], window)
        axes[r, 2].set_title(f"sagittal i={i} (anterior left)", fontsize=9)
    handles = [Patch(color=lab_.color_float, label=lab_.name) for lab_ in OUTPUT_LABELS]
    fig.legend(handles=handles, loc="lower center", ncol=5, fontsize=9)
    if args.title:
        fig.suptitle(args.title, fontsize=11)
    fig.tight_layout(rect=(0, 0.04, 1, 0.97))
    fig.savefig(args.output, dpi=80)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
