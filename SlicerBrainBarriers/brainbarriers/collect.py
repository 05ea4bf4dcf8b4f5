"""Corrected cases into a site data folder in the training (ABCs) layout, with provenance.

``collect_case`` reads a (possibly edited) Slicer segmentation (.seg.nrrd) and the case's input
images, maps the segments to the ABCs task-1 label values through the structure table, puts every
image and the label map on the reference input's grid (CT, else T1, else T2; by world coordinates,
as the pipeline does) and writes::

    SITE_DATA/<case>/<case>_ct.mha, <case>_t1.mha, <case>_t2.mha, <case>_labelmap_task1.mha
    SITE_DATA/<case>/<case>_provenance.json

The provenance names the model that made the first contours (id, version, SHA-256), which
segments the reviewer edited (a segment's voxels no longer hash to its ``BrainBarriers.ContentHash``
tag, the same hash the Slicer module stores on import), the source files with their SHA-256, and
the date. The case folder is written under a temporary name and renamed: nothing half-written is
left, and an existing case is only replaced when asked.

Used by ``brainbarriers collect`` and by the module's "Save case for training".
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from . import __version__, geometry
from .errors import InputError, OutputError
from .io import read_image
from .structures import MODALITIES, OUTPUT_LABELS, OutputLabel

HASH_TAG = "BrainBarriers.ContentHash"
MODEL_TAG = "BrainBarriers.Model"
PROVENANCE = "provenance.json"


@dataclass
class Segment:
    """One segment of a .seg.nrrd: its metadata and mask on the file's grid (numpy K, J, I)."""

    id: str
    name: str
    label_value: int
    layer: int
    tags: dict[str, str]
    mask: np.ndarray


@dataclass
class SegmentationFile:
    segments: list[Segment]
    grid: sitk.Image  # geometry of the file's voxels
    extent_offset: tuple[int, int, int] = (0, 0, 0)  # index of the first voxel in the reference geometry


@dataclass
class CollectedCase:
    folder: Path
    provenance: dict = field(default_factory=dict)


def _parse_tags(text: str) -> dict[str, str]:
    tags = {}
    for item in text.split("|"):
        if ":" in item:
            key, value = item.split(":", 1)
            tags[key] = value
    return tags


def read_segmentation(path: str | Path) -> SegmentationFile:
    """Read a Slicer .seg.nrrd (one or several layers) into masks per segment (InputError if unusable)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise InputError(f"segmentation {path}: file not found")
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        lines = str(exc).strip().splitlines()
        raise InputError(f"segmentation {path}: unreadable ({lines[-1] if lines else 'error'})") from None
    keys = set(image.GetMetaDataKeys())
    ids = sorted(int(m[1]) for k in keys if (m := re.fullmatch(r"Segment(\d+)_ID", k)))
    if not ids:
        raise InputError(f"segmentation {path}: not a Slicer segmentation (no Segment0_ID in the header)")
    if image.GetDimension() != 3:
        raise InputError(f"segmentation {path}: expected a 3D segmentation, got {image.GetDimension()}D")
    layers = sitk.GetArrayFromImage(image)  # (K, J, I) or (K, J, I, layers)
    if layers.ndim == 3:
        layers = layers[..., None]
    grid = sitk.Image(image.GetSize(), sitk.sitkUInt8)
    grid.CopyInformation(image)
    offset_text = image.GetMetaData("Segmentation_ReferenceImageExtentOffset") if \
        "Segmentation_ReferenceImageExtentOffset" in keys else "0 0 0"
    offset = tuple(int(v) for v in offset_text.split())
    segments = []
    for n in ids:
        def meta(name: str, default: str = "", n: int = n) -> str:
            key = f"Segment{n}_{name}"
            return image.GetMetaData(key) if key in keys else default

        layer = int(meta("Layer", "0") or 0)
        value = int(meta("LabelValue", "1") or 1)
        if layer >= layers.shape[-1]:
            raise InputError(f"segmentation {path}: segment {meta('ID')} is in layer {layer}, the file has {layers.shape[-1]}")
        segments.append(Segment(meta("ID"), meta("Name"), value, layer, _parse_tags(meta("Tags")),
                                layers[..., layer] == value))
    return SegmentationFile(segments, grid, offset)  # type: ignore[arg-type]


def mask_hash(mask: np.ndarray, offset: tuple[int, int, int] = (0, 0, 0)) -> str:
    """SHA-256 of a mask's voxel positions (i, j, k in the reference geometry), as the module's
    ``segments.image_voxels_hash`` computes it: sorted by i, then j, then k; little-endian int64."""
    k, j, i = np.nonzero(mask)
    positions = np.stack([i + offset[0], j + offset[1], k + offset[2]], axis=1).astype(np.int64)
    positions = positions[np.lexsort(positions.T[::-1])]
    return hashlib.sha256(np.ascontiguousarray(positions, dtype="<i8").tobytes()).hexdigest()


def match_label(segment: Segment) -> OutputLabel | None:
    """The output label a segment stands for: by the module's segment ID, else the terminology code, else the name."""
    for lab in OUTPUT_LABELS:
        if segment.id == lab.segment_id:
            return lab
    terminology = segment.tags.get("TerminologyEntry", "")
    for lab in OUTPUT_LABELS:
        if f"~{lab.code.triple()}~" in terminology:
            return lab
    for lab in OUTPUT_LABELS:
        if segment.name.strip().lower() in (lab.name.lower(), lab.key):
            return lab
    return None


