"""The models the panel offers: installed bundles plus the entries of a models index.

Reads manifests as plain JSON (no torch needed), so the list shows before dependencies exist.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_MODEL = "brainbarriers-demo"


@dataclass
class ModelEntry:
    id: str
    version: str
    description: str = ""
    modalities: list[str] = field(default_factory=list)
    supported_subsets: list[list[str]] = field(default_factory=list)
    size_bytes: int | None = None
    downloaded: bool = False
    cpu_s: float | None = None
    gpu_s: float | None = None
    path: str | None = None
    licence: str = ""

    @property
    def reference(self) -> str:
        """What the command line's --model takes."""
        return self.path if self.downloaded and self.path else f"{self.id}@{self.version}"

    def label(self) -> str:
        """Short line for the model selector: id, version, inputs, size, download state."""
        state = "" if self.downloaded else ", not downloaded"
        return f"{self.id} {self.version} ({_inputs(self.modalities)}, {_size(self.size_bytes)}{state})"

    def input_problem(self, modalities: list[str]) -> str | None:
        """Why these inputs cannot go to this model (None when they can): the manifest's
        supported subsets are exact combinations, checked before anything starts."""
        subsets = self.supported_subsets or ([self.modalities] if self.modalities else [])
        if not subsets or sorted(modalities) in [sorted(s) for s in subsets]:
            return None
        given = _inputs(m for m in ("ct", "t1", "t2") if m in modalities) if modalities else "no input"
        options = " or ".join(_inputs(s) for s in subsets)
        return f"Model {self.id} {self.version} takes {options}; you selected {given}."

    def card_and_licence(self) -> tuple[str, str]:
        """The model card (Markdown) and the licence text of an installed bundle."""
        if not self.path:
            return (f"{self.id} {self.version} is not downloaded yet; its card and licence come with it.\n\n"
                    f"{self.description}\nLicence: {self.licence or 'see the models index'}", "")
        folder = Path(self.path)
        return _read_text(folder / "MODEL_CARD.md") or self.description, _read_text(folder / "LICENSE") or self.licence

    def details(self) -> str:
        """Lines under the selector (and its tooltip): inputs, size, state, measured times."""
        subsets = "; ".join(_inputs(s) for s in self.supported_subsets) or _inputs(self.modalities)
        state = "downloaded" if self.downloaded else "not downloaded (fetched on first use)"
        lines = [
            self.description,
            f"Inputs: {_inputs(self.modalities)} (works with {subsets})",
            f"Size: {_size(self.size_bytes)}, {state}",
            f"Measured time: CPU {_secs(self.cpu_s)}, GPU {_secs(self.gpu_s)}",
        ]
        return "\n".join(line for line in lines if line)


def entry_from_manifest(manifest: dict, folder: Path | None = None) -> ModelEntry:
    inputs = manifest.get("inputs", {})
    timings = manifest.get("timings") or {}
    files = manifest.get("files") or []
    size = sum(int(f.get("size", 0)) for f in files) if files else manifest.get("size")
    return ModelEntry(
        id=str(manifest["id"]),
        version=str(manifest["version"]),
        description=str(manifest.get("description", "")),
        modalities=list(inputs.get("modalities", [])),
        supported_subsets=[list(s) for s in inputs.get("supported_subsets", [])],
        size_bytes=size,
        downloaded=folder is not None,
        cpu_s=timings.get("cpu_s"),
        gpu_s=timings.get("gpu_s"),
        path=str(folder) if folder is not None else None,
        licence=str(manifest.get("licence", "")),
    )


def list_models(rows: list[dict] | None = None) -> list[ModelEntry]:
    """Models of the index and installed bundles; the default model first, then installed ones.

    Args:
        rows: ``brainbarriers.bundles.index.list_models()`` rows (index entries with "installed":
            folder or None); None = ask the core package.
    """
    if rows is None:
        rows = _index_rows()
    entries = []
    for row in rows:
        folder = Path(row["installed"]) if row.get("installed") else None
        manifest = _read_manifest(folder) if folder else None
        entry = entry_from_manifest(manifest or row, folder)
        timings = row.get("timings") or {}
        entry.cpu_s = timings.get("cpu_s") if timings.get("cpu_s") is not None else entry.cpu_s
        entry.gpu_s = timings.get("gpu_s") if timings.get("gpu_s") is not None else entry.gpu_s
        entry.description = row.get("description") or entry.description
        entries.append(entry)
    entries.sort(key=lambda e: (e.id != DEFAULT_MODEL, not e.downloaded, e.id, e.version))
    return entries


def _read_manifest(folder: Path) -> dict | None:
    try:
        return json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _index_rows() -> list[dict]:
    try:
        from brainbarriers.bundles.index import list_models as core_list_models

        return core_list_models()
    except Exception:  # no platformdirs yet, unreadable index: show what ships with the module
        from brainbarriers.bundles.cache import SHIPPED_DIR

        return [{"id": p.parent.name, "version": "", "installed": str(p.parent)} for p in sorted(SHIPPED_DIR.glob("*/manifest.json"))]


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError:
        return ""


def _inputs(modalities) -> str:
    return "+".join(m.upper() for m in modalities) or "?"


def _size(n: int | None) -> str:
    if not n:
        return "size ?"
    return f"{n / 2**20:.1f} MB" if n < 2**30 else f"{n / 2**30:.2f} GB"


def _secs(s: float | None) -> str:
    if s is None:
        return "not measured"
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.1f} min"
