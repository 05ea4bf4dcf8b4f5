"""Quality flags as Slicer's segment status on slicer-core, the next-flagged walk and the uncertainty volume."""

from __future__ import annotations

import json

import numpy as np
import SimpleITK as sitk
import slicer
from brainbarriers.structures import OUTPUT_LABELS, output_label
from module_helpers import label_array, scene_with_study, write_result
from SlicerBrainBarriersLib import review, scene_io, segments
from SlicerBrainBarriersLib.logic import BrainBarriersLogic

Logic = slicer.vtkSlicerSegmentationsModuleLogic
FALX_REASON = "Falx cerebri volume 9.9 ml is larger than any seen in training (1.0-2.0 ml over 3 cases)"


def _report(flags: dict[str, list[dict]]) -> dict:
    return {"model": {"id": "m", "version": "1.0.0"},
            "structures": {lab.key: {"flags": flags.get(lab.key, [])} for lab in OUTPUT_LABELS}}


def _imported(tmp_path):
    scene, _, _, (ct, _, _) = scene_with_study(tmp_path)
    outputs = write_result(tmp_path / "out")
    summary = segments.import_labels(scene, scene_io.read_label_map(outputs["labels"]), OUTPUT_LABELS, ct)
    return scene, ct, summary


def test_flags_become_the_segment_status(tmp_path):
    scene, _, summary = _imported(tmp_path)
    node = summary.node
    flags = {"falx": [{"kind": "volume", "reason": FALX_REASON}],
             "ventricles": [{"kind": "components", "reason": "Ventricles is in 3 separate pieces"},
                            {"kind": "confidence", "reason": "Ventricles: low confidence"}]}
    flagged = review.apply_flags(node, review.report_flags(_report(flags)))
    assert flagged == [output_label("falx").segment_id, output_label("ventricles").segment_id]
    segmentation = node.GetSegmentation()
    for lab in OUTPUT_LABELS:
        segment = segmentation.GetSegment(lab.segment_id)
        status = Logic.GetSegmentStatus(segment)
        assert (status == Logic.Flagged) == (lab.key in flags), lab.key
    falx = segmentation.GetSegment(output_label("falx").segment_id)
    # Slicer's own tag and value, as the Segment Editor reads them
    assert segments.get_tag(falx, "Segmentation.Status") == "flagged"
    assert review.flag_tooltip(falx) == FALX_REASON
    assert [f["kind"] for f in review.segment_flags(segmentation.GetSegment(output_label("ventricles").segment_id))] == [
        "components", "confidence"]
    assert [s for s, _ in review.flagged_segments(node)] == flagged
    assert review.flag_messages(node) == [f"Falx cerebri: {FALX_REASON}", "Ventricles: Ventricles is in 3 separate pieces",
                                          "Ventricles: Ventricles: low confidence"]

    # the status and reasons survive a save and reload of the .seg.nrrd
    path = tmp_path / "saved.seg.nrrd"
    storage = node.CreateDefaultStorageNode()
    storage.SetFileName(str(path))
    assert storage.WriteData(node)
    reloaded = slicer.vtkMRMLSegmentationNode()
    scene.AddNode(reloaded)
    reader = slicer.vtkMRMLSegmentationStorageNode()
    reader.SetFileName(str(path))
    assert reader.ReadData(reloaded)
    assert [s for s, _ in review.flagged_segments(reloaded)] == flagged
    assert review.flag_tooltip(reloaded.GetSegmentation().GetSegment(flagged[0])) == FALX_REASON

    # a later run without flags for the falx clears this module's flag, not a status the user set
    Logic.SetSegmentStatus(segmentation.GetSegment(output_label("cerebellum").segment_id), Logic.Flagged)
    review.apply_flags(node, review.report_flags(_report({"ventricles": flags["ventricles"]})))
    assert Logic.GetSegmentStatus(falx) == Logic.NotStarted and review.segment_flags(falx) == []
    assert [s for s, _ in review.flagged_segments(node)] == [output_label("cerebellum").segment_id,
                                                            output_label("ventricles").segment_id]


def test_next_flagged_walks_round_and_jumps_the_views(tmp_path):
    scene, _, summary = _imported(tmp_path)
    node = summary.node
    assert review.next_flagged(node) is None
    review.apply_flags(node, {"falx": [{"kind": "missing", "reason": "x"}], "tentorium": [{"kind": "border", "reason": "y"}]})
    falx, tentorium = output_label("falx").segment_id, output_label("tentorium").segment_id
    first = review.next_flagged(node)
    assert first[0] == falx
    assert review.next_flagged(node, falx)[0] == tentorium
    assert review.next_flagged(node, tentorium)[0] == falx  # wraps round
    # the centre is the segment's centre in RAS (checked against the label file through SimpleITK)
    labels = sitk.ReadImage(str(tmp_path / "out" / "case_labels.nii.gz"))
    kji = np.argwhere(label_array() == output_label("falx").value)
    lps = np.mean([labels.TransformIndexToPhysicalPoint([int(i), int(j), int(k)]) for k, j, i in kji], axis=0)
    assert np.allclose(first[1], (-lps[0], -lps[1], lps[2]), atol=2.0)

    red = scene.AddNewNodeByClass("vtkMRMLSliceNode")
    red.SetLayoutName("Red")
    red.SetOrientationToAxial()
    review.jump_to(scene, first[1])
    offset = red.GetSliceToRAS().GetElement(2, 3)
    assert abs(offset - first[1][2]) < 1e-3