def edited_state(segment: Segment, offset: tuple[int, int, int]) -> bool | None:
    """True when edited since the module made it, False when not, None when it carries no hash (not generated)."""
    stored = segment.tags.get(HASH_TAG)
    if not stored:
        return None
    return stored != mask_hash(segment.mask, offset)


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def model_from_report(report_path: str | Path | None) -> dict:
    """{id, version, sha256} of the model named in a run's report JSON ({} when there is none)."""
    if not report_path or not Path(report_path).is_file():
        return {}
    try:
        model = json.loads(Path(report_path).read_text(encoding="utf-8")).get("model") or {}
    except (OSError, ValueError) as exc:
        raise InputError(f"report {report_path}: unreadable ({exc})") from None
    return {k: model[k] for k in ("id", "version", "sha256") if model.get(k)}


def report_next_to(seg_path: str | Path) -> Path | None:
    """The report the command line wrote beside a result (``X.seg.nrrd`` -> ``X_report.json``)."""
    p = Path(seg_path)
    stem = p.name[: -len(".seg.nrrd")] if p.name.endswith(".seg.nrrd") else p.stem
    candidate = p.with_name(f"{stem}_report.json")
    return candidate if candidate.is_file() else None


def next_case_id(out_dir: str | Path) -> str:
    """The next free three-digit case id of a site data folder (001, 002, ...)."""
    used = {int(p.name) for p in Path(out_dir).glob("[0-9][0-9][0-9]") if p.is_dir()} if Path(out_dir).is_dir() else set()
    n = 1
    while n in used:
        n += 1
    return f"{n:03d}"


