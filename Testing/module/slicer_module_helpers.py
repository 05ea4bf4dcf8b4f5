"""Helpers of the harness tests: the module loaded as Slicer loads it, its panel, input volumes in
``slicer.mrmlScene``, a tiny model bundle imported through the panel."""

from __future__ import annotations

import importlib.util
import sys
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

REPO = Path(__file__).resolve().parents[2]
MODULE_FILE = REPO / "SlicerBrainBarriers" / "SlicerBrainBarriers.py"
TINY_BUNDLE = REPO / "Testing" / "pipeline" / "tiny_bundle.py"
DICOM_HELPERS = REPO / "Testing" / "dicom" / "dicom_helpers.py"
if str(REPO / "Testing") not in sys.path:
    sys.path.insert(0, str(REPO / "Testing"))

import slicer_harness  # noqa: E402, F401 (the tests install it)


def _load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_tiny_bundle(folder: Path, **kwargs) -> Path:
    return _load(TINY_BUNDLE, "tiny_bundle_for_harness").write_tiny_bundle(folder, **kwargs)


def head_volume(path: Path, seed: int = 0, shift_mm: float = 0.0, shape=(28, 32, 30), ct: bool = True) -> Path:
    """A small head-like volume: an ellipsoid on air, in Hounsfield units for CT and MR-like values
    otherwise (the pipeline's input checks see a head)."""
    rng = np.random.default_rng(seed)
    k, j, i = np.indices(shape)
    centre = np.array(shape) / 2
    inside = ((k - centre[0]) / 11) ** 2 + ((j - centre[1]) / 13) ** 2 + ((i - centre[2]) / 12) ** 2 < 1
    inside_value, air = (40, -1000) if ct else (300, 0)
    array = np.where(inside, inside_value, air).astype(np.int16) + rng.integers(0, 20, shape).astype(np.int16)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((1.5, 1.5, 1.5))
    image.SetOrigin((-22.0 + shift_mm, -24.0, -21.0))
    sitk.WriteImage(image, str(path))
    return path


def load_patient(folder: Path, prefix: str, seed: int = 0, t2_shift_mm: float = 0.0, modalities=("ct", "t1", "t2")):
    import slicer

    folder.mkdir(parents=True, exist_ok=True)
    nodes = {}
    for n, m in enumerate(modalities):
        path = head_volume(folder / f"{prefix}_{m}.nrrd", seed=seed + n, shift_mm=t2_shift_mm if m == "t2" else 0.0, ct=m == "ct")
        nodes[m] = slicer.util.loadVolume(str(path), {"name": f"{prefix} {m.upper()}"})
    return nodes


def load_dicom_patient(harness, folder: Path, prefix: str, seed: int = 0) -> dict:
    """A patient whose CT is a DICOM series loaded from the harness's DICOM database (as the DICOM
    browser loads it) and whose T1 and T2 are NRRD files on the same grid."""
    from pydicom.uid import generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    ct = sitk.ReadImage(str(head_volume(folder / f"{prefix}_ct.nrrd", seed=seed)))
    helpers = _load(DICOM_HELPERS, "dicom_helpers_for_harness")
    uids = helpers.write_series(ct, folder / "dicom", "CT", generate_uid(), generate_uid(), f"{prefix} CT head", 2)
    (volume,) = harness.load_dicom(folder / "dicom")
    nodes = load_patient(folder, prefix, seed=seed + 1, modalities=("t1", "t2"))
    return {"ct": volume, **nodes, "uids": uids, "dicom": folder / "dicom"}


def snapshot():
    import slicer

    scene = slicer.mrmlScene
    return [(scene.GetNthNode(i).GetID(), scene.GetNthNode(i).GetMTime()) for i in range(scene.GetNumberOfNodes())]


class Panel:
    """The module's widget as the user sees it, plus the harness that drives the event loop."""

    def __init__(self, harness, module):
        self.harness = harness
        self.module = module
        self.qwidget = module.widgetRepresentation()
        import slicer

        self.widget = slicer.modules.SlicerBrainBarriersWidget
        self.ui = self.widget.ui

    def click(self, button) -> float:
        t0 = time.perf_counter()
        button.click()
        elapsed = time.perf_counter() - t0
        self.harness.raise_slot_errors()
        return elapsed

    def idle(self) -> bool:
        return not self.widget._busy()

    def wait_idle(self, timeout=240.0):
        self.harness.wait_until(self.idle, timeout, "the panel to finish")

    def select_model(self, model_id: str):
        combo = self.ui.modelComboBox
        for i in range(combo.count):
            if combo.itemText(i).startswith(model_id + " "):
                combo.currentIndex = i
                return
        raise AssertionError(f"{model_id} not in {[combo.itemText(i) for i in range(combo.count)]}")
