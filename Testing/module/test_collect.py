"""Saving reviewed cases for training: the command line on a .seg.nrrd that Slicer wrote after an edit,
and the module's "Save case for training", both into the training layout with provenance."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import slicer
from brainbarriers.structures import OUTPUT_LABELS, output_label
from module_helpers import label_array, scene_with_study, write_result
from SlicerBrainBarriersLib import scene_io, segments
from SlicerBrainBarriersLib.logic import BrainBarriersLogic
from vtk.util.numpy_support import vtk_to_numpy

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def edited_case(tmp_path):
    """A scene with the module's segments where the user grew the cerebellum over the tentorium's box."""
    scene, _, _, (ct, t1, t2) = scene_with_study(tmp_path)
    outputs = write_result(tmp_path / "out")
    node = segments.import_labels(scene, scene_io.read_label_map(outputs["labels"]), OUTPUT_LABELS, ct,
                                  model="brainbarriers-demo@0.1.0").node
    cerebellum = output_label("cerebellum")
    edited = scene_io.read_label_map(outputs["labels"])
    arr = vtk_to_numpy(edited.GetPointData().GetScalars())
    arr[arr == output_label("tentorium").value] = cerebellum.value
    edited.Modified()
    assert slicer.vtkSlicerSegmentationsModuleLogic.SetBinaryLabelmapToSegment(
        segments.binary_segment_image(edited, cerebellum.value), node, cerebellum.segment_id,
        slicer.vtkSlicerSegmentationsModuleLogic.MODE_REPLACE)
    node.GetSegmentation().RemoveSegment(output_label("tentorium").segment_id)  # the user deleted the tentorium
    expected = label_array()
    expected[expected == output_label("tentorium").value] = cerebellum.value
    return scene, node, (ct, t1, t2), expected


def _check_case(folder: Path, case: str, ct_node, expected: np.ndarray) -> dict:
    names = sorted(p.name for p in folder.iterdir())
    assert names == sorted([f"{case}_ct.mha", f"{case}_t1.mha", f"{case}_t2.mha", f"{case}_labelmap_task1.mha",
                            f"{case}_provenance.json"])
    label = sitk.ReadImage(str(folder / f"{case}_labelmap_task1.mha"))
    ct = sitk.ReadImage(str(folder / f"{case}_ct.mha"))
    assert label.GetPixelID() == sitk.sitkUInt8 and label.GetSize() == ct.GetSize()
    assert np.allclose(label.GetDirection(), ct.GetDirection()) and np.allclose(label.GetOrigin(), ct.GetOrigin())
    assert np.array_equal(sitk.GetArrayFromImage(label), expected)
    # readable by the training code as one whole case
    from brainbarriers_training.config import load_config
    from brainbarriers_training.prepare import discover, preprocess_case

    found = [c for c in discover(folder.parent) if c.case == case]
    assert len(found) == 1 and all(found[0].files.values())
    out = preprocess_case(found[0], load_config("smoke")["data"])
    assert out["label"].any()
    return json.loads((folder / f"{case}_provenance.json").read_text())


def test_cli_collect_on_a_seg_nrrd_written_by_slicer(edited_case, tmp_path):
    scene, node, (ct, t1, t2), expected = edited_case
    seg = tmp_path / "reviewed.seg.nrrd"
    storage = node.CreateDefaultStorageNode()
    storage.SetFileName(str(seg))
    assert storage.WriteData(node)
    files = {m: scene_io.export_volume(n, tmp_path / f"{m}.nrrd") for m, n in (("ct", ct), ("t1", t1), ("t2", t2))}
    site = tmp_path / "site"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "SlicerBrainBarriers"), str(REPO)])}
    cmd = [sys.executable, "-m", "brainbarriers", "collect", "--seg", str(seg), "--ct", str(files["ct"]),
           "--t1", str(files["t1"]), "--t2", str(files["t2"]), "--out", str(site), "--model-sha256", "a" * 64]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "saved case 001" in proc.stdout and "edited: cerebellum" in proc.stdout
    prov = _check_case(site / "001", "001", ct, expected)
    # the file's hashes agree with the module's: only the cerebellum counts as edited
    assert prov["edited"] == ["cerebellum"]
    assert {k: v["edited"] for k, v in prov["structures"].items()} == {
        "cerebellum": True, "falx": False, "sinuses": False, "ventricles": False}
    assert prov["model"] == {"id": "brainbarriers-demo", "version": "0.1.0", "sha256": "a" * 64}
    assert prov["sources"]["segmentation"]["sha256"] and prov["date"]

    # a second run picks the next id; an existing id is refused (one line, exit 2) and left as it was
    again = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert again.returncode == 0 and (site / "002").is_dir()
    before = (site / "001" / "001_labelmap_task1.mha").read_bytes()
    refused = subprocess.run(cmd + ["--case", "001"], capture_output=True, text=True, env=env, timeout=120)
    assert refused.returncode == 2 and "already exists" in refused.stderr and "Traceback" not in refused.stderr
    assert (site / "001" / "001_labelmap_task1.mha").read_bytes() == before
    assert not [p for p in site.iterdir() if p.name.startswith(".tmp")]


def test_module_save_case_for_training(edited_case, tmp_path):
    scene, node, (ct, t1, t2), expected = edited_case
    nodes_before = scene.GetNumberOfNodes()
    logic = BrainBarriersLogic(scene)
    result = logic.save_case_for_training(node, {"ct": ct, "t1": t1, "t2": t2}, tmp_path / "site", case="site-7")
    prov = _check_case(result.folder, "site-7", ct, expected)
    assert prov["edited"] == ["cerebellum"] and "tentorium" not in prov["structures"]
    assert prov["model"]["id"] == "brainbarriers-demo" and prov["model"]["version"] == "0.1.0"
    assert "Save case for training" in prov["written_by"]
    assert scene.GetNumberOfNodes() == nodes_before  # nothing added to the user's scene
    with pytest.raises(ValueError, match="at least one input"):
        logic.save_case_for_training(node, {}, tmp_path / "site")
