"""Quality flags per structure: where a reviewer should look first.

Plain functions from arrays, probabilities, boxes and training statistics to ``Flag`` objects,
each with a kind and a reason in words. ``assess`` runs them all for one pipeline run; the
pipeline stores the ``Assessment`` on its result and the report writer copies it out.

Kinds (``KINDS``):

* ``missing``: a requested structure has no voxels;
* ``volume``: the volume lies outside the range seen in training (the bundle manifest's
  ``volume_stats``, written by ``python -m brainbarriers_training export``), widened by ``volume_margin``;
* ``confidence``: the fine networks are unsure inside the structure (mean binary entropy, or the
  fraction of voxels whose probability lies between 0.2 and 0.8);
* ``flip``: a pass on the left-right mirrored input disagrees with the plain pass (Dice), only
  with ``--quality full`` because it costs two more forwards per structure;
* ``components``: more separate pieces than the structure table's ``components`` column expects;
* ``border``: the structure's box from the coarse stage reaches the image border and the structure
  itself touches it there, so the field of view may cut it off;
* ``field_of_view``: the image reaches further below the top of the head than any training head
  (the manifest's ``field_of_view``), widened by ``fov_margin``: the neck is in view, which the
  model never saw, and it may draw structures there (the demo model draws "cerebellum" in the
  back of the neck). Set on every structure of the run.

The thresholds are data (``Thresholds``); they are set on synthetic data and the demo model,
not calibrated on clinical review outcomes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import SimpleITK as sitk

from . import geometry
from .structures import FINE_TARGETS, FineTarget, OutputLabel, fine_target, output_label

KINDS = ("missing", "volume", "confidence", "flip", "components", "border", "field_of_view")

#: Probabilities between these bounds count as uncertain (binary entropy above ~0.72 bit).
UNCERTAIN_RANGE = (0.2, 0.8)

#: The top of the head: the highest axial slice whose head cross-section reaches this area (mm^2),
#: so that noise or a few voxels of hair above the scalp do not count.
HEAD_TOP_MIN_AREA_MM2 = 2000.0

#: Names of the model grid's array faces (identity LPS direction: K = I->S, J = A->P, I = R->L).
_FACES = (("inferior", "superior"), ("anterior", "posterior"), ("right", "left"))

Box = tuple[tuple[int, int, int], tuple[int, int, int]]


@dataclass(frozen=True)
class Thresholds:
    """When a measure becomes a flag."""

    volume_margin: float = 0.1  # fraction of the training min/max allowed beyond the range
    max_mean_entropy: float = 0.5  # bits
    max_uncertain_fraction: float = 0.4
    min_flip_dice: float = 0.8
    min_component_fraction: float = 0.05  # pieces smaller than this share of the structure are crumbs
    fov_margin_mm: float = 10.0  # image extent below the head's top allowed beyond the training heads' largest


@dataclass(frozen=True)
class Flag:
    """One reason to look at a structure again."""

    structure: str  # output-label key
    kind: str  # one of KINDS
    reason: str
    value: float | None = None  # the measure that tripped it

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class Assessment:
    """Flags and the measures behind them for one run; ``uncertainty``: entropy (bits) on the reference grid."""

    flags: list[Flag] = field(default_factory=list)
    measures: dict[str, dict] = field(default_factory=dict)
    uncertainty: sitk.Image | None = None

    def flags_for(self, key: str) -> list[Flag]:
        return [f for f in self.flags if f.structure == key]

    def as_dict(self) -> dict:
        return {"flags": [f.as_dict() for f in self.flags], "measures": self.measures}


# --- single measures -----------------------------------------------------------------------------


def binary_entropy(p: np.ndarray) -> np.ndarray:
    """Entropy in bits of a foreground probability (0 when certain, 1 at p = 0.5)."""
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-7, 1 - 1e-7)
    return -(p * np.log2(p) + (1 - p) * np.log2(1 - p))


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of two masks (1.0 when both are empty)."""
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int(np.logical_and(a, b).sum()) / total


