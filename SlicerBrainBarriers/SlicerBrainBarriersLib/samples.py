"""Where the sample case is: next to the module in Slicer's build and install trees (CMake copies
it to ``<module>/Resources/SampleData``), or at the top of a source checkout."""

from __future__ import annotations

from pathlib import Path

from brainbarriers.structures import MODALITIES

MODULE_DIR = Path(__file__).resolve().parents[1]
SAMPLE_NAME = "BrainBarriersSample"


def sample_folder() -> Path | None:
    for folder in (MODULE_DIR / "Resources" / "SampleData", MODULE_DIR.parent / "Resources" / "SampleData"):
        if all((folder / f"sample_{m}.nrrd").is_file() for m in MODALITIES):
            return folder
    return None


def sample_files() -> dict[str, Path]:
    """Modality -> file; raises FileNotFoundError naming both places looked in."""
    folder = sample_folder()
    if folder is None:
        raise FileNotFoundError(
            f"sample case not found in {MODULE_DIR / 'Resources' / 'SampleData'} or {MODULE_DIR.parent / 'Resources' / 'SampleData'}"
        )
    return {m: folder / f"sample_{m}.nrrd" for m in MODALITIES}
