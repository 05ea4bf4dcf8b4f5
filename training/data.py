"""Training samples: coarse volumes and fine crops, with seeded augmentation.

Every sample is a pure function of (seed, epoch, index): its case, crop, localisation draw and
augmentation come from a random generator seeded with those three numbers. This makes runs
reproducible whatever the number of data-loading workers, and lets a resumed run replay exactly
the samples the killed run would have seen.
"""

from __future__ import annotations

import numpy as np
import torch
import torchio as tio
from brainbarriers import geometry
from brainbarriers.geometry import Box
from brainbarriers.preprocessing import array_axis
from brainbarriers.structures import FineTarget
from torch.utils.data import Dataset

from .prepare import load_case

_IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)


#: A predicted box is used for a fine crop only when it covers at least this fraction of the true box.
MIN_BOX_COVERAGE = 0.5


def box_coverage(box: Box, truth: Box) -> float:
    """Fraction of the voxels of box ``truth`` that lie inside ``box``."""
    inter = np.prod([max(0, min(h, th) - max(lo, tl)) for lo, h, tl, th in zip(box[0], box[1], truth[0], truth[1])])
    whole = np.prod([max(0, th - tl) for tl, th in zip(*truth)])
    return float(inter / whole) if whole else 0.0


def as_box(value) -> Box | None:
    """A box read from JSON ([[k0, j0, i0], [k1, j1, i1]]) as ``geometry.Box`` (None stays None)."""
    return None if value is None else (tuple(int(v) for v in value[0]), tuple(int(v) for v in value[1]))


def sample_seed(base: int, epoch: int, index: int) -> int:
    return int(np.random.SeedSequence([int(base), int(epoch), int(index)]).generate_state(1)[0])


def limit_box(box: Box, max_size, rng: np.random.Generator | None) -> Box:
    """Shrink a box to at most ``max_size`` per axis: a random window in training, centred otherwise."""
    if not max_size:
        return box
    lo, hi = list(box[0]), list(box[1])
    for a in range(3):
        slack = hi[a] - lo[a] - int(max_size[a])
        if slack > 0:
            lo[a] += int(rng.integers(0, slack + 1)) if rng is not None else slack // 2
            hi[a] = lo[a] + int(max_size[a])
    return tuple(lo), tuple(hi)  # type: ignore[return-value]


def fixed_window(box: Box, patch, rng: np.random.Generator | None) -> Box:
    """A window of exactly ``patch`` voxels around ``box``: centred on it, shifted at random (training)
    as far as the box stays inside; a random part of the box when the box is larger. May extend
    beyond the volume (``crop_padded`` pads)."""
    lo = []
    for a in range(3):
        slack = int(patch[a]) - (box[1][a] - box[0][a])
        off = int(rng.integers(0, abs(slack) + 1)) if rng is not None else abs(slack) // 2
        lo.append(box[0][a] - off if slack >= 0 else box[0][a] + off)
    return tuple(lo), tuple(lo[a] + int(patch[a]) for a in range(3))  # type: ignore[return-value]


def crop_padded(array: np.ndarray, box: Box, value: float = 0.0) -> np.ndarray:
    """array[..., box] over the last three axes, padded with ``value`` outside the array."""
    shape = array.shape[-3:]
    lo = [max(0, b) for b in box[0]]
    hi = [min(s, b) for s, b in zip(shape, box[1])]
    inner = array[(..., *[slice(a, b) for a, b in zip(lo, hi)])]
    pads = [(0, 0)] * (array.ndim - 3) + [(lo[a] - box[0][a], box[1][a] - hi[a]) for a in range(3)]
    return np.pad(inner, pads, constant_values=value) if any(p for pair in pads for p in pair) else inner