def component_sizes(mask: np.ndarray) -> list[int]:
    """Voxel counts of the 26-connected components of ``mask``, largest first."""
    if not mask.any():
        return []
    cc = sitk.ConnectedComponent(sitk.GetImageFromArray(mask.astype(np.uint8)), True)
    counts = np.bincount(sitk.GetArrayViewFromImage(cc).ravel())[1:]
    return sorted((int(c) for c in counts if c), reverse=True)


def confidence(probabilities: list[np.ndarray]) -> dict | None:
    """Mean entropy and uncertain fraction over the voxels a network calls foreground (p > 0.5).

    ``probabilities``: foreground probability crops of the networks behind one output label.
    None when no network calls any voxel foreground.
    """
    inside = [p[p > 0.5] for p in probabilities]
    values = np.concatenate([v.ravel() for v in inside]) if inside else np.zeros(0)
    if values.size == 0:
        return None
    lo, hi = UNCERTAIN_RANGE
    return {"mean_entropy_bits": round(float(binary_entropy(values).mean()), 4),
            "uncertain_fraction": round(float(((values > lo) & (values < hi)).mean()), 4), "voxels": int(values.size)}


def flip_dice(predict: Callable[[np.ndarray], np.ndarray], crop: np.ndarray, axis: int) -> float:
    """Dice between the plain pass and the pass on the crop mirrored along spatial ``axis``.

    ``predict``: (C, K, J, I) crop -> (K, J, I) foreground probability, without flip averaging.
    """
    plain = predict(crop) > 0.5
    mirrored = np.flip(predict(np.ascontiguousarray(np.flip(crop, 1 + axis))), axis) > 0.5
    return dice(plain, mirrored)


def touched_faces(box: Box, probability: np.ndarray, shape: tuple[int, ...]) -> list[str]:
    """Names of the model-grid faces that a box reaches and where its probability exceeds 0.5."""
    faces = []
    for axis, (lo, hi) in enumerate(zip(*box)):
        for side, at_face, index in ((0, lo == 0, 0), (1, hi == shape[axis], -1)):
            if at_face and (np.take(probability, index, axis=axis) > 0.5).any():
                faces.append(_FACES[axis][side])
    return faces


# --- flags ---------------------------------------------------------------------------------------


def missing_flag(label: OutputLabel, voxels: int, found_by_coarse: bool = True) -> Flag | None:
    if voxels > 0:
        return None
    where = "the fine network found no voxel in its box" if found_by_coarse else "the coarse stage did not find it"
    return Flag(label.key, "missing", f"{label.name} is missing: {where}", 0.0)


def volume_flag(label: OutputLabel, volume_ml: float, stats: dict | None, limits: Thresholds = Thresholds()) -> Flag | None:
    """Volume outside [min, max] of training (each widened by ``volume_margin``); None without stats."""
    if not stats or volume_ml <= 0:
        return None
    low, high = stats["min_ml"] * (1 - limits.volume_margin), stats["max_ml"] * (1 + limits.volume_margin)
    if low <= volume_ml <= high:
        return None
    side = "larger" if volume_ml > high else "smaller"
    return Flag(label.key, "volume",
                f"{label.name} volume {volume_ml:.1f} ml is {side} than any seen in training "
                f"({stats['min_ml']:.1f}-{stats['max_ml']:.1f} ml over {stats['cases']} cases)", round(volume_ml, 3))


def confidence_flag(label: OutputLabel, measure: dict | None, limits: Thresholds = Thresholds()) -> Flag | None:
    if measure is None:
        return None
    entropy, fraction = measure["mean_entropy_bits"], measure["uncertain_fraction"]
    if entropy <= limits.max_mean_entropy and fraction <= limits.max_uncertain_fraction:
        return None
    return Flag(label.key, "confidence",
                f"{label.name}: low confidence, mean entropy {entropy:.2f} bit and {100 * fraction:.0f}% of its voxels "
                f"with probability between {UNCERTAIN_RANGE[0]} and {UNCERTAIN_RANGE[1]}", entropy)