def collect_case(
    seg: str | Path,
    inputs: dict[str, str | Path],
    out_dir: str | Path,
    case: str | None = None,
    model: dict | None = None,
    edited: dict[str, bool | None] | None = None,
    overwrite: bool = False,
    source: str = "brainbarriers collect",
) -> CollectedCase:
    """Write one corrected case into ``out_dir`` in the training layout; returns its folder and provenance.

    Args:
        seg: the reviewed segmentation (.seg.nrrd).
        inputs: modality -> image file (at least the reference: CT, else T1, else T2).
        case: case id (default: the next free three-digit id).
        model: {id, version, sha256} of the model that made the first contours; what it leaves out
            comes from the report beside ``seg``, else from the segments' model tag.
        edited: output-label key -> edited (overrides what the hashes in the file say; the module
            passes what it knows from the live segmentation).
        overwrite: replace an existing case folder.
        source: what wrote the case (stored in the provenance).
    """
    from .cases import check_case_name

    if not inputs:
        raise InputError("give the case's input images (--ct, --t1, --t2)")
    unknown = [m for m in inputs if m not in MODALITIES]
    if unknown:
        raise InputError(f"unknown input modality {unknown[0]!r}; use ct, t1, t2")
    out_dir = Path(out_dir).expanduser()
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError(f"site data folder {out_dir} exists and is not a folder")
    case = check_case_name(case or next_case_id(out_dir))
    final = out_dir / case
    if final.exists() and not overwrite:
        raise OutputError(f"case {case} already exists in {out_dir}; pass --overwrite to replace it, or choose --case")

    segmentation = read_segmentation(seg)
    images = {m: read_image(inputs[m], m) for m in MODALITIES if m in inputs}
    reference_key = next(m for m in MODALITIES if m in images)
    reference = images[reference_key]

    label = np.zeros(segmentation.segments[0].mask.shape, np.uint8)
    structures: dict[str, dict] = {}
    ignored = []
    for s in segmentation.segments:
        lab = match_label(s)
        if lab is None:
            ignored.append(s.name or s.id)
            continue
        if lab.key in structures:
            raise InputError(f"segmentation {seg}: segments {structures[lab.key]['segment']!r} and {s.name!r} are both "
                             f"{lab.name}; keep one")
        label[s.mask] = lab.value  # structures do not overlap in the training labels: later ones win
        state = edited_state(s, segmentation.extent_offset)
        if edited is not None and lab.key in edited:
            state = edited[lab.key]
        structures[lab.key] = {"segment": s.name, "segment_id": s.id, "voxels": int(s.mask.sum()), "edited": state}
    if not structures:
        raise InputError(f"segmentation {seg}: no segment is one of {', '.join(lab.name for lab in OUTPUT_LABELS)}")
    label_image = geometry.resample_onto(geometry.array_to_image(label, segmentation.grid), reference,
                                         sitk.sitkNearestNeighbor)

    # what is known about the model, weakest source first: the segments' tag, the report, the caller
    known: dict = {}
    tags = {s.tags.get(MODEL_TAG) for s in segmentation.segments if s.tags.get(MODEL_TAG)}
    if len(tags) == 1:
        model_id, _, version = tags.pop().partition("@")
        known = {"id": model_id, "version": version or None}
    from_report = model_from_report(report_next_to(seg))
    if from_report.get("id") not in (None, known.get("id")):
        known = {}
    known.update(from_report)
    known.update({k: v for k, v in (model or {}).items() if v})
    model = known
    provenance = {
        "case": case,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "written_by": f"{source} (brainbarriers {__version__})",
        "model": {"id": model.get("id"), "version": model.get("version"), "sha256": model.get("sha256")},
        "structures": structures,
        "edited": sorted(k for k, v in structures.items() if v["edited"]),
        "ignored_segments": ignored,
        "reference": reference_key,
        "sources": {"segmentation": {"path": str(Path(seg).resolve()), "sha256": sha256_file(seg)},
                    **{m: {"path": str(Path(p).resolve()),
                           "sha256": sha256_file(p) if Path(p).is_file() else None} for m, p in inputs.items()}},
    }

    out_dir.mkdir(parents=True, exist_ok=True)
    temp = out_dir / f".tmp-{os.getpid()}-{case}"
    shutil.rmtree(temp, ignore_errors=True)
    try:
        temp.mkdir()
        for m, img in images.items():
            on_grid = img if m == reference_key else geometry.resample_onto(
                img, reference, sitk.sitkLinear, float(sitk.GetArrayViewFromImage(img).min()))
            sitk.WriteImage(sitk.Cast(on_grid, sitk.sitkFloat32), str(temp / f"{case}_{m}.mha"), useCompression=True)
        sitk.WriteImage(sitk.Cast(label_image, sitk.sitkUInt8), str(temp / f"{case}_labelmap_task1.mha"), useCompression=True)
        (temp / f"{case}_{PROVENANCE}").write_text(json.dumps(provenance, indent=2) + "\n", encoding="utf-8")
        if final.exists():
            shutil.rmtree(final)
        os.replace(temp, final)
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    return CollectedCase(final, provenance)
