"""The ``--dicom-seg`` / ``--rtstruct`` outputs of ``segment`` and ``segment-batch``.

``dicom_outputs`` checks, before anything is segmented, that the reference input (CT when given,
else T1, else T2: the pipeline's choice) is a DICOM series folder and that the output folder is not
inside it, and returns ``{kind: (path, writer)}`` entries that ``cases.run_case`` writes atomically
with the other outputs.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ..errors import InputError
from ..structures import MODALITIES

DICOM_KINDS = ("dicom_seg", "rtstruct")

Writer = Callable[[Path, object, "list[int]", object], None]


def require_libraries(*names: str) -> None:
    """One-line error when the optional DICOM libraries are missing."""
    import importlib.util

    from ..errors import BrainBarriersError

    missing = [n for n in (names or ("pydicom", "highdicom")) if importlib.util.find_spec(n) is None]
    if missing:
        raise BrainBarriersError(f"the DICOM features need {', '.join(missing)}: pip install 'brainbarriers[dicom]'")


def dicom_paths(out_dir: str | Path, case: str, seg: bool, rtstruct: bool) -> dict[str, Path]:
    d = Path(out_dir)
    paths = {}
    if seg:
        paths["dicom_seg"] = d / f"{case}_seg.dcm"
    if rtstruct:
        paths["rtstruct"] = d / f"{case}_rtstruct.dcm"
    return paths


def reference_modality(inputs: dict) -> str:
    """The reference input's modality (CT first, as ``pipeline.choose_reference``)."""
    return next(m for m in MODALITIES if m in inputs)


def check_dicom_reference(inputs: dict[str, str | Path], out_dir: str | Path) -> Path:
    """The reference DICOM folder; InputError (one line) when it is not one or holds the output folder."""
    from .series import is_dicom_series

    modality = reference_modality(inputs)
    folder = Path(inputs[modality]).expanduser()
    if not is_dicom_series(folder):
        raise InputError(
            f"--dicom-seg/--rtstruct need a DICOM series folder as the reference input; {modality} {folder} is not one"
        )
    out = Path(out_dir).expanduser().resolve()
    src = folder.resolve()
    if out == src or src in out.parents:
        raise InputError(f"output folder {out_dir} is inside the source DICOM folder {folder}; choose another one")
    return folder


def dicom_outputs(inputs: dict[str, str | Path], out_dir: str | Path, case: str, seg: bool,
                  rtstruct: bool) -> dict[str, tuple[Path, Writer]]:
    """Extra outputs for ``run_case``: ``{kind: (final path, writer(tmp_path, result, values, bundle))}``."""
    if not (seg or rtstruct):
        return {}
    require_libraries()
    from .series import load_source_series

    folder = check_dicom_reference(inputs, out_dir)
    series = load_source_series(folder)  # a damaged series is refused here, before it is segmented

    def source():
        return series

    def write_seg(path: Path, result, values: list[int], bundle) -> None:
        from .common import AlgorithmInfo
        from .seg import write_seg as write

        write(path, source(), result.labels, values, AlgorithmInfo.from_bundle(bundle))

    def write_rtstruct(path: Path, result, values: list[int], bundle) -> None:
        from .common import AlgorithmInfo
        from .rtstruct import write_rtstruct as write

        write(path, source(), result.labels, values, AlgorithmInfo.from_bundle(bundle))

    paths = dicom_paths(out_dir, case, seg, rtstruct)
    writers = {"dicom_seg": write_seg, "rtstruct": write_rtstruct}
    return {kind: (path, writers[kind]) for kind, path in paths.items()}


def export_labels(series, labels, values: list[int], out_dir: str | Path, case: str, seg: bool, rtstruct: bool,
                  algorithm, edited: frozenset[int] = frozenset(), overwrite: bool = False) -> dict[str, str]:
    """Write SEG and/or RTSTRUCT of a label image on ``series``' grid into ``out_dir`` (atomically).

    The entry point for callers that already hold the labels (the Slicer module's edited result).
    """
    from .. import export
    from .rtstruct import write_rtstruct
    from .seg import write_seg

    require_libraries()
    paths = dicom_paths(out_dir, case, seg, rtstruct)
    if not paths:
        raise InputError("choose at least one of SEG and RTSTRUCT")
    export.prepare_output_dir(out_dir, paths, overwrite)
    with export.AtomicOutputs(paths) as out:
        if seg:
            write_seg(out.temp["dicom_seg"], series, labels, values, algorithm, edited)
        if rtstruct:
            write_rtstruct(out.temp["rtstruct"], series, labels, values, algorithm, edited)
        return out.commit()