def flip_flag(label: OutputLabel, dices: dict[str, float], limits: Thresholds = Thresholds()) -> Flag | None:
    """``dices``: fine-target key -> flip Dice; the worst target below the threshold trips it."""
    if not dices:
        return None
    key, worst = min(dices.items(), key=lambda kv: kv[1])
    if worst >= limits.min_flip_dice:
        return None
    part = f" ({fine_target(key).name})" if len(dices) > 1 else ""
    return Flag(label.key, "flip",
                f"{label.name}{part}: the pass on the left-right mirrored images agrees only at Dice {worst:.2f}",
                round(worst, 4))


def components_flag(label: OutputLabel, sizes: list[int], limits: Thresholds = Thresholds()) -> Flag | None:
    total = sum(sizes)
    pieces = [s for s in sizes if s >= limits.min_component_fraction * total]
    if len(pieces) <= label.components:
        return None
    expected = "one piece" if label.components == 1 else f"at most {label.components} pieces"
    shares = ", ".join(f"{100 * s / total:.0f}%" for s in pieces)
    return Flag(label.key, "components", f"{label.name} is in {len(pieces)} separate pieces ({shares} of its volume) "
                f"where {expected} is expected", float(len(pieces)))


def border_flag(label: OutputLabel, faces_by_target: dict[str, list[str]]) -> Flag | None:
    faces = sorted({f for fs in faces_by_target.values() for f in fs})
    if not faces:
        return None
    return Flag(label.key, "border", f"{label.name} reaches the {' and '.join(faces)} image border: "
                "the field of view may cut it off", float(len(faces)))


def extent_below_head_top(channels: np.ndarray, spacing_xyz: tuple[float, float, float]) -> float | None:
    """How far (mm) the image reaches below the top of the head, on an identity-direction grid.

    ``channels``: (C, K, J, I) arrays (K inferior -> superior), missing inputs all zero. The head is
    the union of the non-empty channels' foreground (``geometry.head_mask``); its top is the
    highest axial slice with at least ``HEAD_TOP_MIN_AREA_MM2`` of head. None without such a slice.
    """
    area = geometry.head_mask(channels).sum(axis=(1, 2)) * spacing_xyz[0] * spacing_xyz[1]
    slices = np.flatnonzero(area >= HEAD_TOP_MIN_AREA_MM2)
    return None if not slices.size else float((slices[-1] + 1) * spacing_xyz[2])


def field_of_view_statistics(extents_mm: list[float]) -> dict:
    """Manifest ``field_of_view`` from the training cases' ``extent_below_head_top`` (None skipped)."""
    v = np.array([x for x in extents_mm if x is not None], dtype=np.float64)
    if not v.size:
        return {}
    return {"below_head_top_mm": {"cases": int(v.size), "min": round(float(v.min()), 1), "max": round(float(v.max()), 1)}}


def field_of_view_flag(label: OutputLabel, extent_mm: float | None, stats: dict | None,
                       limits: Thresholds = Thresholds()) -> Flag | None:
    below = (stats or {}).get("below_head_top_mm")
    if extent_mm is None or not below or extent_mm <= below["max"] + limits.fov_margin_mm:
        return None
    return Flag(label.key, "field_of_view", f"the image reaches {extent_mm:.0f} mm below the top of the head, the "
                f"training heads at most {below['max']:.0f} mm: the neck is in view, which the model never saw; "
                f"check {label.name} closely, it may be drawn in the neck or the face", extent_mm)


# --- one run -------------------------------------------------------------------------------------


@dataclass
class FlipPass:
    """What the flip check needs: a no-TTA predictor, the model-grid channels and the LR array axis."""

    predict: Callable[[FineTarget, np.ndarray], np.ndarray]
    channels: np.ndarray
    lr_axis: int


def uncertainty_volume(probabilities: dict[str, tuple[Box, np.ndarray]], grid: sitk.Image,
                       reference: sitk.Image) -> sitk.Image:
    """Per voxel the highest binary entropy of any structure's probability, on the reference grid."""
    entropy = np.zeros(tuple(reversed(grid.GetSize())), np.float32)
    for box, prob in probabilities.values():
        region = entropy[geometry.box_slices(box)]
        np.maximum(region, binary_entropy(prob).astype(np.float32), out=region)
    return geometry.resample_onto(geometry.array_to_image(entropy, grid), reference, sitk.sitkLinear)


