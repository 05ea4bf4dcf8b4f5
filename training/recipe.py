"""The training recipe as typed, validated data; its defaults (the paper's recipe) live only here.

A recipe file (training/configs/*.json) names only what it changes; ``Recipe.from_dict`` checks
every key and value against the dataclasses below and fills in the rest. An unknown or misspelt
key, or a value of the wrong type, is a ``ConfigError`` naming the key and the file.

The ``coarse`` and ``fine`` sections hold their stage's own settings and may also override any
``train`` setting for that stage (e.g. ``"coarse": {"epochs": 10}``); ``Recipe.stage`` gives the
stage's merged settings, typed, and ``stage_dict`` the same as a plain dict.

Sources of the defaults: HMRNet paper (SGD lr 0.01, poly 0.9, weight decay 1e-5, 300 epochs,
fn-Dice + CE with per-structure theta, deep supervision 0.3/0.3/0.4, rotation/elastic/gamma/flip
augmentation, ground-truth box + 10 voxel margin); the rest follows nnU-Net v2's defaults.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import typing
from dataclasses import dataclass, field
from typing import Any, Literal, Optional, Union

from brainbarriers.structures import FINE_TARGETS, MODALITIES


class ConfigError(ValueError):
    """A recipe file or override is invalid (reported as a one-line error)."""


Triple = tuple[float, float, float]
Shape = tuple[int, int, int]
PatientAxisName = Literal["LR", "AP", "IS"]


@dataclass(frozen=True)
class Normalisation:
    """As the manifest's ``normalisation`` entries: an unset step is left out, not null."""

    _omit_none = True
    clip: Optional[tuple[float, float]] = None
    percentiles: Optional[tuple[float, float]] = None


@dataclass(frozen=True)
class SinusSplit:
    slab_half_width_mm: float = 10.0
    margin_mm: float = 2.0


def _default_normalisation() -> dict[str, Normalisation]:
    return {"ct": Normalisation(clip=(-100.0, 200.0)), "t1": Normalisation(), "t2": Normalisation()}


@dataclass(frozen=True)
class DataSettings:
    spacing: Triple = (1.2, 1.2, 1.2)
    coarse_spacing: Triple = (2.4, 2.4, 2.4)
    normalisation: dict[str, Normalisation] = field(default_factory=_default_normalisation)
    sinus_split: SinusSplit = SinusSplit()
    geometry_tolerance_mm: float = 0.01


@dataclass(frozen=True)
class Optimizer:
    name: Literal["sgd", "adam", "adamw"] = "sgd"
    lr: float = 0.01
    momentum: float = 0.99
    nesterov: bool = True
    weight_decay: float = 1e-5


@dataclass(frozen=True)
class Schedule:
    name: Literal["poly", "constant"] = "poly"
    power: float = 0.9


@dataclass(frozen=True)
class Augmentation:
    affine_probability: float = 0.3
    rotation_degrees: float = 15.0
    scales: tuple[float, float] = (0.85, 1.15)
    elastic_probability: float = 0.2
    elastic_control_points: int = 7
    elastic_max_displacement_mm: float = 6.0
    flip_axes: tuple[PatientAxisName, ...] = ("LR",)
    flip_probability: float = 0.5
    gamma_probability: float = 0.3
    log_gamma: tuple[float, float] = (-0.35, 0.35)
    contrast_probability: float = 0.15
    contrast_range: tuple[float, float] = (0.75, 1.25)
    brightness_range: tuple[float, float] = (-0.1, 0.1)
    noise_probability: float = 0.1
    noise_std: float = 0.1
    modality_dropout_probability: float = 0.0
    #: Probability of a step that keeps one of the case's modalities, drawn at random, and zeroes the
    #: others (before modality dropout, which then does not apply). Raises the share of one-input
    #: steps, the weakest case under plain dropout (a T1 alone: 1 step in 10 at dropout 0.6).
    single_modality_probability: float = 0.0


@dataclass(frozen=True)
class TrainSettings:
    """Settings of the training loop; each stage section may override any of them."""

    epochs: int = 300
    iterations_per_epoch: int = 250
    batch_size: int = 2
    optimizer: Optimizer = Optimizer()
    schedule: Schedule = Schedule()
    grad_clip: Optional[float] = 12.0
    #: (1/8, 1/4, 1/2) decoder levels, added to the full-resolution loss (paper eq. 11).
    deep_supervision_weights: tuple[float, ...] = (0.3, 0.3, 0.4)
    amp: bool = True
    #: Train in the channels-last memory layout (network and input). On CPU it made the coarse
    #: U-Net's steps about 1.4x faster, and HMRNet-s's slower (bench/bench_cpu_conv.py); the
    #: weights are saved in the usual layout either way.
    channels_last: bool = False
    num_workers: int = 4
    checkpoint_every_steps: int = 250
    progress: bool = True
    tensorboard: bool = True
    threads: Optional[int] = None
    augmentation: Augmentation = Augmentation()


