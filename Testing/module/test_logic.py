"""The module logic with the real core command line in a real child process (tiny random bundle):
import into the scene, re-run over an edit, cancel and failure leave the scene unchanged."""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import numpy as np
import pytest
import slicer
from brainbarriers.structures import output_label
from module_helpers import scene_snapshot, scene_with_study
from SlicerBrainBarriersLib import scene_io, segments
from SlicerBrainBarriersLib.logic import (
    BrainBarriersLogic,
    PipelineFailed,
    SegmentParameters,
    guess_inputs,
)
from vtk.util.numpy_support import vtk_to_numpy

TINY_BUNDLE = Path(__file__).resolve().parents[1] / "pipeline" / "tiny_bundle.py"
STRUCTURES = ["cerebellum", "ventricles"]  # two labels keep the child process short


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory):
    spec = importlib.util.spec_from_file_location("tiny_bundle_for_module_tests", TINY_BUNDLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.write_tiny_bundle(tmp_path_factory.mktemp("bundle") / "tiny", structures=[
        "cerebellum", "ventricles"])


def test_guess_inputs_only_when_unambiguous():
    assert guess_inputs(["sample_ct", "sample_t1", "sample_t2"]) == {"ct": "sample_ct", "t1": "sample_t1", "t2": "sample_t2"}
    assert guess_inputs(["CT head", "T1w MPR", "Patient T2"]) == {"ct": "CT head", "t1": "T1w MPR", "t2": "Patient T2"}
    assert guess_inputs(["t1 pre", "t1 post", "vol"]) == {"ct": None, "t1": None, "t2": None}
    assert guess_inputs(["t12_scan", "doctor", "act"]) == {"ct": None, "t1": None, "t2": None}


def test_guess_input_nodes_from_the_scene(tmp_path):
    scene, _, _, (ct, t1, t2) = scene_with_study(tmp_path, names=("sample_ct", "sample_t1", "other"))
    assert BrainBarriersLogic(scene).guess_input_nodes() == {"ct": ct, "t1": t1, "t2": None}


def test_command_line(tmp_path):
    logic = BrainBarriersLogic(slicer.vtkMRMLScene(), python="py")
    params = SegmentParameters(model="m@1", device="cpu", structures=["falx"], quality="full")
    cmd = logic.command(params, {"t1": Path("a.nrrd")}, Path("out"))
    assert cmd[:4] == ["py", "-m", "brainbarriers", "segment"]
    assert cmd[cmd.index("--t1") + 1] == "a.nrrd" and "--ct" not in cmd
    assert cmd[cmd.index("--structures") + 1 :] == ["falx"]
    for flag, value in (("--model", "m@1"), ("--device", "cpu"), ("--quality", "full"), ("--progress", "json")):
        assert cmd[cmd.index(flag) + 1] == value


def test_no_input_is_a_clear_error(tmp_path):
    scene = slicer.vtkMRMLScene()
    with pytest.raises(ValueError, match="at least one input"):
        BrainBarriersLogic(scene).start(SegmentParameters())
    assert scene.GetNumberOfNodes() == 0


def test_transformed_volume_is_refused(tmp_path):
    scene, _, _, (ct, _, _) = scene_with_study(tmp_path)
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    ct.SetAndObserveTransformNodeID(transform.GetID())
    with pytest.raises(ValueError, match="under a transform"):
        scene_io.export_volume(ct, tmp_path / "x.nrrd")


def test_segment_with_real_cli_then_rerun_keeps_edit(tmp_path, tiny_bundle):
    scene, hierarchy, study, (ct, t1, t2) = scene_with_study(tmp_path)
    logic = BrainBarriersLogic(scene)
    events = []
    params = SegmentParameters(inputs={"ct": ct, "t1": t1, "t2": t2}, model=str(tiny_bundle), device="cpu", structures=STRUCTURES)
    summary = logic.segment(params, on_progress=events.append, timeout=240)
    node = summary.node
    stages = [e.stage for e in events if e.stage != "log"]
    assert stages[0] == "load" and stages[-1] == "done" and "coarse" in stages
    ids = [output_label(k).segment_id for k in STRUCTURES]
    assert list(node.GetSegmentation().GetSegmentIDs()) == ids
    assert node.GetSegmentation().GetSegment(ids[0]).GetName() == "Cerebellum"
    assert hierarchy.GetItemParent(hierarchy.GetItemByDataNode(node)) == study
    ref = segments.reference_matrix(node)
    expected = scene_io.ijk_to_ras(ct)
    assert np.allclose([[ref.GetElement(r, c) for c in range(4)] for r in range(4)],
                       [[expected.GetElement(r, c) for c in range(4)] for r in range(4)], atol=1e-5)
    assert segments.get_tag(node.GetSegmentation().GetSegment(ids[0]), segments.MODEL_TAG) == "tiny-test@0.0.1"

    # the user paints one voxel into the cerebellum
    cerebellum = ids[0]
    image = node.GetSegmentation().GetSegment(cerebellum).GetRepresentation(segments.LABELMAP)
    value = node.GetSegmentation().GetSegment(cerebellum).GetLabelValue()
    arr = vtk_to_numpy(image.GetPointData().GetScalars())
    arr[np.flatnonzero(arr == 0)[0]] = value
    image.Modified()
    edited_hash = segments.segment_hash(node, cerebellum)
    nodes = scene.GetNumberOfNodes()

    asked = []
    params.target = node
    again = logic.segment(params, ask=lambda i, n: asked.append(i) or segments.KEEP, timeout=240)
    assert again.node is node and scene.GetNumberOfNodes() == nodes
    assert asked == [cerebellum] and again.kept == [cerebellum] and again.replaced == [ids[1]]
    assert segments.segment_hash(node, cerebellum) == edited_hash


def test_cancel_leaves_scene_unchanged(tmp_path, tiny_bundle):
    scene, _, _, (ct, t1, t2) = scene_with_study(tmp_path)
    target = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "existing")
    before = scene_snapshot(scene)
    logic = BrainBarriersLogic(scene)
    run = logic.start(SegmentParameters(inputs={"ct": ct, "t1": t1, "t2": t2}, model=str(tiny_bundle), device="cpu", target=target))
    assert run.workdir.is_dir()
    deadline = time.monotonic() + 120
    log = []
    while run.process.last_progress is None and run.state == "running" and time.monotonic() < deadline:
        log += run.process.poll()
        time.sleep(0.05)
    try:
        # really mid-run
        assert run.state == "running" and run.process.last_progress is not None, (run.state, log)
    finally:
        logic.cancel(run)
    assert run.state == "cancelled"
    assert run.process.returncode is not None
    assert not run.workdir.exists()
    assert scene_snapshot(scene) == before
    assert target.GetSegmentation().GetNumberOfSegments() == 0


def test_pipeline_failure_is_one_line_and_scene_unchanged(tmp_path):
    scene, _, _, (ct, _, _) = scene_with_study(tmp_path)
    before = scene_snapshot(scene)
    logic = BrainBarriersLogic(scene)
    with pytest.raises(PipelineFailed) as info:
        logic.segment(SegmentParameters(inputs={"ct": ct}, model="no-such-model"), timeout=120)
    message = str(info.value)
    assert "no-such-model" in message and "\n" not in message
    assert scene_snapshot(scene) == before


def test_listing_volumes_keeps_no_reference(tmp_path):
    """GetNodesByClass hands over a collection the caller must release; listing runs on every node
    added, so a leak would keep every deleted volume alive."""
    scene, _, _, (ct, _, _) = scene_with_study(tmp_path)
    logic = BrainBarriersLogic(scene)
    before = ct.GetReferenceCount()
    for _ in range(5):
        assert ct in logic.volume_nodes()
    assert ct.GetReferenceCount() == before
