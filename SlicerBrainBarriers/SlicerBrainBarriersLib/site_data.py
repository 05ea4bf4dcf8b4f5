""""Save case for training": the current inputs and (edited) segmentation into a site data folder.

The files go through the core's ``brainbarriers.collect.collect_case`` (the same code as
``brainbarriers collect``); what the module knows better than a file is passed in: which segments
the user edited (from the live content hashes) and the model's SHA-256 when the bundle is installed.
Runs on slicer-core (no Qt).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import slicer
from brainbarriers.collect import CollectedCase, collect_case
from brainbarriers.structures import MODALITIES, OUTPUT_LABELS

from . import scene_io, segments


def edited_structures(segmentation_node) -> dict[str, bool | None]:
    """Output-label key -> edited (None for a segment the module did not generate) for the module's segments."""
    segmentation = segmentation_node.GetSegmentation()
    out: dict[str, bool | None] = {}
    for lab in OUTPUT_LABELS:
        segment = segmentation.GetSegment(lab.segment_id)
        if segment is None:
            continue
        out[lab.key] = None if segments.get_tag(segment, segments.HASH_TAG) is None else not segments.is_unedited(
            segmentation_node, lab.segment_id)
    return out


def model_of(segmentation_node) -> dict:
    """{id, version, sha256} of the model named in the segments' model tag (SHA-256 when installed here)."""
    segmentation = segmentation_node.GetSegmentation()
    tags = {segments.get_tag(segmentation.GetSegment(i), segments.MODEL_TAG) for i in segmentation.GetSegmentIDs()}
    tags.discard(None)
    tags.discard("")
    if len(tags) != 1:
        return {}
    model_id, _, version = tags.pop().partition("@")
    model = {"id": model_id, "version": version or None, "sha256": None}
    try:
        from brainbarriers.bundles import find_installed
        from brainbarriers.bundles.verify import sha256_file

        folder = find_installed(model_id, version or None)
        if folder is not None:
            model["sha256"] = sha256_file(Path(folder) / "manifest.json")
    except Exception:  # noqa: BLE001 - the SHA-256 is a courtesy; a broken cache must not stop the save
        pass
    return model


def save_case_for_training(segmentation_node, inputs: dict, out_dir: str | Path, case: str | None = None,
                           overwrite: bool = False) -> CollectedCase:
    """Write the case (inputs: modality -> volume node) and the segmentation into ``out_dir``.

    Raises the core's one-line errors (InputError, OutputError) and ValueError for volumes under a
    transform; the scene is not changed.
    """
    if segmentation_node is None:
        raise ValueError("select the segmentation to save")
    nodes = {m: inputs[m] for m in MODALITIES if inputs.get(m) is not None}
    if not nodes:
        raise ValueError("select at least one input volume (CT, T1 or T2)")
    workdir = Path(tempfile.mkdtemp(prefix="BrainBarriers-save-"))
    try:
        files = {m: scene_io.export_volume(node, workdir / f"{m}.nrrd") for m, node in nodes.items()}
        seg_path = workdir / "case.seg.nrrd"
        storage = slicer.vtkMRMLSegmentationStorageNode()
        storage.SetFileName(str(seg_path))
        if not storage.WriteData(segmentation_node):
            raise OSError(f"could not write the segmentation {segmentation_node.GetName()!r}")
        return collect_case(seg_path, files, out_dir, case, model_of(segmentation_node),
                            edited_structures(segmentation_node), overwrite,
                            source="3D Slicer module: Save case for training")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