@dataclass(frozen=True)
class Loss:
    #: "difficulty_ce": HMEDN's difficulty-guided CE; "hmedn": that CE + side outputs, HR pathway and
    #: contour regression (HMEDN eq. 6); "focusnet": Dice + CE + heat maps + small-structure masks.
    name: Literal["dice_ce", "fn_dice_ce", "difficulty_ce", "hmedn", "focusnet"] = "dice_ce"
    #: fn-Dice false-negative weight: a number, or "table" for the per-structure values of the paper.
    theta: Union[float, Literal["table"]] = "table"
    #: FocusNetv2's adversarial shape constraint (with "focusnet" on a focusnetv2 network): a shape
    #: autoencoder trained alternately with the network (losses_zoo.ShapeAdversary, paper eqs. 7-8).
    shape_constraint: bool = False


PatchSize = Union[Shape, dict[str, Shape], None]


@dataclass(frozen=True)
class CoarseStage:
    architecture: str = "coarse-unet"
    options: dict[str, Any] = field(default_factory=dict)
    loss: Loss = Loss("dice_ce")
    patch_size: PatchSize = None
    #: with ``patch_size``: train on windows only in the first this many epochs, then on whole heads
    #: (None: windows throughout). A window's steps are cheaper, and the last epochs on whole heads
    #: give the localiser the whole-head context it sees at inference.
    patch_epochs: Optional[int] = None
    #: fractions of training whose checkpoints predict the boxes the fine stage trains on (paper).
    box_checkpoints: tuple[float, ...] = (0.3333333, 0.6666667, 1.0)


@dataclass(frozen=True)
class FineNetwork:
    architecture: str
    options: dict[str, Any] = field(default_factory=dict)


def _default_networks() -> dict[str, FineNetwork]:
    # Leaky ReLU (the release's; the paper says ReLU): with ReLU a thin target's network can die
    # (every input of its head zero on the target, no gradient back), measured on the smoke gate.
    return {"p": FineNetwork("hmrnet-p", {"activation": "leaky_relu"}),
            "s": FineNetwork("hmrnet-s", {"activation": "leaky_relu"})}


@dataclass(frozen=True)
class FineStage:
    networks: dict[Literal["p", "s"], FineNetwork] = field(default_factory=_default_networks)
    loss: Loss = Loss("fn_dice_ce", "table")
    #: crop margin in voxels around the box, or "table" for the structure table's margins.
    margin: Union[int, Literal["table"]] = "table"
    max_crop: Shape = (128, 128, 128)
    patch_size: PatchSize = None
    box_source: Literal["coarse_checkpoints", "ground_truth"] = "coarse_checkpoints"
    box_jitter: int = 0
    #: per fine target, a patient direction ("LR", "AP", "IS") replacing the structure table's
    #: inter-slice direction (ablations: a deliberately wrong axis).
    slice_axes: dict[str, Literal["LR", "AP", "IS"]] = field(default_factory=dict)


@dataclass(frozen=True)
class FinetuneSettings:
    """``finetune``: a short schedule at a fraction of each stage's learning rate, and the held-out check."""

    epochs: int = 10
    iterations_per_epoch: int = 250
    #: multiplies each stage's optimizer learning rate
    lr_factor: float = 0.1
    #: share of the site cases kept out of training and used to compare with the parent
    holdout_fraction: float = 0.25
    #: the held-out mean Dice must reach the parent's plus this, or nothing is exported
    min_gain: float = 0.0
    seed: int = 0


@dataclass(frozen=True)
class BundleInfo:
    id: str = "brainbarriers-model"
    version: str = "0.1.0"
    description: str = "HMRNet brain-barrier segmentation trained with the paper's recipe"
    licence: str = "Apache-2.0"
    data: str = "ABCs 2020 task 1 training cases"
    #: fine-target key -> axes whose flips the exported network's output is averaged over at
    #: inference, at every quality (only "LR": the networks train with left-right flips alone)
    test_time_flips: dict[str, tuple[Literal["LR"], ...]] = field(default_factory=dict)


