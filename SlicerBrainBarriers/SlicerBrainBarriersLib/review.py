"""Review in Slicer: quality flags as segment status, the next flagged segment, the uncertainty volume.

Slicer's own convention is used for the status: the segment tag ``Segmentation.Status`` with the
machine-readable value "flagged" (``vtkSlicerSegmentationsModuleLogic.SetSegmentStatus(segment,
Flagged)``; the Segment Editor shows and filters by it). The reasons go in a tag of this module,
``BrainBarriers.QualityFlags`` (JSON list of {kind, reason}), for the log, tooltips and tables.
Runs on slicer-core (no Qt).
"""

from __future__ import annotations

import json

import slicer
from brainbarriers.structures import output_label

from .segments import get_tag

FLAGS_TAG = "BrainBarriers.QualityFlags"


def _logic():
    return slicer.vtkSlicerSegmentationsModuleLogic


def report_flags(report: dict) -> dict[str, list[dict]]:
    """Output-label key -> its flags ({kind, reason}) from a run's report JSON."""
    return {key: list(s.get("flags") or []) for key, s in (report.get("structures") or {}).items()}


def apply_flags(segmentation_node, flags: dict[str, list[dict]], segment_ids: dict[str, str] | None = None) -> list[str]:
    """Mark flagged segments "flagged" and store their reasons; clear this module's earlier flags elsewhere.

    Args:
        segmentation_node: the segmentation holding the run's segments.
        flags: output-label key -> flags ({kind, reason}) from the report.
        segment_ids: output-label key -> segment ID to mark (default: each label's standard ID); give
            only the segments this run produced, so that a segment the user kept is not marked.
    Returns the flagged segment IDs.
    """
    logic = _logic()
    segmentation = segmentation_node.GetSegmentation()
    ids = segment_ids if segment_ids is not None else {key: output_label(key).segment_id for key in flags}
    flagged = []
    for key, segment_id in ids.items():
        segment = segmentation.GetSegment(segment_id)
        if segment is None:
            continue
        items = [{"kind": f["kind"], "reason": f["reason"]} for f in flags.get(key, [])]
        if items:
            segment.SetTag(FLAGS_TAG, json.dumps(items))
            logic.SetSegmentStatus(segment, logic.Flagged)
            flagged.append(segment_id)
        elif get_tag(segment, FLAGS_TAG) is not None:  # flagged by an earlier run, not by this one
            segment.RemoveTag(FLAGS_TAG)
            if logic.GetSegmentStatus(segment) == logic.Flagged:
                logic.SetSegmentStatus(segment, logic.NotStarted)
    return flagged


def segment_flags(segment) -> list[dict]:
    """The stored flags of one segment ([] when none)."""
    text = get_tag(segment, FLAGS_TAG)
    try:
        return list(json.loads(text)) if text else []
    except ValueError:
        return []


def flag_tooltip(segment) -> str:
    """One line per reason (empty when the segment is not flagged)."""
    return "\n".join(f["reason"] for f in segment_flags(segment))


def flag_messages(segmentation_node, segment_ids: list[str] | None = None) -> list[str]:
    """Log lines "<segment name>: <reason>" for the given flagged segments (default: every flagged one)."""
    segmentation = segmentation_node.GetSegmentation()
    ids = segment_ids if segment_ids is not None else [s for s, _ in flagged_segments(segmentation_node)]
    return [f"{segmentation.GetSegment(s).GetName()}: {f['reason']}" for s in ids
            for f in segment_flags(segmentation.GetSegment(s))]


def flagged_segments(segmentation_node) -> list[tuple[str, list[dict]]]:
    """(segment ID, flags) of every segment whose status is "flagged", in the segment list's order.

    A segment the user has set back to another status (reviewed) is no longer listed.
    """
    logic = _logic()
    segmentation = segmentation_node.GetSegmentation()
    out = []
    for segment_id in segmentation.GetSegmentIDs():
        segment = segmentation.GetSegment(segment_id)
        if logic.GetSegmentStatus(segment) == logic.Flagged:
            out.append((segment_id, segment_flags(segment)))
    return out


def next_flagged(segmentation_node, current: str | None = None) -> tuple[str, tuple[float, float, float] | None] | None:
    """The flagged segment after ``current`` (wrapping round) and its centre in RAS; None when none is flagged.

    The centre is None for an empty segment (a structure flagged as missing has no place to show).
    """
    ids = [segment_id for segment_id, _ in flagged_segments(segmentation_node)]
    if not ids:
        return None
    order = list(segmentation_node.GetSegmentation().GetSegmentIDs())
    after = order.index(current) if current in order else -1
    following = [s for s in ids if order.index(s) > after]
    segment_id = (following or ids)[0]
    centre = segment_centre(segmentation_node, segment_id)
    return segment_id, centre


def segment_centre(segmentation_node, segment_id: str) -> tuple[float, float, float] | None:
    """The segment's centre in RAS; None when it is empty."""
    segment = segmentation_node.GetSegmentation().GetSegment(segment_id)
    if segment is None or _is_empty(segmentation_node, segment_id):
        return None
    centre = segmentation_node.GetSegmentCenterRAS(segment_id)
    return tuple(float(c) for c in centre) if centre is not None else None


def _is_empty(segmentation_node, segment_id: str) -> bool:
    # asked first: GetSegmentCenterRAS warns in the log for every empty segment
    segmentation = segmentation_node.GetSegmentation()
    labelmap = segmentation.GetSegment(segment_id).GetRepresentation(segmentation.GetSourceRepresentationName())
    if labelmap is None:
        return True
    if hasattr(labelmap, "IsEmpty"):
        return bool(labelmap.IsEmpty())
    return labelmap.GetNumberOfPoints() == 0


def jump_to(scene, ras: tuple[float, float, float]) -> None:
    """Centre every slice view of the scene on a RAS point."""
    slicer.vtkMRMLSliceNode.JumpAllSlices(scene, *ras, slicer.vtkMRMLSliceNode.CenteredJumpSlice)


def load_uncertainty(scene, path: str, name: str = "Brain barriers uncertainty"):
    """The run's uncertainty volume (entropy, bits 0..1) as a scalar volume node, display window 0..1."""
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", scene.GenerateUniqueName(name))
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(str(path))
    if not storage.ReadData(node):
        scene.RemoveNode(node)
        raise OSError(f"cannot read the uncertainty volume {path}")
    node.CreateDefaultDisplayNodes()
    display = node.GetDisplayNode()
    if display is not None:
        display.AutoWindowLevelOff()
        display.SetWindowLevelMinMax(0.0, 1.0)
    return node


def _composite_nodes(scene) -> list:
    name = "vtkMRMLSliceCompositeNode"
    return [scene.GetNthNodeByClass(i, name) for i in range(scene.GetNumberOfNodesByClass(name))]


def show_overlay(scene, volume, opacity: float = 0.4) -> None:
    """``volume`` as the foreground layer of every slice view, at ``opacity`` (as
    ``slicer.util.setSliceViewerLayers(foreground=..., foregroundOpacity=...)`` does, on MRML alone)."""
    for composite in _composite_nodes(scene):
        composite.SetForegroundVolumeID(volume.GetID())
        composite.SetForegroundOpacity(opacity)


def hide_overlay(scene, volume) -> None:
    """Take ``volume`` out of the foreground of the slice views that show it; other foregrounds stay."""
    for composite in _composite_nodes(scene):
        if volume is not None and composite.GetForegroundVolumeID() == volume.GetID():
            composite.SetForegroundVolumeID(None)
