"""The module's Export to DICOM on slicer-core: real MRML nodes, an edited segment, real DICOM files."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from brainbarriers.structures import OUTPUT_LABELS
from dicom_helpers import DEMO_MODEL, sample_image, write_series

slicer = pytest.importorskip("slicer")


@pytest.fixture
def dicom_scene(tmp_path):
    """A CT series on disk, the same volume in a scene as Slicer's DICOM loader leaves it, and a result."""
    from pydicom.uid import generate_uid
    from SlicerBrainBarriersLib import scene_io, segments

    image = sample_image("ct", shrink=4)
    uids = write_series(image, tmp_path / "dicom", "CT", generate_uid(), generate_uid(), "CT head", 2)
    sitk.WriteImage(image, str(tmp_path / "ct.nrrd"))
    scene = slicer.vtkMRMLScene()
    volume = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "2: CT head")
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(str(tmp_path / "ct.nrrd"))
    assert storage.ReadData(volume)
    volume.SetAttribute("DICOM.instanceUIDs", " ".join(uids))

    labels = np.zeros(sitk.GetArrayViewFromImage(image).shape, np.uint8)
    k, j, i = labels.shape
    for n, lab in enumerate(OUTPUT_LABELS):
        labels[2 + 2 * n : 5 + 2 * n, j // 4 : j // 2 + n, i // 3 : i // 3 + 2 + n] = lab.value
    label_image = sitk.GetImageFromArray(labels)
    label_image.CopyInformation(image)
    sitk.WriteImage(label_image, str(tmp_path / "labels.nrrd"))
    summary = segments.import_labels(scene, scene_io.read_label_map(tmp_path / "labels.nrrd"), OUTPUT_LABELS, volume,
                                     model=f"{DEMO_MODEL}")
    return {"scene": scene, "volume": volume, "node": summary.node, "labels": labels, "uids": uids,
            "files": sorted((tmp_path / "dicom").iterdir()), "dicom": tmp_path / "dicom"}


def _erase_part_of_falx(node, labels: np.ndarray, tmp_path) -> np.ndarray:
    """Edit the falx segment as a user would (replace its voxels); returns the edited label array."""
    from SlicerBrainBarriersLib import scene_io, segments

    edited = labels.copy()
    falx = np.argwhere(edited == 2)
    edited[tuple(falx[: len(falx) // 2].T)] = 0
    image = sitk.GetImageFromArray(edited)
    reference = sitk.ReadImage(str(tmp_path / "labels.nrrd"))
    image.CopyInformation(reference)
    sitk.WriteImage(image, str(tmp_path / "edited.nrrd"))
    mask = segments.binary_segment_image(scene_io.read_label_map(tmp_path / "edited.nrrd"), 2)
    logic = slicer.vtkSlicerSegmentationsModuleLogic
    assert logic.SetBinaryLabelmapToSegment(mask, node, "BrainBarriers_falx", logic.MODE_REPLACE)
    return edited


def test_export_edited_segmentation(dicom_scene, tmp_path):
    import highdicom as hd
    from SlicerBrainBarriersLib.dicom_export import export_to_dicom

    edited = _erase_part_of_falx(dicom_scene["node"], dicom_scene["labels"], tmp_path)
    before = sorted(p.name for p in dicom_scene["dicom"].iterdir())
    written = export_to_dicom(dicom_scene["node"], dicom_scene["volume"], tmp_path / "export", case="edited",
                              files=dicom_scene["files"])
    assert sorted(written) == ["dicom_seg", "rtstruct"]
    assert sorted(p.name for p in dicom_scene["dicom"].iterdir()) == before

    seg = hd.seg.segread(written["dicom_seg"])
    pixels = seg.get_pixels_by_source_instance(dicom_scene["uids"])
    for d in seg.SegmentSequence:
        lab = next(lab for lab in OUTPUT_LABELS if lab.name == d.SegmentLabel)
        assert np.array_equal(pixels[..., d.SegmentNumber - 1].astype(bool), edited == lab.value), lab.name
        assert d.SegmentAlgorithmType == ("SEMIAUTOMATIC" if lab.key == "falx" else "AUTOMATIC"), lab.name
        algo = d.SegmentationAlgorithmIdentificationSequence[0]
        assert "brainbarriers-demo" in algo.AlgorithmName
    rt = pydicom.dcmread(written["rtstruct"])
    kinds = {r.ROIName: r.ROIGenerationAlgorithm for r in rt.StructureSetROISequence}
    assert kinds["Falx cerebri"] == "SEMIAUTOMATIC" and kinds["Cerebellum"] == "AUTOMATIC"
    if shutil.which("dciodvfy"):
        for path in written.values():
            out = subprocess.run(["dciodvfy", path], capture_output=True, text=True).stderr
            assert not [line for line in out.splitlines() if line.startswith("Error")], out


def test_volume_not_from_dicom_is_refused(dicom_scene, tmp_path):
    from SlicerBrainBarriersLib.dicom_export import DicomExportError, export_to_dicom

    dicom_scene["volume"].RemoveAttribute("DICOM.instanceUIDs")
    with pytest.raises(DicomExportError, match="not loaded from the DICOM database"):
        export_to_dicom(dicom_scene["node"], dicom_scene["volume"], tmp_path / "export")
    assert not (tmp_path / "export").exists()


def test_export_into_the_source_folder_is_refused(dicom_scene):
    from SlicerBrainBarriersLib.dicom_export import DicomExportError, export_to_dicom

    with pytest.raises(DicomExportError, match="holds the source images"):
        export_to_dicom(dicom_scene["node"], dicom_scene["volume"], dicom_scene["dicom"], files=dicom_scene["files"])


def test_requirements_match_the_dicom_extra(dicom_scene):
    import tomllib
    from dicom_helpers import REPO
    from SlicerBrainBarriersLib import dependencies
    from SlicerBrainBarriersLib.dicom_export import DICOM_REQUIREMENTS, from_dicom_database

    extra = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]["dicom"]
    assert set(DICOM_REQUIREMENTS) == {r for r in extra if not r.startswith("pynetdicom")}
    assert dependencies.check(DICOM_REQUIREMENTS).ok
    assert from_dicom_database(dicom_scene["volume"])
    dicom_scene["volume"].RemoveAttribute("DICOM.instanceUIDs")
    assert not from_dicom_database(dicom_scene["volume"])


def test_choose_export_picks_the_reference_and_the_result(dicom_scene):
    from SlicerBrainBarriersLib.dicom_export import choose_export

    scene, volume, node = dicom_scene["scene"], dicom_scene["volume"], dicom_scene["node"]
    other = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "T2 from a file")
    assert choose_export({"ct": volume}, node, None) == (node, volume, None)
    assert choose_export({"ct": None, "t1": volume, "t2": other}, node, None) == (node, volume, None)  # CT, else T1
    assert choose_export({"ct": volume}, None, (node, volume)) == (node, volume, None)  # the last run's result
    segmentation, reference, why_not = choose_export({"ct": volume}, None, None)
    assert segmentation is None and "Segment first" in why_not
    assert choose_export({"t2": other}, None, (node, volume))[2].startswith("Segment first")  # made from another volume
    _, reference, why_not = choose_export({"t2": other}, node, None)
    assert reference is other and "not loaded from the DICOM database" in why_not
    scene.RemoveNode(node)
    assert choose_export({"ct": volume}, None, (node, volume))[0] is None  # deleted since