STAGES = ("coarse", "fine")
_TRAIN_KEYS = frozenset(f.name for f in dataclasses.fields(TrainSettings))


@dataclass(frozen=True)
class Recipe:
    name: str = "paper"
    description: str = ""
    #: "one-stage" (Table VI baselines): the ``coarse`` section's network segments every fine
    #: target at once on the whole head at ``data.spacing``; the ``fine`` section is unused.
    mode: Literal["two-stage", "one-stage"] = "two-stage"
    seed: int = 12345
    data: DataSettings = DataSettings()
    train: TrainSettings = TrainSettings()
    coarse: CoarseStage = CoarseStage()
    fine: FineStage = FineStage()
    finetune: FinetuneSettings = FinetuneSettings()
    bundle: BundleInfo = BundleInfo()
    #: per-stage overrides of ``train`` settings, as written in the file's stage sections.
    stage_overrides: dict[str, dict[str, Any]] = field(default_factory=dict, compare=True)

    # ------------------------------------------------------------------ reading and writing
    @classmethod
    def from_dict(cls, data: dict, source: str = "recipe") -> Recipe:
        """Validate a complete or partial recipe dict (missing keys take the defaults)."""
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: a recipe must be a JSON object")
        data = deep_merge(_DEFAULTS, data)  # a file names only what it changes
        overrides: dict[str, dict] = {}
        for stage in STAGES:
            section = data.get(stage)
            if isinstance(section, dict):
                overrides[stage] = {k: v for k, v in section.items() if k in _TRAIN_KEYS}
                data[stage] = {k: v for k, v in section.items() if k not in _TRAIN_KEYS}
        if "stage_overrides" in data:
            raise ConfigError(f"{source}: unknown key 'stage_overrides'")
        recipe = _build(cls, data, "", source)
        train = _to_plain(recipe.train)
        for stage, values in overrides.items():
            # validate the merged stage settings so a bad override names its own key
            _build(TrainSettings, deep_merge(train, values), stage, source)
        return dataclasses.replace(recipe, stage_overrides={k: v for k, v in overrides.items() if v})

    def to_dict(self) -> dict:
        """The complete recipe as plain JSON data (the form saved with a run and read back)."""
        out = _to_plain(self)
        overrides = out.pop("stage_overrides")
        for stage in STAGES:
            out[stage].update(copy.deepcopy(overrides.get(stage, {})))
        return out

    # ------------------------------------------------------------------ stage settings
    def stage(self, stage: str) -> TrainSettings:
        """The ``train`` settings of one stage with the stage's overrides applied (typed)."""
        if stage not in STAGES:
            raise ValueError(f"unknown stage {stage!r} (coarse or fine)")
        merged = deep_merge(_to_plain(self.train), self.stage_overrides.get(stage, {}))
        return _build(TrainSettings, merged, stage, "recipe")

    def stage_dict(self, stage: str) -> dict:
        """One stage's settings as a plain dict: its ``train`` settings merged with the stage section."""
        return deep_merge(_to_plain(self.stage(stage)), _to_plain(getattr(self, stage)))

    def supported_subsets(self) -> list[list[str]]:
        """Modality subsets the networks were trained for: all non-empty subsets when both stages
        were trained with modality dropout, else only the full set."""
        import itertools

        if all(self.stage(s).augmentation.modality_dropout_probability > 0 for s in STAGES):
            return [list(c) for n in range(len(MODALITIES), 0, -1) for c in itertools.combinations(MODALITIES, n)]
        return [list(MODALITIES)]


# ---------------------------------------------------------------------- helpers
def deep_merge(base: dict, update: dict) -> dict:
    """A copy of ``base`` with ``update`` merged in (dicts merge recursively, other values replace)."""
    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _to_plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        omit = getattr(value, "_omit_none", False)
        return {f.name: _to_plain(getattr(value, f.name)) for f in dataclasses.fields(value)
                if not (omit and getattr(value, f.name) is None)}
    if isinstance(value, dict):
        return {k: _to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_plain(v) for v in value]
    return value


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _build(cls: type, data: Any, where: str, source: str):
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: '{where}' must be an object, not {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.name != "stage_overrides"]
    for key in data:
        if key not in names:
            near = difflib.get_close_matches(str(key), names, n=1)
            hint = f" (did you mean '{_join(where, near[0])}'?)" if near else f" (known: {', '.join(names)})"
            raise ConfigError(f"{source}: unknown key '{_join(where, str(key))}'{hint}")
    missing = [f.name for f in dataclasses.fields(cls)
               if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING and f.name not in data]
    if missing:
        raise ConfigError(f"{source}: '{_join(where, missing[0])}' is required")
    values = {}
    for key, value in data.items():
        default = next(f for f in dataclasses.fields(cls) if f.name == key)
        if dataclasses.is_dataclass(hints[key]) and isinstance(value, dict):
            # a partial section merges over the field's default
            base = default.default if default.default is not dataclasses.MISSING else None
            value = deep_merge(_to_plain(base), value) if base is not None else value
        values[key] = _coerce(hints[key], value, _join(where, key), source)
    return cls(**values)


