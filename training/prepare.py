"""``prepare``: read a data set (ABCs layout, flat folder or CSV), check, resample, normalise, cache.

Cache layout (``--cache DIR``): one ``<case>.npz`` per case with
``image`` (3, K, J, I) float32 at the model spacing, ``label`` (K, J, I) uint8 of fine-target
indices (0 background, FineTarget.coarse_index otherwise: the sinus label already split),
``coarse_image`` / ``coarse_label`` the same at the coarse spacing; and ``index.json`` listing
the cases (shape, geometry, ground-truth boxes per target) and every problem case by name.

The arrays are exactly what ``brainbarriers segment`` feeds its networks: the images go through
the core's reader and ``brainbarriers.pipeline.prepare_inputs`` (the identity-direction model grid
centred on the reference image, per-grid normalisation), so array axis 0 is inferior->superior,
1 anterior->posterior, 2 right->left. The index records both grids so that coarse-checkpoint boxes
are mapped with the pipeline's own box code.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from brainbarriers import geometry
from brainbarriers.cases import find_cases
from brainbarriers.errors import InputError
from brainbarriers.io import read_image
from brainbarriers.pipeline import choose_reference, prepare_inputs
from brainbarriers.structures import FINE_TARGETS, MODALITIES

from .sinus import split_sinus

KEYS = (*MODALITIES, "label")
_SUFFIX = {"label": "labelmap_task1"}  # the images use their modality as suffix


class CaseError(Exception):
    """A problem with one case (reported by name; the case is skipped)."""


@dataclass
class CaseFiles:
    case: str
    files: dict[str, Path | None]


def discover(source: Path) -> list[CaseFiles]:
    """Cases of a data set: a CSV (case,ct,t1,t2,label), or a folder in the ABCs layout
    (NNN/NNN_ct.mha ...) or with all files flat in one folder, found by the core's
    ``brainbarriers.cases.find_cases`` (the command line's discovery). Missing files are kept as None."""
    try:
        found = find_cases(source, KEYS, _SUFFIX)
    except InputError as exc:
        raise FileNotFoundError(str(exc)) from None
    return [CaseFiles(c.case, {k: c.inputs.get(k) for k in KEYS}) for c in found]


def _read(path: Path | None, key: str) -> sitk.Image:
    """The core's reader (the checks ``brainbarriers segment`` applies), its error as a case problem."""
    if path is None:
        raise CaseError(f"{key} file missing")
    try:
        return read_image(path, key)  # role "label" keeps integer pixels
    except InputError as exc:
        raise CaseError(str(exc)) from None


def check_geometry(images: dict[str, sitk.Image], tolerance_mm: float = 0.01) -> None:
    """All images of a case must share one grid (size, spacing, origin, direction)."""
    ref_key = "label"
    ref = images[ref_key]
    for key, im in images.items():
        if key == ref_key:
            continue
        if im.GetSize() != ref.GetSize():
            raise CaseError(f"{key} size {im.GetSize()} differs from label size {ref.GetSize()}")
        if not np.allclose(im.GetSpacing(), ref.GetSpacing(), atol=1e-4, rtol=1e-3):
            raise CaseError(f"{key} spacing {im.GetSpacing()} differs from label spacing {ref.GetSpacing()}")
        if not np.allclose(im.GetOrigin(), ref.GetOrigin(), atol=tolerance_mm):
            raise CaseError(f"{key} origin {im.GetOrigin()} differs from label origin {ref.GetOrigin()}")
        if not np.allclose(im.GetDirection(), ref.GetDirection(), atol=1e-3):
            raise CaseError(f"{key} direction differs from the label's")


def fine_target_labels(label: np.ndarray, direction, spacing, split: dict) -> np.ndarray:
    """ABCs task-1 labels -> fine-target indices (FineTarget.coarse_index), sinus split in two."""
    out = np.zeros(label.shape, dtype=np.uint8)
    sagittal, transverse = split_sinus(label, direction, spacing, **split)
    for t in FINE_TARGETS:
        if t.key == "sagittal_sinus":
            out[sagittal] = t.coarse_index
        elif t.key == "transverse_sinus":
            out[transverse] = t.coarse_index
        else:
            out[label == t.label] = t.coarse_index
    return out


def grid_record(grid: sitk.Image) -> dict:
    """A grid's geometry as JSON (the index keeps both grids of every case)."""
    return {"origin": list(grid.GetOrigin()), "spacing": list(grid.GetSpacing()), "size": list(grid.GetSize()),
            "direction": list(grid.GetDirection())}


def grid_from_record(record: dict) -> sitk.Image:
    return geometry.empty_grid(record["origin"], record["spacing"], record["size"], record["direction"])


def thin_preserving_labels(target_img: sitk.Image, grid: sitk.Image) -> sitk.Image:
    """Fine-target labels resampled onto a coarser grid so that no target vanishes.

    Nearest-neighbour down-sampling drops sheets thinner than the new voxel (the falx at 4.8 mm).
    The coarse network only has to find boxes, so a coarse voxel is given a target when any voxel of
    that target lies within its footprint: each target mask is dilated by half the spacing ratio
    (rounded up) before nearest resampling, and thinner (smaller) targets are painted last.
    """
    arr = sitk.GetArrayFromImage(target_img)
    ratio = np.array(grid.GetSpacing(), float) / np.array(target_img.GetSpacing(), float)
    radius = [int(np.ceil(max(r - 1.0, 0.0) / 2.0)) for r in ratio]
    counts = np.bincount(arr.ravel(), minlength=256)
    out = np.zeros(tuple(reversed(grid.GetSize())), np.uint8)
    for index in sorted((int(v) for v in np.nonzero(counts[1:])[0] + 1), key=lambda v: -counts[v]):
        mask = sitk.Cast(target_img == index, sitk.sitkUInt8)
        if any(radius):
            mask = sitk.BinaryDilate(mask, radius, sitk.sitkBox)
        small = sitk.GetArrayFromImage(geometry.resample_onto(mask, grid, sitk.sitkNearestNeighbor))
        out[small > 0] = index
    return geometry.array_to_image(out, grid)


def preprocess_case(files: CaseFiles, data_cfg: dict) -> dict:
    """Load, check and preprocess one case; returns the arrays and metadata to cache."""
    images = {key: _read(files.files.get(key), key) for key in KEYS}
    check_geometry(images, data_cfg.get("geometry_tolerance_mm", 0.01))
    label_arr = sitk.GetArrayFromImage(images.pop("label"))
    ref = images["ct"]
    rounded = np.rint(label_arr)
    if not np.allclose(rounded, label_arr):
        raise CaseError("label map has non-integer values")
    values = set(np.unique(rounded).astype(int).tolist())
    if not values <= {0, 1, 2, 3, 4, 5}:
        raise CaseError(f"label map has values outside 0..5: {sorted(values - {0, 1, 2, 3, 4, 5})}")
    if values == {0}:
        raise CaseError("label map is empty")
    targets = fine_target_labels(rounded.astype(np.int16), ref.GetDirection(), ref.GetSpacing(),
                                 data_cfg.get("sinus_split", {}))
    target_img = geometry.array_to_image(targets, ref)
    schemes = {m: dict(data_cfg["normalisation"].get(m, {})) for m in MODALITIES}
    try:
        prepared = prepare_inputs(images, choose_reference(images), tuple(data_cfg["spacing"]),
                                  tuple(data_cfg["coarse_spacing"]), MODALITIES, schemes, alignment_check=False)
    except InputError as exc:
        raise CaseError(str(exc)) from None
    label = sitk.GetArrayFromImage(geometry.resample_onto(target_img, prepared.grid, sitk.sitkNearestNeighbor))
    coarse_label = sitk.GetArrayFromImage(thin_preserving_labels(target_img, prepared.coarse_grid))
    return {"case": files.case, "image": prepared.channels, "label": label.astype(np.uint8),
            "coarse_image": prepared.coarse_channels, "coarse_label": coarse_label.astype(np.uint8),
            "grid": grid_record(prepared.grid), "coarse_grid": grid_record(prepared.coarse_grid),
            "source_size": list(ref.GetSize()), "source_spacing": list(ref.GetSpacing())}


def _save_npz(path: Path, arrays: dict) -> None:
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def prepare(source: Path, cache: Path, data_cfg: dict, progress: bool = True) -> dict:
    """Preprocess every case of ``source`` into ``cache``; problem cases are reported, not fatal.

    Returns the index (also written to ``cache/index.json``).
    """
    from tqdm import tqdm

    cache = Path(cache)
    cache.mkdir(parents=True, exist_ok=True)
    cases = discover(Path(source))
    index: dict = {"source": str(source), "data": data_cfg, "spacing": list(data_cfg["spacing"]),
                   "coarse_spacing": list(data_cfg["coarse_spacing"]), "cases": [], "problems": []}
    for cf in tqdm(cases, desc="prepare", disable=not progress, unit="case"):
        try:
            out = preprocess_case(cf, data_cfg)
        except CaseError as exc:
            index["problems"].append({"case": cf.case, "problem": str(exc)})
            continue
        except Exception as exc:  # noqa: BLE001 - any failure of one case is reported, not fatal
            index["problems"].append({"case": cf.case, "problem": f"{type(exc).__name__}: {exc}"})
            continue
        file = f"{cf.case}.npz"
        _save_npz(cache / file, {k: out[k] for k in ("image", "label", "coarse_image", "coarse_label")})
        boxes = {t.key: geometry.mask_box(out["label"] == t.coarse_index) for t in FINE_TARGETS}  # JSON: [lo, hi]
        index["cases"].append({
            "case": cf.case, "file": file, "shape": list(out["label"].shape),
            "coarse_shape": list(out["coarse_label"].shape), "grid": out["grid"],
            "coarse_grid": out["coarse_grid"], "source_size": out["source_size"],
            "source_spacing": out["source_spacing"], "boxes": boxes,
            "files": {k: (str(v) if v else None) for k, v in cf.files.items()},
        })
    tmp = cache / "index.json.tmp"
    tmp.write_text(json.dumps(index, indent=1))
    os.replace(tmp, cache / "index.json")
    return index


def load_index(cache: Path) -> dict:
    path = Path(cache) / "index.json"
    if not path.is_file():
        raise FileNotFoundError(f"no prepared data in {cache} (run `python -m brainbarriers_training prepare` first)")
    return json.loads(path.read_text())


def load_case(cache: Path, entry: dict, coarse: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(image, label) arrays of a cached case at the model (or coarse) spacing."""
    with np.load(Path(cache) / entry["file"]) as z:
        if coarse:
            return z["coarse_image"], z["coarse_label"]
        return z["image"], z["label"]
