"""The two-stage segmentation pipeline as plain functions from images/arrays to images/arrays.

inputs (any grids) -> model grid (identity direction, model spacing, covering the reference)
-> normalised channels -> coarse grid -> coarse labels -> per-target boxes (+ margin)
-> fine probabilities per crop -> paste back by probability -> clean-up -> reference grid.

``Segmenter`` ties the stages together, keeps built networks for a batch of cases and reports
progress as (stage, overall fraction, message).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk

from . import atlas, geometry, quality
from .anatomy_rules import apply_anatomy_rules
from .bundles import Bundle
from .bundles.manifest import SLICE_AXIS_NETWORKS
from .errors import InputError
from .geometry import keep_large_components
from .preprocessing import array_axis, stack_channels
from .structures import FINE_TARGETS, MODALITIES, FineTarget, fine_target, output_label, targets_for_labels

ProgressFn = Callable[[str, float, str], None]

#: Foreground-mask Dice below which an MR is called misaligned with the reference.
MIN_ALIGNMENT_DICE = 0.6
#: Centroid distance (mm) above which an MR is called misaligned with the reference.
MAX_CENTROID_MM = 20.0

#: Array axis of left-right on the model grid (identity direction: numpy axis 2 is x, LPS's L).
LR_AXIS = 2
#: Manifest axis names of test-time flips -> array axes (only left-right: what training flips).
_FLIP_AXES = {"LR": LR_AXIS}

# Overall progress fraction at the start of each stage.
_STAGE_START = {"load": 0.0, "prepare": 0.05, "coarse": 0.15, "fine": 0.3, "postprocess": 0.9, "export": 0.95}


@dataclass
class SegmentOptions:
    """Options of one run (the command line's flags).

    Args:
        structures: output-label or fine-target keys (None: all the model segments).
        quality: "fast" or "full" (adds left-right flip test-time augmentation).
        register: rigidly co-register MR inputs to the reference.
        check_alignment: refuse inputs whose head masks do not line up.
        cleanup: drop small connected components per structure (model and input grid), and apply
            the anatomical rules (``anatomy_rules``: nothing outside the head, the falx above the
            ventricles' roof, the superior sagittal sinus joined into one vessel).
        precision: "fp32" or "bf16".
        batch_size: equal-shape tiles/flips per forward (None: 4 on a GPU, 1 on the CPU, where
            batching does not add speed but adds memory).
        fine_boxes: model-grid boxes per fine target replacing the coarse stage's (benchmarks).
        tile_overlap: the share of a tile's width that its neighbour repeats, where a crop is
            larger than the network's window (sliding window, Gaussian-weighted). A thin
            structure's result can depend on where the tiles fall (docs/demo-candidates.md);
            more overlap costs more forwards.
        atlas: with the neck in view (the image reaching further below the top of the head than
            the bundle's training heads, quality flag ``field_of_view``), keep each target's coarse
            region, and what the fine networks draw, within its box from the registered atlas (``brainbarriers.atlas``).
    """

    structures: list[str] | None = None
    quality: str = "fast"
    register: bool = False
    check_alignment: bool = True
    cleanup: bool = True
    precision: str = "fp32"
    batch_size: int | None = None
    fine_boxes: dict[str, geometry.Box] | None = None
    uncertainty: bool = False
    atlas: bool = True
    tile_overlap: float = 0.25


@dataclass
class SegmentResult:
    """Labels on the reference grid plus what the report needs."""

    labels: sitk.Image
    reference: str
    modalities: list[str]
    targets: list[str]
    boxes: dict[str, dict | None] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    #: per target, its box on the model grid within which it may lie where the atlas was placed
    #: (``Segmenter.localise``); None without the atlas
    zones: dict[str, geometry.Box | None] | None = None
    device: str = "cpu"
    quality: quality.Assessment = field(default_factory=quality.Assessment)


# --- stages -----------------------------------------------------------------------------------------


#: Output labels of the structures served by HMRNet-s, a voxel or two thick on the model grid.
THIN_LABELS = frozenset(t.label for t in FINE_TARGETS if t.variant == "s")


def choose_reference(images: dict[str, sitk.Image]) -> str:
    """The reference input: CT when present, else the first of T1, T2."""
    for m in MODALITIES:
        if m in images:
            return m
    raise InputError("no input image was given (--ct, --t1, --t2)")


def registration_transforms(images: dict[str, sitk.Image], reference: str) -> dict[str, sitk.Transform]:
    """Rigid MR-to-reference transforms (mutual information), computed on 2.4 mm copies for speed."""
    grid = geometry.model_grid(images[reference], (2.4, 2.4, 2.4))
    fixed = geometry.resample_onto(images[reference], grid, default_value=_background(images[reference]))
    out = {}
    for m, img in images.items():
        if m != reference:
            out[m] = geometry.register_rigid(fixed, img)
    return out


def _background(image: sitk.Image) -> float:
    return float(sitk.GetArrayViewFromImage(image).min())


def resample_inputs(
    images: dict[str, sitk.Image], grid: sitk.Image, transforms: dict[str, sitk.Transform] | None = None
) -> dict[str, np.ndarray]:
    """Every input on ``grid`` by world coordinates (linear), outside filled with its minimum."""
    transforms = transforms or {}
    return {
        m: sitk.GetArrayFromImage(geometry.resample_onto(img, grid, sitk.sitkLinear, _background(img), transforms.get(m)))
        for m, img in images.items()
    }


def check_alignment(
    arrays: dict[str, np.ndarray],
    reference: str,
    spacing: tuple[float, float, float],
    valid: dict[str, np.ndarray] | None = None,
) -> dict:
    """Foreground Dice and centroid distance of each input against the reference; InputError if misaligned.

    ``valid[m]``: where input ``m`` has data on the grid (the comparison is restricted to it).
    """
    stats = {}
    for m, a in arrays.items():
        if m == reference:
            continue
        dice, dist = geometry.alignment(arrays[reference], a, spacing, (reference, m), (valid or {}).get(m))
        stats[m] = {"foreground_dice": round(dice, 3), "centroid_mm": round(dist, 1)}
        if dice < MIN_ALIGNMENT_DICE or dist > MAX_CENTROID_MM:
            raise InputError(
                f"{m} does not line up with {reference} (head overlap Dice {dice:.2f}, centroids {dist:.0f} mm apart); "
                "pass --register to co-register them, or check the files"
            )
    return stats


#: A coarse argmax region below this many voxels is too small to trust as a box.
MIN_COARSE_VOXELS = 8
#: Fallback: a target's own coarse probability at or above this marks its region when its argmax
#: region is (almost) empty. Thin targets lying against a plump one (the transverse sinus on the
#: tentorium) keep a clear probability of their own but lose the argmax at low resolution.
FALLBACK_PROBABILITY = 0.2
#: Second fallback, relative to the target's own peak: when no voxel reaches FALLBACK_PROBABILITY,
#: those at or above half the peak, if the peak reaches PEAK_FLOOR. On an Intel Xeon the smoke
#: recipe's coarse network gave the transverse sinus a peak of 0.185 on every held-out phantom, so
#: its box went missing and the sinus lost its transverse part (training/README.md).
PEAK_FLOOR = 0.1


def coarse_region(probabilities: np.ndarray, index: int) -> tuple[np.ndarray, str]:
    """The coarse-grid region of one target and how it was found ("argmax", "fallback" or "missing").

    ``probabilities``: coarse softmax (K, D, H, W). The region is the target's argmax voxels (large
    components); when that holds fewer than MIN_COARSE_VOXELS, the voxels where the target's own
    probability reaches FALLBACK_PROBABILITY (large components) stand in for it; when none does, those
    at or above half its own peak, if that peak reaches PEAK_FLOOR and twice the target's median.
    """
    region = keep_large_components(probabilities.argmax(0) == index)
    if region.sum() >= MIN_COARSE_VOXELS:
        return region, "argmax"
    own = probabilities[index]
    fallback = keep_large_components(own >= FALLBACK_PROBABILITY)
    peak = float(own.max())
    # the peak must stand out from the target's typical level: a flat probability (a network
    # that says nothing about this target, e.g. 1/K everywhere) marks no region
    if not fallback.any() and peak >= PEAK_FLOOR and peak >= 2 * float(np.median(own)):
        fallback = keep_large_components(own >= 0.5 * peak)
    if fallback.any():
        return fallback | region, "fallback"
    return region, ("argmax" if region.any() else "missing")


def coarse_boxes(
    probabilities: np.ndarray,
    coarse: sitk.Image,
    grid: sitk.Image,
    targets: list[FineTarget],
    margins: dict[str, int],
) -> tuple[dict[str, geometry.Box | None], dict[str, str]]:
    """Per fine target: the model-grid box of its coarse region plus its margin, and how the region
    was found (see ``coarse_region``). Used by the pipeline and by training (coarse-checkpoint boxes)."""
    shape = tuple(reversed(grid.GetSize()))
    boxes: dict[str, geometry.Box | None] = {}
    how: dict[str, str] = {}
    for t in targets:
        region, how[t.key] = coarse_region(probabilities, t.coarse_index)
        box = geometry.mask_box(region)
        boxes[t.key] = None if box is None else geometry.expand_box(geometry.map_box(box, coarse, grid),
                                                                    margins.get(t.key, 0), shape)
    return boxes, how


def training_view_start(channels: np.ndarray, spacing_xyz: tuple[float, float, float],
                        field_of_view: dict | None, margin_mm: float = quality.Thresholds().fov_margin_mm) -> int:
    """With the neck in view, the lowest axial slice (K, inferior -> superior) of what a training
    head would show: the image reaches more than ``margin_mm`` further below the top of the head
    than the manifest's ``field_of_view`` maximum, and the slices further below than that maximum
    are left out. 0 when the image is within the training range."""
    below = (field_of_view or {}).get("below_head_top_mm")
    extent = quality.extent_below_head_top(channels, spacing_xyz)
    if extent is None or not below or extent <= below["max"] + margin_mm:
        return 0
    return int(round((extent - below["max"]) / spacing_xyz[2]))


def register_atlas_to_case(channels: np.ndarray, grid: sitk.Image, modality_index: int, modality: str,
                          start: int) -> sitk.Transform:
    """The atlas -> case affine, registered on one input channel of the coarse ``grid`` with the
    slices below ``start`` (the neck) blanked."""
    case = channels[modality_index] - channels[modality_index].min()  # normalised inputs go below 0
    case[:start] = 0.0
    return atlas.register_atlas(geometry.array_to_image(case, grid), modality)


def keep_in_zones(probabilities: np.ndarray, zones: dict[str, geometry.Box | None],
                  targets: list[FineTarget]) -> np.ndarray:
    """Coarse probabilities with each target's channel set to 0 outside its zone (in place)."""
    for t in targets:
        zone = zones.get(t.key)
        outside = np.ones(probabilities.shape[1:], bool)
        if zone is not None:
            outside[geometry.box_slices(zone)] = False
        probabilities[t.coarse_index][outside] = 0.0
    return probabilities


def clip_to_zone(probability: np.ndarray, box: geometry.Box, zone: geometry.Box | None) -> np.ndarray:
    """A fine crop's probability (the crop ``box`` of the model grid) set to 0 outside ``zone`` (in place)."""
    inside = np.zeros(probability.shape, bool)
    if zone is not None:
        lo = [max(z, b) - b for z, b in zip(zone[0], box[0])]
        hi = [min(z, c) - b for z, c, b in zip(zone[1], box[1], box[0])]
        if all(h > low for low, h in zip(lo, hi)):
            inside[tuple(slice(low, h) for low, h in zip(lo, hi))] = True
    probability[~inside] = 0.0
    return probability


def paste_by_probability(
    labels: np.ndarray, best: np.ndarray, probability: np.ndarray, box: geometry.Box, value: int
) -> None:
    """Write ``value`` where the crop's foreground probability > 0.5 and beats what is there (in place)."""
    region = geometry.box_slices(box)
    lab, bst = labels[region], best[region]
    take = (probability > 0.5) & (probability > bst)
    lab[take] = value
    bst[take] = probability[take]


def cleanup_labels(labels: np.ndarray, values: list[int]) -> np.ndarray:
    """Per label value, drop connected components that ``keep_large_components`` would not keep."""
    out = labels.copy()
    for v in values:
        mask = labels == v
        out[mask & ~keep_large_components(mask)] = 0
    return out


def labels_to_reference(labels: np.ndarray, grid: sitk.Image, reference: sitk.Image,
                        thin: Collection[int] = THIN_LABELS) -> sitk.Image:
    """Model-grid labels onto the reference's exact grid: per label, linear resampling of its mask inside
    its box, voxels where it reaches 0.5 (the highest label fraction wins). A ``thin`` label that this
    leaves in more 26-connected pieces than it had on the model grid also gets its nearest-neighbour
    voxels where no label was placed: a one-voxel diagonal run (a joined sinus) reaches 0.5 nowhere
    between two of its voxels, while nearest-neighbour resampling onto a grid as fine keeps it
    connected. Plump labels are left to the linear rule, which draws their boundary more faithfully."""
    out = np.zeros(tuple(reversed(reference.GetSize())), dtype=np.uint8)
    best = np.zeros(out.shape, dtype=np.float32)
    shape = labels.shape
    to_check = []  # thin labels whose connectivity the linear rule may have broken
    for v in [int(x) for x in np.unique(labels) if x > 0]:
        mask = labels == v
        box = geometry.expand_box(geometry.mask_box(mask), 2, shape)
        ref_box = geometry.map_box(box, grid, reference)
        if any(b <= a for a, b in zip(*ref_box)):
            continue
        src = geometry.array_to_image(mask[geometry.box_slices(box)].astype(np.float32), geometry.sub_grid(grid, box))
        ref_grid = geometry.sub_grid(reference, ref_box)
        frac = sitk.GetArrayFromImage(geometry.resample_onto(src, ref_grid, sitk.sitkLinear))
        region = geometry.box_slices(ref_box)
        o, b = out[region], best[region]
        take = (frac >= 0.5) & (frac > b)
        o[take] = v
        b[take] = frac[take]
        if v in thin:
            to_check.append((v, int(geometry.label_components(mask).max()), src, ref_grid, region))
    for v, pieces, src, ref_grid, region in to_check:
        o = out[region]
        if geometry.label_components(o == v).max() <= pieces:
            continue
        nearest = sitk.GetArrayFromImage(geometry.resample_onto(src, ref_grid, sitk.sitkNearestNeighbor)) > 0.5
        o[nearest & (o == 0)] = v
    img = sitk.GetImageFromArray(out)
    img.CopyInformation(reference)
    return img


def fine_axes(target: FineTarget, spec: dict, grid: sitk.Image) -> tuple[int | None, int | None]:
    """(axis the data needs, axis the network was trained with) for an -s target; (None, None) for -p."""
    slice_axis = spec.get("slice_axis") or target.slice_axis
    if spec["architecture"] not in SLICE_AXIS_NETWORKS or slice_axis is None:
        return None, None
    needed = array_axis(grid.GetDirection(), slice_axis)
    trained = spec["options"].get("inter_slice_axis")
    return needed, (needed if trained is None else int(trained))


@dataclass
class PreparedInputs:
    """A case's inputs as the networks see them: both grids and the normalised channels on each."""

    grid: sitk.Image
    coarse_grid: sitk.Image
    channels: np.ndarray
    coarse_channels: np.ndarray
    notes: list[str] = field(default_factory=list)


def prepare_inputs(
    images: dict[str, sitk.Image],
    reference_key: str,
    spacing: tuple[float, float, float],
    coarse_spacing: tuple[float, float, float],
    modalities: list[str] | tuple[str, ...],
    schemes: dict[str, dict],
    transforms: dict[str, sitk.Transform] | None = None,
    alignment_check: bool = True,
) -> PreparedInputs:
    """Inputs -> model and coarse grids (around the reference) -> normalised channels.

    The one preprocessing path: ``Segmenter`` and training's ``prepare`` both call it. Each grid's
    channels are resampled from the originals and normalised on that grid.
    """
    reference = images[reference_key]
    for m, img in images.items():
        if m != reference_key:
            geometry.check_overlap(img, reference, m)
    grid = geometry.model_grid(reference, spacing)
    coarse_grid = geometry.model_grid(reference, coarse_spacing)
    notes: list[str] = []
    coarse_arrays = resample_inputs(images, coarse_grid, transforms)
    if alignment_check and len(images) > 1:
        valid = {m: geometry.coverage(img, coarse_grid, (transforms or {}).get(m)) for m, img in images.items()}
        stats = check_alignment(coarse_arrays, reference_key, coarse_grid.GetSpacing(), valid)
        notes += [f"{m} vs {reference_key}: head overlap Dice {s['foreground_dice']}, centroids {s['centroid_mm']} mm apart"
                  for m, s in stats.items()]
    coarse_channels = stack_channels(coarse_arrays, modalities, schemes)
    del coarse_arrays
    channels = stack_channels(resample_inputs(images, grid, transforms), modalities, schemes)
    return PreparedInputs(grid, coarse_grid, channels, coarse_channels, notes)


# --- the whole run ----------------------------------------------------------------------------------


class Segmenter:
    """Runs a bundle's two stages on one case at a time; networks are built once and kept.

    Args:
        bundle: a loaded (verified) model bundle.
        device: torch device or "auto"/"cpu"/"cuda"/"mps".
        options: SegmentOptions.
        progress: callback (stage, fraction 0..1 overall, message).
    """

    def __init__(self, bundle: Bundle, device="auto", options: SegmentOptions | None = None,
                 progress: ProgressFn | None = None) -> None:
        self.bundle = bundle
        self.options = options or SegmentOptions()
        self.progress = progress or (lambda stage, fraction, message: None)
        self._device = device
        self._runner = None  # torch is imported on first use, after the inputs are checked
        self._nets: dict[str, object] = {}
        chosen = list(targets_for_labels(self.options.structures))
        missing = [t.key for t in chosen if t.key not in bundle.structures]
        if self.options.structures and missing:
            raise InputError(f"model {bundle.id} does not segment {', '.join(missing)}; it segments {', '.join(bundle.structures)}")
        self.targets = [t for t in chosen if t.key in bundle.structures]
        if not 0.0 <= self.options.tile_overlap < 1.0:
            raise InputError(f"tile overlap {self.options.tile_overlap} is not a fraction from 0 up to (not including) 1")

    @property
    def runner(self):
        """The device runner (created on first use: choosing a device imports torch)."""
        if self._runner is None:
            from .predict import Runner, choose_device

            dev = choose_device(self._device) if isinstance(self._device, str) else self._device
            batch = self.options.batch_size or (1 if dev.type == "cpu" else 4)
            self._runner = Runner(dev, self.options.precision, batch)
        return self._runner

    def network(self, stage: str, **overrides):
        key = stage + repr(sorted(overrides.items()))
        if key not in self._nets:
            self._nets[key] = self.runner.prepare(self.bundle.build_network(stage, **overrides))
        return self._nets[key]

    def _flip_axes(self) -> tuple[int, ...]:
        # Only left-right: the networks were trained with left-right flips alone (the head is not
        # symmetric in the other directions), so averaging other flips would feed unseen images.
        return (LR_AXIS,) if self.options.quality == "full" else ()

    def _fine_flip_axes(self, spec: dict) -> tuple[int, ...]:
        # a bundle may ask for flip averaging of one network at every quality (its manifest's
        # test_time_flips); "full" quality adds the left-right flip for all
        return tuple(sorted(set(self._flip_axes()) | {_FLIP_AXES[a] for a in spec.get("test_time_flips", [])}))

    def fine_probability(self, target: FineTarget, crop: np.ndarray, grid: sitk.Image,
                         flips: tuple[int, ...] | None = None) -> np.ndarray:
        """Foreground probability of one fine target on its crop (C, K, J, I) of the model grid
        (``flips``: flip-averaging axes, default the network's own and the quality option's)."""
        spec = self.bundle.network_spec(target.key)
        flips = self._fine_flip_axes(spec) if flips is None else flips
        needed, trained = fine_axes(target, spec, grid)
        overrides = {"inter_slice_axis": needed} if needed is not None and "inter_slice_axis" not in spec["options"] else {}
        max_crop = list(spec.get("window") or spec["max_crop"])  # trained on fixed windows: tile with them
        swap = needed is not None and trained != needed
        if swap:  # present the thin axis where the weights expect it
            crop = np.swapaxes(crop, 1 + needed, 1 + trained)
            max_crop[needed], max_crop[trained] = max_crop[trained], max_crop[needed]
            # a flip along the left-right axis follows that axis to where the swap put it
            flips = tuple(sorted({needed: trained, trained: needed}.get(a, a) for a in flips))
        prob = self.runner.predict(self.network(target.key, **overrides), crop, tuple(max_crop),
                                   flips, self.options.tile_overlap)[1]
        return np.swapaxes(prob, needed, trained) if swap else prob

    # --- stages of one run -------------------------------------------------------------------------

    def select_inputs(self, images: dict[str, sitk.Image]) -> tuple[dict[str, sitk.Image], str, list[str]]:
        """(the inputs the model uses, the reference key, notes about ignored inputs)."""
        ignored = [m for m in images if m not in self.bundle.modalities]
        notes = [f"model {self.bundle.id} does not use {', '.join(ignored)}; ignored"] if ignored else []
        used = self.bundle.used_modalities(list(images))
        images = {m: images[m] for m in used}
        return images, choose_reference(images), notes

    def prepare(self, images: dict[str, sitk.Image], reference_key: str) -> PreparedInputs:
        """Registration (optional), grids, alignment check and normalisation."""
        self.progress("prepare", _STAGE_START["prepare"], f"resampling onto the {self.bundle.spacing[0]} mm model grid")
        transforms, notes = None, []
        if self.options.register and len(images) > 1:
            self.progress("prepare", 0.07, "co-registering MR to the reference (rigid, mutual information)")
            transforms = registration_transforms(images, reference_key)
            notes = [f"{m} registered rigidly to {reference_key}: {[round(float(v), 3) for v in t.GetParameters()]}"
                     for m, t in transforms.items()]
        schemes = {m: self.bundle.normalisation(m) for m in self.bundle.modalities}
        prepared = prepare_inputs(images, reference_key, self.bundle.spacing, self.bundle.coarse_spacing,
                                  self.bundle.modalities, schemes, transforms, self.options.check_alignment)
        prepared.notes[:0] = notes
        return prepared

    def localise(self, prepared: PreparedInputs) -> tuple[dict[str, geometry.Box | None], list[str]]:
        """Coarse stage: per target, its box (with margin) on the model grid, or None."""
        self.progress("coarse", _STAGE_START["coarse"], "coarse localisation")
        margins = {t.key: int(self.bundle.network_spec(t.key)["margin"]) for t in self.targets}
        spec = self.bundle.network_spec("coarse")
        probs = self.runner.predict(self.network("coarse"), prepared.coarse_channels, tuple(spec["max_crop"]),
                                    self._flip_axes(), self.options.tile_overlap)
        notes = []
        coarse = prepared.coarse_grid
        prepared.zones = None
        start = training_view_start(prepared.coarse_channels, coarse.GetSpacing(),
                                    self.bundle.manifest.get("field_of_view")) if self.options.atlas else 0
        to_case = None
        if start:
            self.progress("coarse", _STAGE_START["coarse"], "neck in view: placing the atlas")
            to_case, note = self.place_atlas(prepared, start)
            notes.append(note)
            placed = atlas.atlas_boxes()
        if to_case is not None:
            zones = {t.key: atlas.zone_box(t.key, to_case, coarse) for t in self.targets}
            probs = keep_in_zones(probs, zones, self.targets)
        boxes, how = coarse_boxes(probs, coarse, prepared.grid, self.targets, margins)
        if to_case is not None:  # the atlas's box, joined with what the coarse network found near it
            shape = prepared.channels.shape[1:]
            # the fine networks never saw a neck either: what they draw obeys the same zones
            prepared.zones = {t.key: atlas.zone_box(t.key, to_case, prepared.grid) for t in self.targets}
            for t in self.targets:
                core = atlas.mapped_box(placed[t.key], to_case, prepared.grid)
                if core is not None:
                    core = geometry.expand_box(core, margins.get(t.key, 0), shape)
                    boxes[t.key] = core if boxes[t.key] is None else geometry.union_box(core, boxes[t.key])
        notes += [f"{k}: coarse argmax region too small; box from its own coarse probability (>= {FALLBACK_PROBABILITY}, "
                  f"else >= half its peak)"
                  for k, h in how.items() if h == "fallback"]
        if self.options.fine_boxes:
            boxes.update({k: v for k, v in self.options.fine_boxes.items() if k in boxes})
        return boxes, notes

    def place_atlas(self, prepared: PreparedInputs, start: int) -> tuple[sitk.Transform | None, str]:
        """For a head with the neck in view: the atlas -> case affine (None when registration fails
        or claims an implausible head) and a note for the report."""
        used = next(m for m in self.bundle.modalities if prepared.coarse_channels[self.bundle.modalities.index(m)].any())
        try:
            to_case = register_atlas_to_case(prepared.coarse_channels, prepared.coarse_grid,
                                             self.bundle.modalities.index(used), used, start)
        except RuntimeError as exc:  # ITK gives up (no overlap)
            why = str(exc).strip().splitlines()[-1][:120]
        else:
            if atlas.plausible(to_case):
                return to_case, (f"neck in view: each structure's box covers its box on the atlas head (registered "
                                 f"on {used}) and its coarse region within {atlas.ZONE_MARGIN_MM:.0f} mm of it "
                                 f"({' and '.join(f'the {k}' for k in atlas.ZONE_MARGIN_BELOW_MM)} not below it)")
            why = "it claims an implausible head size or a mirror image"
        return None, (f"neck in view, but the atlas could not be registered ({why}); boxes from the coarse network "
                      "alone: check every structure")

    def segment_fine(self, prepared: PreparedInputs, boxes: dict[str, geometry.Box | None],
                     timings: dict[str, float], probabilities: dict | None = None) -> tuple[np.ndarray, list[str]]:
        """Fine stage: each target's network in its box, pasted back where its probability is highest
        (``probabilities``, when given, receives each target's (box, foreground probability))."""
        shape = prepared.channels.shape[1:]
        labels = np.zeros(shape, dtype=np.uint8)
        best = np.zeros(shape, dtype=np.float32)
        notes = []
        for n, t in enumerate(self.targets):
            frac = _STAGE_START["fine"] + (_STAGE_START["postprocess"] - _STAGE_START["fine"]) * n / len(self.targets)
            box = boxes.get(t.key)
            if box is None:
                notes.append(f"{t.key}: not found by the coarse stage; left empty")
                self.progress("fine", frac, f"{t.name}: not found by the coarse stage")
                continue
            spec = self.bundle.network_spec(t.key)
            if spec.get("window"):  # the context the network was trained with: at least one training window
                window = list(spec["window"])
                needed, trained = fine_axes(t, spec, prepared.grid)
                if needed is not None and needed != trained:  # the window is in the trained orientation
                    window[needed], window[trained] = window[trained], window[needed]
                box = geometry.grow_box(box, window, shape)
            size = tuple(b - a for a, b in zip(*box))
            self.progress("fine", frac, f"{t.name} ({size[2]}x{size[1]}x{size[0]} voxels)")
            ts = time.perf_counter()
            prob = self.fine_probability(t, prepared.channels[(slice(None), *geometry.box_slices(box))], prepared.grid)
            if prepared.zones is not None:
                clip_to_zone(prob, box, prepared.zones.get(t.key))
            paste_by_probability(labels, best, prob, box, t.label)
            if probabilities is not None:
                probabilities[t.key] = (box, prob)
            timings[f"fine_{t.key}"] = time.perf_counter() - ts
        return labels, notes

    @property
    def one_stage(self) -> bool:
        """A one-stage bundle: its single ("coarse") network segments every structure on the model grid."""
        return self.bundle.manifest.get("mode") == "one-stage"

    def segment_one_stage(self, prepared: PreparedInputs, probabilities: dict | None = None) -> np.ndarray:
        """One-stage mode: the network's argmax on the whole model grid, fine-target channels mapped
        to their output labels (``probabilities`` receives each target's whole-grid probability)."""
        self.progress("fine", _STAGE_START["fine"], "one-stage segmentation of the whole head")
        spec = self.bundle.network_spec("coarse")
        probs = self.runner.predict(self.network("coarse"), prepared.channels, tuple(spec["max_crop"]),
                                    self._flip_axes(), self.options.tile_overlap)
        winner = np.argmax(probs, axis=0)
        labels = np.zeros(winner.shape, dtype=np.uint8)
        whole = ((0, 0, 0), tuple(int(n) for n in winner.shape))
        for t in self.targets:
            labels[winner == t.coarse_index] = t.label
            if probabilities is not None:
                probabilities[t.key] = (whole, probs[t.coarse_index])
        return labels

    def postprocess(self, labels: np.ndarray, grid: sitk.Image, reference: sitk.Image,
                    channels: np.ndarray | None = None, probabilities: dict | None = None) -> sitk.Image:
        """Clean-up (optional: anatomical rules, small components) and the labels on the reference's
        exact grid (``channels``: the normalised inputs on ``grid``, for the inside-the-head rule;
        ``probabilities``: the fine stage's (box, probability) per target, for joining the sagittal sinus)."""
        self.progress("postprocess", _STAGE_START["postprocess"], "clean-up and resampling onto the input grid")
        if not self.options.cleanup:
            return labels_to_reference(labels, grid, reference)
        values = sorted({t.label for t in self.targets})
        labels = apply_anatomy_rules(labels, grid, values, channels, probabilities)
        out = labels_to_reference(cleanup_labels(labels, values), grid, reference)
        # resampling a thin diagonal run can leave specks on the finer grid
        cleaned = sitk.GetImageFromArray(cleanup_labels(sitk.GetArrayFromImage(out), values))
        cleaned.CopyInformation(out)
        return cleaned

    def run(self, images: dict[str, sitk.Image]) -> SegmentResult:
        """Segment one case given its input images (keys "ct", "t1", "t2")."""
        timings: dict[str, float] = {}
        tick = time.perf_counter()

        def lap(name: str, since: float) -> float:
            now = time.perf_counter()
            timings[name] = now - since
            return now

        images, reference_key, notes = self.select_inputs(images)
        prepared = self.prepare(images, reference_key)
        notes += prepared.notes
        mark = lap("prepare", tick)
        probabilities: dict[str, tuple[geometry.Box, np.ndarray]] = {}
        if self.one_stage:
            boxes, box_notes, fine_notes = {}, [], []
            labels = self.segment_one_stage(prepared, probabilities)
        else:
            boxes, box_notes = self.localise(prepared)
            mark = lap("coarse", mark)
            labels, fine_notes = self.segment_fine(prepared, boxes, timings, probabilities)
        mark = lap("fine", mark)
        grid = prepared.grid
        out = self.postprocess(labels, grid, images[reference_key], prepared.channels, probabilities)
        assessment = quality.assess(
            out, self.targets, probabilities, grid, self.bundle.manifest.get("volume_stats"),
            quality.FlipPass(lambda t, x: self.fine_probability(t, x, grid, flips=()), prepared.channels, LR_AXIS)
            if self.options.quality == "full" and not self.one_stage else None,
            images[reference_key] if self.options.uncertainty else None,
            field_of_view=(quality.extent_below_head_top(prepared.coarse_channels, prepared.coarse_grid.GetSpacing()),
                           self.bundle.manifest.get("field_of_view")))
        del prepared
        lap("postprocess", mark)
        timings["total"] = time.perf_counter() - tick
        box_report = {
            k: (None if box is None else {"model_grid_index": [list(box[0]), list(box[1])],
                                          "world_lps_mm": geometry.box_world(box, grid)})
            for k, box in boxes.items()
        }
        return SegmentResult(
            labels=out, reference=reference_key, modalities=list(images), targets=[t.key for t in self.targets],
            boxes=box_report, timings={k: round(v, 3) for k, v in timings.items()},
            notes=notes + box_notes + fine_notes + self.runner.notes, device=str(self.runner.device), quality=assessment,
        )


def output_labels_for(targets: list[str]) -> list[int]:
    """Output label values produced by a list of fine-target keys (sinus parts -> 3)."""
    return sorted({output_label(fine_target(k).label).value for k in targets})