def _describe(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " or ".join(repr(a) for a in typing.get_args(tp))
    if origin is Union:
        return " or ".join(_describe(a) for a in typing.get_args(tp))
    if origin in (tuple, list):
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_describe(args[0])}"
        return f"a list of {len(args)} values ({_describe(args[0])} each)"
    if origin is dict:
        return "an object"
    if tp is type(None):
        return "null"
    if dataclasses.is_dataclass(tp):
        return "an object"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(tp, str(tp))


#: Which JSON values each scalar field type accepts (a bool is never a number).
_SCALARS = {
    type(None): lambda v: v is None,
    bool: lambda v: isinstance(v, bool),
    int: lambda v: isinstance(v, int) and not isinstance(v, bool),
    float: lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    str: lambda v: isinstance(v, str),
}


def _coerce(tp: Any, value: Any, where: str, source: str) -> Any:
    def bad() -> ConfigError:
        return ConfigError(f"{source}: '{where}' must be {_describe(tp)}, not {value!r}")

    origin = typing.get_origin(tp)
    if tp is Any:
        return copy.deepcopy(value)
    if origin is Union:
        for option in typing.get_args(tp):
            try:
                return _coerce(option, value, where, source)
            except ConfigError as exc:
                if "unknown key" in str(exc) or "is required" in str(exc):
                    raise
        raise bad()
    if origin is Literal:
        if value in typing.get_args(tp) and not isinstance(value, bool):
            return value
        raise bad()
    if tp in _SCALARS:
        if _SCALARS[tp](value):
            return float(value) if tp is float else value
        raise bad()
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise bad()
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(args[0], v, f"{where}[{i}]", source) for i, v in enumerate(value))
        if len(value) != len(args):
            raise bad()
        return tuple(_coerce(a, v, f"{where}[{i}]", source) for i, (a, v) in enumerate(zip(args, value)))
    if origin is dict:
        key_type, value_type = typing.get_args(tp)
        if not isinstance(value, dict):
            raise bad()
        out = {}
        for k, v in value.items():
            if typing.get_origin(key_type) is Literal and k not in typing.get_args(key_type):
                raise ConfigError(f"{source}: unknown key '{where}.{k}' (known: {', '.join(typing.get_args(key_type))})")
            out[k] = _coerce(value_type, v, f"{where}.{k}", source)
        return out
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, where, source)
    raise TypeError(f"no rule for {tp}")  # a programming error in this module


def check_modalities(recipe: Recipe, source: str) -> None:
    unknown = set(recipe.data.normalisation) - set(MODALITIES)
    if unknown:
        raise ConfigError(f"{source}: unknown key 'data.normalisation.{sorted(unknown)[0]}' (known: {', '.join(MODALITIES)})")


def check_patches(recipe: Recipe, source: str) -> None:
    """Per-target window keys name fine targets; ``coarse.patch_epochs`` needs a coarse window."""
    known = {t.key for t in FINE_TARGETS} | {"default"}
    for stage in STAGES:
        patch = getattr(recipe, stage).patch_size
        if isinstance(patch, dict):
            for key in patch:
                if key not in known:
                    raise ConfigError(f"{source}: unknown key '{stage}.patch_size.{key}' (known: {', '.join(sorted(known))})")
    epochs = recipe.coarse.patch_epochs
    if epochs is not None and (epochs < 0 or not recipe.coarse.patch_size):
        raise ConfigError(f"{source}: 'coarse.patch_epochs' must be a count of epochs (0 or more) and needs "
                          f"'coarse.patch_size', not {epochs} with patch_size {recipe.coarse.patch_size}")


_DEFAULTS = Recipe().to_dict()
