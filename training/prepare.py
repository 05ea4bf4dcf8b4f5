"""``prepare``: read a data set (ABCs layout, flat folder or CSV), check, resample, normalise, cache.

Cache layout (``--cache DIR``): one ``<case>.npz`` per case with
``image`` (3, K, J, I) float32 at the model spacing, ``label`` (K, J, I) uint8 of fine-target
indices (0 background, FineTarget.coarse_index otherwise: the sinus label already split),
``coarse_image`` / ``coarse_label`` the same at the coarse spacing; and ``index.json`` listing
the cases (shape, geometry, ground-truth boxes per target) and every problem case by name.

Images are reoriented to the LPS-aligned identity direction first (the model grid of the
pipeline), so array axis 0 is inferior->superior, 1 anterior->posterior, 2 right->left.
"""

from __future__ import annotations

import csv
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from brainbarriers.geometry import mask_box
from brainbarriers.preprocessing import normalise, resample_to_spacing
from brainbarriers.structures import FINE_TARGETS, MODALITIES

from .sinus import split_sinus

KEYS = (*MODALITIES, "label")
_SUFFIX = {"ct": "ct", "t1": "t1", "t2": "t2", "label": "labelmap_task1"}
_EXTENSIONS = (".mha", ".nii.gz", ".nii", ".nrrd", ".mhd")
_NAME = re.compile(r"^(?P<case>.+?)_(?P<kind>ct|t1|t2|labelmap_task1)(?P<ext>\.mha|\.nii\.gz|\.nii|\.nrrd|\.mhd)$")


class CaseError(Exception):
    """A problem with one case (reported by name; the case is skipped)."""


@dataclass
class CaseFiles:
    case: str
    files: dict[str, Path | None]


def discover(source: Path) -> list[CaseFiles]:
    """Cases of a data set: a CSV (case,ct,t1,t2,label), or a folder in the ABCs layout
    (NNN/NNN_ct.mha ...) or with all files flat in one folder. Missing files are kept as None."""
    source = Path(source)
    if source.is_file():
        return _discover_csv(source)
    if not source.is_dir():
        raise FileNotFoundError(f"data set {source} is neither a folder nor a CSV file")
    found: dict[str, dict[str, Path]] = {}
    for path in sorted(list(source.glob("*")) + list(source.glob("*/*"))):
        m = _NAME.match(path.name)
        if not m or not path.is_file():
            continue
        kind = {v: k for k, v in _SUFFIX.items()}[m["kind"]]
        found.setdefault(m["case"], {}).setdefault(kind, path)
    return [CaseFiles(case, {k: files.get(k) for k in KEYS}) for case, files in sorted(found.items())]


def _discover_csv(path: Path) -> list[CaseFiles]:
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    cases = []
    for n, row in enumerate(rows):
        name = (row.get("case") or "").strip() or f"row{n + 1}"
        files: dict[str, Path | None] = {}
        for key in KEYS:
            value = (row.get(key) or "").strip()
            files[key] = (path.parent / value) if value and not Path(value).is_absolute() else (Path(value) if value else None)
        cases.append(CaseFiles(name, files))
    return cases


def _read(path: Path | None, key: str) -> sitk.Image:
    if path is None:
        raise CaseError(f"{key} file missing")
    if not Path(path).is_file():
        raise CaseError(f"{key} file not found: {path}")
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        raise CaseError(f"{key} file unreadable: {Path(path).name} ({first[-1] if first else 'error'})") from None
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise CaseError(f"{key} image is not a 3D scalar image")
    return image


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


def bounding_box(mask: np.ndarray) -> list[int] | None:
    """[k0, j0, i0, k1, j1, i1] (end exclusive) of a mask, or None when empty (``geometry.mask_box`` flattened)."""
    box = mask_box(mask)
    return None if box is None else [*box[0], *box[1]]