def assess(
    labels: sitk.Image,
    targets: list[FineTarget],
    probabilities: dict[str, tuple[Box, np.ndarray]],
    grid: sitk.Image,
    volume_stats: dict | None = None,
    flip: FlipPass | None = None,
    uncertainty_reference: sitk.Image | None = None,
    limits: Thresholds = Thresholds(),
    field_of_view: tuple[float | None, dict | None] | None = None,
) -> Assessment:
    """Every flag of one run.

    Args:
        labels: output labels on the reference grid.
        targets: the fine targets that were run.
        probabilities: fine-target key -> (model-grid box from the coarse stage, foreground probability in it).
        grid: the model grid the boxes index.
        volume_stats: the manifest's ``volume_stats`` (output-label key -> statistics).
        flip: run the left-right mirrored pass (``--quality full``).
        uncertainty_reference: build the uncertainty volume on this grid (the reference input's).
        field_of_view: (the run's ``extent_below_head_top``, the manifest's ``field_of_view``).
    """
    arr = sitk.GetArrayViewFromImage(labels)
    voxel_ml = float(np.prod(labels.GetSpacing())) / 1000.0
    out = Assessment()
    for value in sorted({t.label for t in targets}):
        label = output_label(value)
        parts = [t for t in targets if t.label == value]
        mask = arr == value
        voxels = int(mask.sum())
        measure: dict = {"volume_ml": round(voxels * voxel_ml, 3)}
        flags = [missing_flag(label, voxels, any(t.key in probabilities for t in parts))]
        if voxels:
            sizes = component_sizes(mask)
            measure["components"] = len(sizes)
            conf = confidence([probabilities[t.key][1] for t in parts if t.key in probabilities])
            measure.update(conf or {})
            flags += [volume_flag(label, measure["volume_ml"], (volume_stats or {}).get(label.key), limits),
                      confidence_flag(label, conf, limits), components_flag(label, sizes, limits)]
        if flip is not None:
            dices = {t.key: flip_dice(lambda x, t=t: flip.predict(t, x),
                                      flip.channels[(slice(None), *geometry.box_slices(probabilities[t.key][0]))],
                                      flip.lr_axis)
                     for t in parts if t.key in probabilities}
            measure["flip_dice"] = {k: round(v, 4) for k, v in dices.items()}
            flags.append(flip_flag(label, dices, limits))
        shape = tuple(reversed(grid.GetSize()))
        faces = {t.key: touched_faces(*probabilities[t.key], shape) for t in parts if t.key in probabilities}
        flags.append(border_flag(label, faces))
        if field_of_view is not None:
            flags.append(field_of_view_flag(label, *field_of_view, limits))
        out.measures[label.key] = measure
        out.flags += [f for f in flags if f is not None]
    if uncertainty_reference is not None:
        out.uncertainty = uncertainty_volume(probabilities, grid, uncertainty_reference)
    return out


def volume_statistics(volumes: dict[str, list[float]]) -> dict[str, dict]:
    """Manifest ``volume_stats`` from per-structure volumes (ml) of the training cases (empty ones skipped)."""
    stats = {}
    for key, values in volumes.items():
        v = np.array([x for x in values if x > 0], dtype=np.float64)
        if v.size:
            stats[key] = {"cases": int(v.size), "min_ml": round(float(v.min()), 3), "max_ml": round(float(v.max()), 3),
                          "mean_ml": round(float(v.mean()), 3), "std_ml": round(float(v.std()), 3)}
    return stats


def output_volumes(fine_labels: np.ndarray, spacing: tuple[float, float, float]) -> dict[str, float]:
    """Output-label volumes (ml) of a fine-target index map (``FineTarget.coarse_index`` values, as cached for training)."""
    counts = np.bincount(fine_labels.ravel(), minlength=len(FINE_TARGETS) + 1)
    voxel_ml = float(np.prod(spacing)) / 1000.0
    out: dict[str, float] = {}
    for t in FINE_TARGETS:
        key = output_label(t.label).key
        out[key] = out.get(key, 0.0) + float(counts[t.coarse_index]) * voxel_ml
    return out
