"""The structure table: the single description of every target and output label.

Everything else (networks, losses, pipeline, export, training, the Slicer module) reads this
table; nothing else hard-codes a structure's label, colour, code, network variant or theta.

Two levels:

* ``FINE_TARGETS``: the six binary targets that each get a fine network. The data set's sinus
  label (3) is split into a sagittal and a transverse part for training; both map to output
  label 3.
* ``OUTPUT_LABELS``: the five labels written out, with the ABCs 2020 task-1 label values.

Terminology: SNOMED CT codes are used only where verified (cerebellum, brain ventricle,
anatomical-structure category). Falx cerebri, tentorium cerebelli and the dural venous sinuses
have no verified code at hand, so they use the private coding scheme ``PRIVATE_SCHEME`` (DICOM
private schemes start with "99"); its codes are documented in ``PRIVATE_CODES`` below and in
README.md.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

Variant = Literal["p", "s"]
PatientAxis = Literal["LR", "AP", "IS"]

#: Order of the input channels of every network.
MODALITIES: tuple[str, ...] = ("ct", "t1", "t2")

#: Private coding scheme designator for structures without a verified SNOMED CT code.
PRIVATE_SCHEME = "99SBB"
#: Documented private codes (designator PRIVATE_SCHEME). Never reuse or renumber a code.
PRIVATE_CODES: dict[str, str] = {
    "SBB001": "Falx cerebri",
    "SBB002": "Tentorium cerebelli",
    "SBB003": "Dural venous sinuses (superior sagittal and transverse)",
}

_CONTEXT = "Segmentation category and type - 3D Slicer General Anatomy list"
_ANATOMIC_CONTEXT = "Anatomic codes - DICOM master list"
_CATEGORY = ("SCT", "123037004", "Anatomical Structure")


@dataclass(frozen=True)
class Code:
    """A coded concept: (scheme designator, code value, code meaning)."""

    scheme: str
    value: str
    meaning: str

    def triple(self) -> str:
        return f"{self.scheme}^{self.value}^{self.meaning}"


@dataclass(frozen=True)
class OutputLabel:
    """One label of the written segmentation (ABCs task-1 values)."""

    value: int
    key: str
    name: str
    color: tuple[int, int, int]
    code: Code
    #: separate pieces expected at most (quality flag "components"); the ventricles' fourth
    #: ventricle joins the rest only through the thin aqueduct, so two pieces are normal
    components: int = 1

    @property
    def color_float(self) -> tuple[float, float, float]:
        return tuple(c / 255.0 for c in self.color)  # type: ignore[return-value]

    @property
    def segment_id(self) -> str:
        """Stable segment ID used in .seg.nrrd files and in Slicer."""
        return f"BrainBarriers_{self.key}"

    def terminology(self) -> str:
        """Slicer terminology entry string (vtkSegment.SetTerminology format)."""
        empty = "^^"
        return "~".join(
            [
                _CONTEXT,
                Code(*_CATEGORY).triple(),
                self.code.triple(),
                empty,
                _ANATOMIC_CONTEXT,
                empty,
                empty,
            ]
        )


@dataclass(frozen=True)
class FineTarget:
    """One binary fine-segmentation target.

    Attributes:
        key: identifier used on the command line and in file names.
        name: display name.
        label: output label value this target is written into.
        variant: "p" (HMRNet-p, 3D convolutions) or "s" (HMRNet-s, 2.5D).
        slice_axis: for -s targets, the patient direction across which the structure is thin
            (the inter-slice direction of the 1x1x3 convolutions); None for -p targets.
        theta: false-negative weight of the fn-weighted Dice loss (paper, 5-fold CV).
        margin: crop margin in voxels at the model spacing around the coarse box.
        coarse_index: channel of this target in the coarse network's output (0 = background).
    """

    key: str
    name: str
    label: int
    variant: Variant
    slice_axis: PatientAxis | None
    theta: float
    margin: int
    coarse_index: int


OUTPUT_LABELS: tuple[OutputLabel, ...] = (
    OutputLabel(1, "cerebellum", "Cerebellum", (230, 170, 60), Code("SCT", "113305005", "Cerebellum")),
    OutputLabel(2, "falx", "Falx cerebri", (240, 70, 70), Code(PRIVATE_SCHEME, "SBB001", "Falx cerebri")),
    OutputLabel(
        3,
        "sinuses",
        "Venous sinuses",
        (40, 90, 250),
        Code(PRIVATE_SCHEME, "SBB003", "Dural venous sinuses"),
    ),
    OutputLabel(4, "tentorium", "Tentorium cerebelli", (170, 80, 230), Code(PRIVATE_SCHEME, "SBB002", "Tentorium cerebelli")),
    OutputLabel(5, "ventricles", "Ventricles", (60, 200, 120), Code("SCT", "35764002", "Brain ventricle"), 2),
)

FINE_TARGETS: tuple[FineTarget, ...] = (
    FineTarget("cerebellum", "Cerebellum", 1, "p", None, 2.0, 10, 1),
    FineTarget("falx", "Falx cerebri", 2, "s", "LR", 3.0, 10, 2),
    FineTarget("sagittal_sinus", "Sagittal sinus", 3, "s", "LR", 3.0, 5, 3),
    FineTarget("transverse_sinus", "Transverse sinus", 3, "s", "IS", 2.0, 5, 4),
    FineTarget("tentorium", "Tentorium cerebelli", 4, "p", None, 3.5, 10, 5),
    FineTarget("ventricles", "Ventricles", 5, "p", None, 2.5, 10, 6),
)

#: Number of coarse-network output channels: background + one per fine target.
COARSE_CHANNELS = 1 + len(FINE_TARGETS)


def output_label(key_or_value: str | int) -> OutputLabel:
    """Look up an output label by key ("falx"), display name or label value (2)."""
    for lab in OUTPUT_LABELS:
        if key_or_value in (lab.key, lab.name, lab.value):
            return lab
    raise KeyError(f"unknown output label {key_or_value!r}; known: {[lab.key for lab in OUTPUT_LABELS]}")


def fine_target(key: str) -> FineTarget:
    """Look up a fine target by key ("transverse_sinus") or display name."""
    for t in FINE_TARGETS:
        if key in (t.key, t.name):
            return t
    raise KeyError(f"unknown structure {key!r}; known: {[t.key for t in FINE_TARGETS]}")


def targets_for_labels(keys: list[str] | None) -> tuple[FineTarget, ...]:
    """Fine targets needed to produce the given output labels or fine targets (None = all).

    Accepts output-label keys ("sinuses" selects both sinus parts) and fine-target keys.
    """
    if not keys:
        return FINE_TARGETS
    chosen: list[FineTarget] = []
    for key in keys:
        try:
            value = output_label(key).value
            chosen.extend(t for t in FINE_TARGETS if t.label == value)
        except KeyError:
            chosen.append(fine_target(key))
    return tuple(t for t in FINE_TARGETS if t in chosen)


def with_overrides(target: FineTarget, **changes: object) -> FineTarget:
    """A copy of ``target`` with some fields changed (e.g. slice_axis from a config file)."""
    return replace(target, **changes)  # type: ignore[arg-type]