def thin_preserving_labels(target_img: sitk.Image, spacing) -> sitk.Image:
    """Fine-target labels resampled to a coarser grid so that no target vanishes.

    Nearest-neighbour down-sampling drops sheets thinner than the new voxel (the falx at 4.8 mm).
    The coarse network only has to find boxes, so a coarse voxel is given a target when any voxel of
    that target lies within its footprint: each target mask is dilated by half the spacing ratio
    (rounded up) before nearest resampling, and thinner (smaller) targets are painted last.
    """
    arr = sitk.GetArrayFromImage(target_img)
    ratio = np.array(spacing, float) / np.array(target_img.GetSpacing(), float)
    if (ratio <= 1.0 + 1e-6).all():
        return resample_to_spacing(target_img, tuple(spacing), sitk.sitkNearestNeighbor)
    radius = [int(np.ceil(max(r - 1.0, 0.0) / 2.0)) for r in ratio]
    counts = np.bincount(arr.ravel(), minlength=256)
    out = None
    for index in sorted((int(v) for v in np.nonzero(counts[1:])[0] + 1), key=lambda v: -counts[v]):
        mask = sitk.Cast(target_img == index, sitk.sitkUInt8)
        if any(radius):
            mask = sitk.BinaryDilate(mask, radius, sitk.sitkBox)
        small = sitk.GetArrayFromImage(resample_to_spacing(mask, tuple(spacing), sitk.sitkNearestNeighbor))
        if out is None:
            out = np.zeros(small.shape, np.uint8)
        out[small > 0] = index
    ref = resample_to_spacing(target_img, tuple(spacing), sitk.sitkNearestNeighbor)
    if out is None:
        return ref
    img = sitk.GetImageFromArray(out)
    img.CopyInformation(ref)
    return img


def _image_from(array: np.ndarray, like: sitk.Image) -> sitk.Image:
    im = sitk.GetImageFromArray(array)
    im.CopyInformation(like)
    return im


def preprocess_case(files: CaseFiles, data_cfg: dict) -> dict:
    """Load, check and preprocess one case; returns the arrays and metadata to cache."""
    images = {key: _read(files.files.get(key), key) for key in KEYS}
    check_geometry(images, data_cfg.get("geometry_tolerance_mm", 0.01))
    images = {k: sitk.DICOMOrient(im, "LPS") for k, im in images.items()}
    label_arr = sitk.GetArrayFromImage(images["label"])
    if not np.issubdtype(label_arr.dtype, np.integer):
        rounded = np.rint(label_arr)
        if not np.allclose(rounded, label_arr):
            raise CaseError("label map has non-integer values")
        label_arr = rounded
    values = set(np.unique(label_arr).astype(int).tolist())
    if not values <= {0, 1, 2, 3, 4, 5}:
        raise CaseError(f"label map has values outside 0..5: {sorted(values - {0, 1, 2, 3, 4, 5})}")
    if values == {0}:
        raise CaseError("label map is empty")
    ref = images["label"]
    targets = fine_target_labels(label_arr.astype(np.int16), ref.GetDirection(), ref.GetSpacing(),
                                 data_cfg.get("sinus_split", {}))
    target_img = _image_from(targets, ref)
    out: dict = {"case": files.case}
    for prefix, spacing in (("", data_cfg["spacing"]), ("coarse_", data_cfg["coarse_spacing"])):
        channels = []
        for m in MODALITIES:
            res = resample_to_spacing(sitk.Cast(images[m], sitk.sitkFloat32), tuple(spacing), sitk.sitkLinear,
                                      float(sitk.GetArrayViewFromImage(images[m]).min()))
            channels.append(normalise(sitk.GetArrayFromImage(res), m, data_cfg["normalisation"].get(m, {})))
        if prefix:
            lab = thin_preserving_labels(target_img, spacing)
        else:
            lab = resample_to_spacing(target_img, tuple(spacing), sitk.sitkNearestNeighbor)
        out[prefix + "image"] = np.stack(channels).astype(np.float32)
        out[prefix + "label"] = sitk.GetArrayFromImage(lab).astype(np.uint8)
        if not prefix:
            out["origin"] = list(lab.GetOrigin())
            out["direction"] = list(lab.GetDirection())
    out["source_size"] = list(ref.GetSize())
    out["source_spacing"] = list(ref.GetSpacing())
    return out


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
        boxes = {t.key: bounding_box(out["label"] == t.coarse_index) for t in FINE_TARGETS}
        index["cases"].append({
            "case": cf.case, "file": file, "shape": list(out["label"].shape),
            "coarse_shape": list(out["coarse_label"].shape), "origin": out["origin"],
            "direction": out["direction"], "source_size": out["source_size"],
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
        raise FileNotFoundError(f"no prepared data in {cache} (run `python -m training prepare` first)")
    return json.loads(path.read_text())


def load_case(cache: Path, entry: dict, coarse: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(image, label) arrays of a cached case at the model (or coarse) spacing."""
    with np.load(Path(cache) / entry["file"]) as z:
        if coarse:
            return z["coarse_image"], z["coarse_label"]
        return z["image"], z["label"]
