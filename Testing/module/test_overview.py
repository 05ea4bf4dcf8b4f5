"""``--overview`` without matplotlib (only the training extra installs it; Slicer has none)."""

from __future__ import annotations

import importlib.abc
import sys

import numpy as np
import SimpleITK as sitk
from brainbarriers import export
from brainbarriers.structures import OUTPUT_LABELS


class _NoMatplotlib(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "matplotlib" or name.startswith("matplotlib."):
            raise ImportError("matplotlib is not installed")
        return None


def _case():
    shape = (20, 30, 40)  # K, J, I
    ref = sitk.GetImageFromArray(np.linspace(-100, 300, np.prod(shape)).reshape(shape).astype(np.float32))
    ref.SetSpacing((0.8, 1.0, 2.5))
    labels = np.zeros(shape, np.uint8)
    for n, lab in enumerate(OUTPUT_LABELS):
        labels[6:14, 4 + 5 * n:8 + 5 * n, 10:30] = lab.value
    lab_image = sitk.GetImageFromArray(labels)
    lab_image.CopyInformation(ref)
    return ref, lab_image


def test_overview_png_without_matplotlib(tmp_path):
    hidden = {k: sys.modules.pop(k) for k in list(sys.modules) if k == "matplotlib" or k.startswith("matplotlib.")}
    guard = _NoMatplotlib()
    sys.meta_path.insert(0, guard)
    try:
        ref, labels = _case()
        path = tmp_path / "case_overview.png"
        export.write_overview(path, ref, labels)
    finally:
        sys.meta_path.remove(guard)
        sys.modules.update(hidden)
    png = sitk.ReadImage(str(path))
    assert png.GetNumberOfComponentsPerPixel() == 3
    rgb = sitk.GetArrayFromImage(png).reshape(-1, 3)
    colours = {tuple(c) for c in rgb}
    for lab in OUTPUT_LABELS:  # every structure's key swatch is there in its exact colour
        assert tuple(int(round(c * 255)) for c in lab.color_float) in colours
    width, height = png.GetSize()
    # square pixels: axial 30 rows x 40 cols at (1.0, 0.8) mm -> 0.8 mm pixels = 38 x 40 ... and so on
    assert width > 3 * 40 and height > 28