class Augmenter:
    """Spatial (torchio: affine, elastic, flips) and intensity (gamma, contrast, noise, modality
    dropout) augmentation of one sample, configured by the ``augmentation`` section."""

    def __init__(self, cfg: dict, spacing: tuple[float, float, float]):
        self.cfg = cfg
        self.spacing = tuple(float(s) for s in spacing)
        flips = tuple(array_axis(_IDENTITY, a) for a in cfg.get("flip_axes", []))
        spatial = []
        if cfg.get("affine_probability", 0) > 0:
            spatial.append(tio.RandomAffine(scales=tuple(cfg.get("scales", (1, 1))),
                                            degrees=float(cfg.get("rotation_degrees", 0)),
                                            image_interpolation="linear", label_interpolation="nearest",
                                            default_pad_value="minimum", p=float(cfg["affine_probability"])))
        if flips and cfg.get("flip_probability", 0) > 0:
            spatial.append(tio.RandomFlip(axes=flips, flip_probability=float(cfg["flip_probability"])))
        self.affine_flip = spatial

    def __call__(self, image: np.ndarray, label: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(seed)
        spatial = list(self.affine_flip)
        if self.cfg.get("elastic_probability", 0) > 0:
            spatial.insert(1 if self.cfg.get("affine_probability", 0) > 0 else 0, self._elastic(label.shape))
        if spatial:
            affine = np.diag([*self.spacing, 1.0])
            subject = tio.Subject(image=tio.ScalarImage(tensor=torch.from_numpy(np.ascontiguousarray(image)), affine=affine),
                                  label=tio.LabelMap(tensor=torch.from_numpy(label[None].astype(np.int16)), affine=affine))
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                subject = tio.Compose(spatial)(subject)
            image = subject["image"].data.numpy().astype(np.float32)
            label = subject["label"].data.numpy()[0].astype(np.uint8)
        image = self.intensity(image, rng)
        return image, label

    def _elastic(self, shape: tuple[int, ...]) -> tio.Transform:
        """Elastic deformation whose displacement stays below 40% of the control-point spacing of this
        sample's size (more folds the grid and tears thin structures)."""
        points = int(self.cfg.get("elastic_control_points", 7))
        limit = [0.4 * n * s / (points - 1) for n, s in zip(shape, self.spacing)]
        wanted = float(self.cfg.get("elastic_max_displacement_mm", 5.0))
        return tio.RandomElasticDeformation(num_control_points=points,
                                            max_displacement=tuple(min(wanted, v) for v in limit),
                                            image_interpolation="linear", label_interpolation="nearest",
                                            p=float(self.cfg["elastic_probability"]))

    def intensity(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        cfg = self.cfg
        image = image.copy()
        single = cfg.get("single_modality_probability", 0)
        # before the noise below: a missing modality is all zero
        present = [c for c in range(image.shape[0]) if image[c].any()] if single > 0 else []
        for c in range(image.shape[0]):
            ch = image[c]
            if rng.random() < cfg.get("gamma_probability", 0):
                # gamma on the channel rescaled to [0, 1], then mapped back to its range
                lo, hi = float(ch.min()), float(ch.max())
                if hi > lo:
                    gamma = float(np.exp(rng.uniform(*cfg.get("log_gamma", (-0.3, 0.3)))))
                    ch = ((ch - lo) / (hi - lo)) ** gamma * (hi - lo) + lo
            if rng.random() < cfg.get("contrast_probability", 0):
                ch = ch * rng.uniform(*cfg.get("contrast_range", (0.75, 1.25))) + rng.uniform(
                    *cfg.get("brightness_range", (-0.1, 0.1)))
            if rng.random() < cfg.get("noise_probability", 0):
                ch = ch + rng.normal(0.0, rng.uniform(0, cfg.get("noise_std", 0.1)), size=ch.shape)
            image[c] = ch
        # drawn only when asked for, so that recipes without it keep their random stream
        if len(present) > 1 and rng.random() < single:
            keep = int(rng.choice(present))
            for c in range(image.shape[0]):
                if c != keep:
                    image[c] = 0.0
        elif image.shape[0] > 1 and rng.random() < cfg.get("modality_dropout_probability", 0):
            # a missing modality is an all-zero channel after normalisation; keep at least one
            n_drop = int(rng.integers(1, image.shape[0]))
            for c in rng.choice(image.shape[0], size=n_drop, replace=False):
                image[c] = 0.0
        return image.astype(np.float32)


class TrainingSet(Dataset):
    """``length`` samples per epoch drawn from the cached cases (coarse volumes or fine crops).

    Args:
        cache: prepared cache folder.
        entries: index entries of the training cases.
        target: the fine target, or None for the coarse stage.
        cfg: the stage config (``augmentation``, ``patch_size``, ``margin``, ``max_crop``...).
        spacing: voxel spacing of the arrays used.
        boxes: for fine training, predicted boxes {checkpoint: {case: {target: box|None}}} at the
            model grid; one checkpoint is drawn per sample (ground truth when empty or missing).
    """

    def __init__(self, cache, entries: list[dict], target: FineTarget | None, cfg: dict, spacing, length: int,
                 seed: int, boxes: dict | None = None, augment: bool = True):
        self.cache, self.entries, self.target, self.cfg = cache, entries, target, cfg
        self.length, self.seed, self.epoch = int(length), int(seed), 0
        self.boxes = boxes or {}
        self.augmenter = Augmenter(cfg.get("augmentation", {}), spacing) if augment else None
        patch = cfg.get("patch_size")
        if isinstance(patch, dict):
            patch = patch.get(target.key if target is not None else "default", patch.get("default"))
        self.patch = list(patch) if patch else None
        self.patch_epochs = cfg.get("patch_epochs")
        if target is not None:
            margin = cfg.get("margin", "table")
            self.margin = target.margin if margin == "table" else int(margin)

    def __len__(self) -> int:
        return self.length

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def localisation(self, entry: dict, rng: np.random.Generator) -> Box | None:
        """The box the crop is built from: one coarse checkpoint's prediction drawn at random, or
        the ground-truth box when there are none or the drawn one missed the target (covers less
        than MIN_BOX_COVERAGE of the true box: a crop there would teach the network nothing but
        background)."""
        assert self.target is not None
        gt = as_box(entry["boxes"].get(self.target.key))
        if self.boxes:
            names = sorted(self.boxes)
            predicted = as_box(self.boxes[names[int(rng.integers(len(names)))]].get(entry["case"], {}).get(self.target.key))
            if predicted and (not gt or box_coverage(predicted, gt) >= MIN_BOX_COVERAGE):
                return predicted
        return gt

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        seed = sample_seed(self.seed, self.epoch, index)
        rng = np.random.default_rng(seed)
        entry = self.entries[index % len(self.entries)]
        if self.target is None:
            # one-stage training: the whole head at the model spacing, labels = fine-target indices
            image, label = load_case(self.cache, entry, coarse=not self.cfg.get("one_stage"))
            if self.patch and (self.patch_epochs is None or self.epoch < int(self.patch_epochs)):
                box = limit_box(((0, 0, 0), label.shape), self.patch, rng)
                image, label = image[(slice(None), *geometry.box_slices(box))], label[geometry.box_slices(box)]
        else:
            image, label = load_case(self.cache, entry)
            box = self.localisation(entry, rng)
            if box is None:  # target absent from this case: a random window (all background)
                c = tuple(int(rng.integers(0, s)) for s in label.shape)
                box = (c, tuple(x + 1 for x in c))
            jitter = int(self.cfg.get("box_jitter", 0))
            if jitter:
                shift = rng.integers(-jitter, jitter + 1, size=3)
                box = tuple(tuple(int(b + d) for b, d in zip(corner, shift)) for corner in box)
            box = geometry.expand_box(box, self.margin, label.shape)
            if self.patch:  # fixed-size windows: constant shapes run faster (kernel caches) and batch simply
                box = fixed_window(box, self.patch, rng)
            else:
                box = limit_box(box, self.cfg.get("max_crop"), rng)
            image = crop_padded(image, box)
            label = (crop_padded(label, box) == self.target.coarse_index).astype(np.uint8)
        if self.augmenter is not None:
            image, label = self.augmenter(image, label, seed)
        return torch.from_numpy(np.ascontiguousarray(image)), torch.from_numpy(np.ascontiguousarray(label)).long()


class PadCollate:
    """Batch samples of different sizes: pad each (image with 0, label with background) to the batch's
    largest size rounded up to the network's required multiple."""

    def __init__(self, multiple: tuple[int, int, int]):
        self.multiple = tuple(int(m) for m in multiple)

    def __call__(self, batch):
        sizes = np.array([b[1].shape for b in batch])
        target = [int(-(-s // m) * m) for s, m in zip(sizes.max(0), self.multiple)]
        images, labels = [], []
        for image, label in batch:
            pads = []
            for s, t in zip(reversed(label.shape), reversed(target)):
                before = (t - s) // 2
                pads += [before, t - s - before]
            images.append(torch.nn.functional.pad(image, pads))
            labels.append(torch.nn.functional.pad(label, pads))
        return torch.stack(images), torch.stack(labels)[:, None]
