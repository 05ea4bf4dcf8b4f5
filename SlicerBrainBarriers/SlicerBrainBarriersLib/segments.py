"""Turn the pipeline's label map into segments, and keep the user's edits when running again.

Each generated segment carries a tag ``BrainBarriers.ContentHash``: a hash of its voxels taken
when it was written. On a later run a segment whose current voxels still hash to that value has
not been edited and may be replaced; any other segment with the same ID (edited, or made by the
user) is only touched when the ``ask`` callback says so. Runs on slicer-core (no Qt).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import slicer
import vtk
from brainbarriers.structures import OutputLabel
from vtk.util.numpy_support import vtk_to_numpy

HASH_TAG = "BrainBarriers.ContentHash"
MODEL_TAG = "BrainBarriers.Model"
LABELMAP = "Binary labelmap"
CLOSED_SURFACE = "Closed surface"

#: Answers of the ``ask`` callback for a segment the user has edited.
REPLACE, KEEP, ADD_COPY = "replace", "keep", "copy"

#: ask(segment_id, segment_name) -> REPLACE | KEEP | ADD_COPY
AskCallback = Callable[[str, str], str]


def keep_edited(segment_id: str, segment_name: str) -> str:
    """Default answer: never overwrite an edited segment."""
    return KEEP


@dataclass
class ImportSummary:
    """What an import did, segment ID by segment ID."""

    node: object
    added: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    copied: list[str] = field(default_factory=list)
    flagged: list[str] = field(default_factory=list)  # set by the logic from the run's quality flags
    uncertainty: object = None  # the uncertainty volume node, when the run wrote one

    def message(self) -> str:
        parts = [f"{len(v)} {k}" for k, v in self.__dict__.items() if isinstance(v, list) and v]
        return ", ".join(parts) if parts else "nothing changed"


def ensure_converter_rules(scene) -> None:
    """Register the segmentation converter rules (3D surfaces) when no Slicer application did.

    Inside Slicer the Segmentations module has done it; on slicer-core the rules only exist after
    ``vtkSlicerSegmentationsModuleLogic.SetMRMLScene``.
    """
    factory = slicer.vtkSegmentationConverterFactory.GetInstance()
    if not factory.GetConverterRules():
        logic = slicer.vtkSlicerSegmentationsModuleLogic()
        logic.SetMRMLScene(scene)
        ensure_converter_rules._logic = logic  # keep it alive: it owns the registration


def binary_segment_image(label_image, value: int):
    """A 0/1 ``vtkOrientedImageData`` of ``label_image == value`` with the same geometry."""
    threshold = vtk.vtkImageThreshold()
    threshold.SetInputData(label_image)
    threshold.ThresholdBetween(value, value)
    threshold.SetInValue(1)
    threshold.SetOutValue(0)
    threshold.SetOutputScalarTypeToUnsignedChar()
    threshold.Update()
    image = slicer.vtkOrientedImageData()
    image.ShallowCopy(threshold.GetOutput())
    image.CopyDirections(label_image)
    return image


def image_voxels_hash(image, value: int, reference_ijk_to_ras: vtk.vtkMatrix4x4 | None = None) -> str:
    """SHA-256 of the voxels of ``image`` equal to ``value``, independent of extent and layer.

    Voxel positions are expressed in the reference grid (IJK of ``reference_ijk_to_ras``, or the
    image's own grid), so the hash survives cropping, shared-layer merging and a save/reload.
    """
    digest = hashlib.sha256()
    if image is None or image.GetPointData().GetScalars() is None:
        return _hex(digest, np.zeros((0, 3), np.int64))
    extent = image.GetExtent()
    dims = [extent[2 * i + 1] - extent[2 * i] + 1 for i in range(3)]
    if min(dims) <= 0:
        return _hex(digest, np.zeros((0, 3), np.int64))
    scalars = vtk_to_numpy(image.GetPointData().GetScalars()).reshape(dims[2], dims[1], dims[0])
    k, j, i = np.nonzero(scalars == value)
    ijk = np.stack([i + extent[0], j + extent[2], k + extent[4], np.ones_like(i)]).astype(np.float64)
    to_ras = vtk.vtkMatrix4x4()
    image.GetImageToWorldMatrix(to_ras)
    matrix = _numpy(to_ras)
    if reference_ijk_to_ras is not None:
        matrix = np.linalg.inv(_numpy(reference_ijk_to_ras)) @ matrix
    positions = np.rint(matrix @ ijk)[:3].T.astype(np.int64)
    positions = positions[np.lexsort(positions.T[::-1])]
    return _hex(digest, positions)


def segment_hash(segmentation_node, segment_id: str) -> str:
    """Content hash of one segment as it is now in the node."""
    segmentation = segmentation_node.GetSegmentation()
    segment = segmentation.GetSegment(segment_id)
    image = segment.GetRepresentation(LABELMAP) if segment is not None else None
    return image_voxels_hash(image, segment.GetLabelValue() if segment else 1, reference_matrix(segmentation_node))


def reference_matrix(segmentation_node) -> vtk.vtkMatrix4x4 | None:
    """IJK-to-RAS of the segmentation's reference geometry (None when it has none)."""
    name = slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName()
    text = segmentation_node.GetSegmentation().GetConversionParameter(name)
    if not text:
        return None
    geometry = slicer.vtkOrientedImageData()
    if not slicer.vtkSegmentationConverter.DeserializeImageGeometry(text, geometry, False):
        return None
    matrix = vtk.vtkMatrix4x4()
    geometry.GetImageToWorldMatrix(matrix)
    return matrix


def get_tag(segment, name: str) -> str | None:
    if not segment.HasTag(name):
        return None
    value = vtk.reference("")
    segment.GetTag(name, value)
    return str(value)


def is_unedited(segmentation_node, segment_id: str) -> bool:
    """True when the segment was generated by this module and nobody has changed its voxels."""
    segment = segmentation_node.GetSegmentation().GetSegment(segment_id)
    stored = get_tag(segment, HASH_TAG) if segment is not None else None
    return bool(stored) and stored == segment_hash(segmentation_node, segment_id)


def make_segment(label: OutputLabel, image, model: str = ""):
    """A ``vtkSegment`` for one output label: name, colour, terminology from the structure table."""
    segment = slicer.vtkSegment()
    segment.SetName(label.name)
    segment.SetColor(*label.color_float)
    segment.SetTerminology(label.terminology())
    segment.SetNameAutoGenerated(False)
    segment.SetColorAutoGenerated(False)
    segment.AddRepresentation(LABELMAP, image)
    if model:
        segment.SetTag(MODEL_TAG, model)
    return segment


def import_labels(
    scene,
    label_image,
    labels: Iterable[OutputLabel],
    reference_node,
    target_node=None,
    ask: AskCallback | None = None,
    model: str = "",
    node_name: str = "Brain barriers",
) -> ImportSummary:
    """Put the label map's structures into a segmentation node.

    Args:
        scene: the MRML scene.
        label_image: ``vtkOrientedImageData`` label map (values = OutputLabel.value).
        labels: output labels to import (others in the map are ignored).
        reference_node: volume whose geometry becomes the new node's reference geometry and whose
            study receives the new node.
        target_node: existing segmentation to update, or None to create a new node.
        ask: called for each segment of ``target_node`` that has the same ID as a new one but was
            edited (or not generated here); returns REPLACE, KEEP or ADD_COPY. None = keep.
        model: model identifier stored in a segment tag.
        node_name: name of a new node.
    """
    ask = ask or keep_edited
    ensure_converter_rules(scene)
    # Build every segment before the scene is touched: a failure here changes nothing.
    new_segments = [(lab, make_segment(lab, binary_segment_image(label_image, lab.value), model)) for lab in labels]

    created = target_node is None
    node = slicer.vtkMRMLSegmentationNode() if created else target_node
    summary = ImportSummary(node=node)
    segmentation = node.GetSegmentation()
    if created:
        node.SetName(scene.GenerateUniqueName(node_name))
        if reference_node is not None:
            node.SetReferenceImageGeometryParameterFromVolumeNode(reference_node)
    was_modifying = node.StartModify()
    try:
        for lab, segment in new_segments:
            segment_id = lab.segment_id
            existing = segmentation.GetSegment(segment_id)
            if existing is None:
                segmentation.AddSegment(segment, segment_id)
                summary.added.append(segment_id)
                continue
            decision = REPLACE if is_unedited(node, segment_id) else ask(segment_id, existing.GetName())
            if decision == REPLACE:
                _replace_segment(segmentation, segment_id, segment)
                summary.replaced.append(segment_id)
            elif decision == ADD_COPY:
                copy_id = _free_id(segmentation, segment_id)
                segment.SetName(f"{lab.name} (new)")
                segmentation.AddSegment(segment, copy_id)
                summary.copied.append(copy_id)
            else:
                summary.kept.append(segment_id)
        segmentation.CollapseBinaryLabelmaps(False)
    finally:
        node.EndModify(was_modifying)
    if created:
        scene.AddNode(node)
        node.CreateDefaultDisplayNodes()
        place_in_study(scene, node, reference_node)
    for segment_id in summary.added + summary.replaced + summary.copied:
        segmentation.GetSegment(segment_id).SetTag(HASH_TAG, segment_hash(node, segment_id))
    show_in_3d(node)
    return summary


def show_in_3d(segmentation_node) -> None:
    """Make closed surfaces and show them in 3D views."""
    segmentation_node.CreateClosedSurfaceRepresentation()
    display = segmentation_node.GetDisplayNode()
    if display is not None:
        display.SetPreferredDisplayRepresentationName3D(CLOSED_SURFACE)
        display.SetVisibility3D(True)


def place_in_study(scene, node, reference_node) -> None:
    """Put ``node`` beside ``reference_node`` in the subject hierarchy (same study/folder)."""
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    if hierarchy is None or reference_node is None:
        return
    reference_item = hierarchy.GetItemByDataNode(reference_node)
    if not reference_item:
        return  # the reference volume is not in the hierarchy: leave the node at the top
    parent = hierarchy.GetItemParent(reference_item)
    item = hierarchy.GetItemByDataNode(node)
    if item:
        hierarchy.SetItemParent(item, parent)
    else:
        hierarchy.CreateItem(parent, node)


def _replace_segment(segmentation, segment_id: str, segment) -> None:
    """New voxels, same place in the list; the user's name, colour and terminology stay."""
    old = segmentation.GetSegment(segment_id)
    segment.SetName(old.GetName())
    segment.SetColor(*old.GetColor())
    segment.SetTerminology(old.GetTerminology())
    ids = list(segmentation.GetSegmentIDs())
    following = ids[ids.index(segment_id) + 1] if ids.index(segment_id) + 1 < len(ids) else ""
    segmentation.RemoveSegment(segment_id)
    segmentation.AddSegment(segment, segment_id, following)  # same place in the list


def _free_id(segmentation, base: str) -> str:
    n = 2
    while segmentation.GetSegment(f"{base}_{n}") is not None:
        n += 1
    return f"{base}_{n}"


def _numpy(matrix: vtk.vtkMatrix4x4) -> np.ndarray:
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def _hex(digest, positions: np.ndarray) -> str:
    digest.update(np.ascontiguousarray(positions, dtype="<i8").tobytes())
    return digest.hexdigest()