def test_logic_marks_only_the_segments_this_run_wrote(tmp_path):
    scene, ct, summary = _imported(tmp_path)
    node = summary.node
    summary = segments.ImportSummary(node=node, replaced=[output_label("falx").segment_id],
                                     kept=[output_label("ventricles").segment_id])
    flags = {"falx": [{"kind": "volume", "reason": FALX_REASON}], "ventricles": [{"kind": "missing", "reason": "gone"}]}
    BrainBarriersLogic(scene).mark_flags(summary, _report(flags))
    assert summary.flagged == [output_label("falx").segment_id]  # the kept (edited) ventricles are the user's
    assert "1 flagged" in summary.message()


def test_uncertainty_volume_node(tmp_path):
    scene = slicer.vtkMRMLScene()
    img = sitk.GetImageFromArray(np.linspace(0, 1, 6 * 7 * 8, dtype=np.float32).reshape(6, 7, 8))
    img.SetSpacing((1.5, 1.0, 2.0))
    path = tmp_path / "u.nii.gz"
    sitk.WriteImage(img, str(path))
    node = review.load_uncertainty(scene, str(path))
    assert node.GetImageData().GetDimensions() == (8, 7, 6)
    assert node.GetSpacing() == (1.5, 1.0, 2.0)
    display = node.GetDisplayNode()
    assert display.GetWindow() == 1.0 and display.GetLevel() == 0.5


def test_report_flags_reads_the_cli_report():
    report = json.loads(json.dumps(_report({"falx": [{"kind": "volume", "reason": FALX_REASON}]})))
    assert review.report_flags(report)["falx"] == [{"kind": "volume", "reason": FALX_REASON}]
    assert review.report_flags({}) == {}


def test_real_run_sets_flags_and_loads_the_uncertainty(tmp_path):
    """The real command line in a child process (tiny random bundle whose manifest claims training volumes
    no result can match): every produced segment comes back flagged, with reasons, and the uncertainty
    volume lies on the reference volume's grid."""
    import importlib.util
    from pathlib import Path

    from brainbarriers.bundles import load_bundle, write_bundle
    from safetensors.torch import load_file
    from SlicerBrainBarriersLib.logic import SegmentParameters

    spec = importlib.util.spec_from_file_location("tiny_bundle_for_review", Path(__file__).parents[1] / "pipeline" / "tiny_bundle.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    source = load_bundle(module.write_tiny_bundle(tmp_path / "tiny", structures=["cerebellum", "ventricles"]))
    manifest = {k: v for k, v in source.manifest.items() if k != "files"}
    manifest["volume_stats"] = {lab.key: {"cases": 3, "min_ml": 1e-6, "max_ml": 2e-6} for lab in OUTPUT_LABELS}
    states = {f["path"]: load_file(str(source.path / f["path"])) for f in source.manifest["files"]
              if f["path"].endswith(".safetensors")}
    bundle = write_bundle(tmp_path / "flagged", manifest, states)

    scene, _, _, (ct, t1, t2) = scene_with_study(tmp_path)
    params = SegmentParameters(inputs={"ct": ct, "t1": t1, "t2": t2}, model=str(bundle), device="cpu",
                               structures=["cerebellum", "ventricles"], uncertainty=True)
    summary = BrainBarriersLogic(scene).segment(params, timeout=240)
    produced = [output_label(k).segment_id for k in ("cerebellum", "ventricles")]
    assert summary.flagged == produced
    for segment_id in produced:
        segment = summary.node.GetSegmentation().GetSegment(segment_id)
        assert Logic.GetSegmentStatus(segment) == Logic.Flagged
        assert {f["kind"] for f in review.segment_flags(segment)} & {"volume", "missing"}
    u = summary.uncertainty
    assert u is not None and u.GetScene() is scene
    assert u.GetImageData().GetDimensions() == ct.GetImageData().GetDimensions()
    assert np.allclose(scene_io.ijk_to_ras(u).GetElement(0, 3), scene_io.ijk_to_ras(ct).GetElement(0, 3), atol=1e-3)


def test_overlay_and_centres_on_the_slice_views(tmp_path):
    """The uncertainty overlay as every view's foreground (and only this volume taken away again);
    an empty (missing) flagged segment has no centre to jump to."""
    scene, ct, summary = _imported(tmp_path)
    node = summary.node
    composites = [scene.AddNewNodeByClass("vtkMRMLSliceCompositeNode") for _ in range(3)]
    other = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode")
    composites[2].SetForegroundVolumeID(other.GetID())
    u = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode")
    review.show_overlay(scene, u, 0.4)
    assert [(c.GetForegroundVolumeID(), c.GetForegroundOpacity()) for c in composites] == [(u.GetID(), 0.4)] * 3
    composites[2].SetForegroundVolumeID(other.GetID())  # the user put another volume there meanwhile
    review.hide_overlay(scene, u)
    assert [c.GetForegroundVolumeID() for c in composites] == [None, None, other.GetID()]

    falx = output_label("falx").segment_id
    assert review.segment_centre(node, falx) is not None
    empty = node.GetSegmentation().AddEmptySegment("empty")
    Logic.SetSegmentStatus(node.GetSegmentation().GetSegment(empty), Logic.Flagged)
    assert review.segment_centre(node, empty) is None
    assert review.next_flagged(node) == (empty, None)
