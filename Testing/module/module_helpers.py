"""Shared fixtures for the module tests: an oblique case written as the CLI writes it."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import slicer
from brainbarriers.structures import OUTPUT_LABELS

SHAPE = (24, 28, 32)  # numpy (K, J, I)
SPACING = (0.9, 1.1, 1.4)
ORIGIN = (12.0, -30.0, 25.0)


def oblique_direction(angle_a: float = 0.35, angle_b: float = 0.2) -> tuple[float, ...]:
    """A rotation about two axes (a genuinely oblique LPS direction matrix)."""
    ca, sa, cb, sb = math.cos(angle_a), math.sin(angle_a), math.cos(angle_b), math.sin(angle_b)
    rz = np.array([[ca, -sa, 0], [sa, ca, 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, cb, -sb], [0, sb, cb]])
    return tuple((rz @ rx).ravel())


def _image(array: np.ndarray) -> sitk.Image:
    img = sitk.GetImageFromArray(array)
    img.SetSpacing(SPACING)
    img.SetOrigin(ORIGIN)
    img.SetDirection(oblique_direction())
    return img


def label_array(shift: int = 0) -> np.ndarray:
    """Five non-overlapping boxes, one per output label (``shift`` moves them to make a new result)."""
    arr = np.zeros(SHAPE, np.uint8)
    for n, lab in enumerate(OUTPUT_LABELS):
        k0 = 2 + 4 * n + shift
        arr[k0 : k0 + 3, 4 + n : 12 + n, 5 : 9 + 3 * n] = lab.value
    return arr


def write_volume(path: Path, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    sitk.WriteImage(_image(rng.integers(-100, 200, SHAPE).astype(np.int16)), str(path))
    return path


def write_result(folder: Path, case: str = "case", shift: int = 0) -> dict:
    """A label map + report as the command line writes them; returns the outputs dict."""
    folder.mkdir(parents=True, exist_ok=True)
    labels = folder / f"{case}_labels.nii.gz"
    sitk.WriteImage(_image(label_array(shift)), str(labels))
    report = folder / f"{case}_report.json"
    report.write_text(json.dumps({"model": {"id": "brainbarriers-demo", "version": "0.1.0"}}), encoding="utf-8")
    return {"labels": str(labels), "report": str(report)}


def load_volume(scene, path: Path, name: str):
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(str(path))
    assert storage.ReadData(node)
    return node


def scene_with_study(tmp_path: Path, names=("CT", "T1", "T2")):
    """A scene with patient/study items and oblique volumes in the study."""
    scene = slicer.vtkMRMLScene()
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    patient = hierarchy.CreateSubjectItem(hierarchy.GetSceneItemID(), "Patient 1")
    study = hierarchy.CreateStudyItem(patient, "Study 1")
    volumes = []
    for n, name in enumerate(names):
        node = load_volume(scene, write_volume(tmp_path / f"{name}.nrrd", seed=n), name)
        hierarchy.CreateItem(study, node)
        volumes.append(node)
    return scene, hierarchy, study, volumes


def scene_snapshot(scene) -> list[tuple[str, str, int]]:
    """IDs, names and modification times of every node: equal snapshots = unchanged scene."""
    return [
        (scene.GetNthNode(i).GetID(), scene.GetNthNode(i).GetName(), scene.GetNthNode(i).GetMTime())
        for i in range(scene.GetNumberOfNodes())
    ]
