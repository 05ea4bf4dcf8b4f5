"""Model bundles: a folder with manifest.json, safetensors weights, MODEL_CARD.md (+ LICENSE).

``write_bundle`` writes one (training export, the demo model, test fixtures); ``load_bundle``
finds one by path or id, validates its manifest against the schema and checks every file's
size and SHA-256 before anything is read; ``Bundle.build_network`` builds a network through
``brainbarriers.networks.build`` and loads its weights (safetensors: never unpickled).
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import BundleError, InputError
from ..structures import fine_target
from .cache import find_installed, installed_bundles
from .schema import validate_manifest
from .verify import file_entry, sha256_file, verify_files

if TYPE_CHECKING:
    import torch

MANIFEST = "manifest.json"
DEFAULT_MAX_CROP = (128, 128, 128)


@dataclass
class Bundle:
    """A loaded, verified model bundle."""

    path: Path
    manifest: dict

    @property
    def id(self) -> str:
        return self.manifest["id"]

    @property
    def version(self) -> str:
        return self.manifest["version"]

    @property
    def structures(self) -> list[str]:
        return list(self.manifest["structures"])

    @property
    def modalities(self) -> list[str]:
        return list(self.manifest["inputs"]["modalities"])

    @property
    def supported_subsets(self) -> list[list[str]]:
        return [list(s) for s in self.manifest["inputs"].get("supported_subsets", [self.modalities])]

    @property
    def spacing(self) -> tuple[float, float, float]:
        return tuple(float(s) for s in self.manifest["spacing"])  # type: ignore[return-value]

    @property
    def coarse_spacing(self) -> tuple[float, float, float]:
        return tuple(float(s) for s in self.manifest["networks"]["coarse"].get("spacing", self.spacing))  # type: ignore[return-value]

    def normalisation(self, modality: str) -> dict:
        return dict(self.manifest.get("normalisation", {}).get(modality, {}))

    def network_spec(self, stage: str) -> dict:
        """Manifest entry of "coarse" or a fine-target key, with defaults filled in."""
        nets = self.manifest["networks"]
        if stage == "coarse":
            spec = dict(nets["coarse"])
            spec.setdefault("spacing", list(self.spacing))
        elif stage in nets["fine"]:
            spec = dict(nets["fine"][stage])
            target = fine_target(stage)
            spec.setdefault("slice_axis", target.slice_axis)
            spec.setdefault("margin", target.margin)
        else:
            raise BundleError(f"model {self.id} has no network for '{stage}'; it segments {self.structures}")
        spec.setdefault("options", {})
        spec.setdefault("max_crop", list(DEFAULT_MAX_CROP))
        return spec

    @property
    def sha256(self) -> str:
        """SHA-256 of the manifest file (it pins every other file's SHA-256)."""
        return sha256_file(self.path / MANIFEST)

    def used_modalities(self, available: list[str] | set[str]) -> list[str]:
        """The model's modalities among ``available``; refuses an unsupported subset (InputError)."""
        used = [m for m in self.modalities if m in set(available)]
        if sorted(used) not in [sorted(s) for s in self.supported_subsets]:
            options = ", ".join("+".join(s) for s in self.supported_subsets)
            given = "+".join(used) or "none"
            raise InputError(f"model {self.id} cannot run on {given}; it accepts: {options}")
        return used

    def build_network(self, stage: str, device: torch.device | str | None = None, **overrides: Any) -> torch.nn.Module:
        """Build the network of ``stage`` ("coarse" or a fine-target key) with its weights, in eval mode
        (a fine network with ``ensemble`` members: the mean of their probabilities, ``MeanOfMembers``).

        Args:
            stage: "coarse" or a fine-target key listed in the manifest.
            device: where to put the network (default CPU).
            overrides: network options replacing the manifest's (must keep the weight shapes).
        """
        import torch
        from safetensors.torch import load as load_safetensors

        from ..networks import build
        from ..networks.ensemble import MeanOfMembers

        spec = self.network_spec(stage)
        expected = {f["path"]: f["sha256"] for f in self.manifest["files"]}
        options = {**spec["options"], **overrides}
        members = []
        for name in [spec["file"], *spec.get("ensemble", [])]:
            data = (self.path / name).read_bytes()  # read once: the bytes checked are the bytes loaded
            if hashlib.sha256(data).hexdigest() != expected.get(name):
                raise BundleError(f"model {self.id}: SHA-256 mismatch for {name} (corrupt or tampered)")
            member = build(spec["architecture"], spec["in_channels"], spec["out_channels"], **options)
            try:
                member.load_state_dict(load_safetensors(data), strict=True)
            except RuntimeError as exc:
                first = str(exc).strip().splitlines()[0]
                raise BundleError(f"model {self.id}: weights of {stage} ({name}) do not fit the network ({first})") from None
            members.append(member)
        net = members[0] if len(members) == 1 else MeanOfMembers(members)
        net.eval()
        return net.to(torch.device(device) if device is not None else torch.device("cpu"))


def _model_card(manifest: dict) -> str:
    lines = [
        f"# {manifest['id']} {manifest['version']}",
        "",
        manifest.get("description", ""),
        "",
        f"- Licence: {manifest['licence']}",
        f"- Structures: {', '.join(manifest['structures'])}",
        f"- Inputs: {', '.join(manifest['inputs']['modalities'])}",
        f"- Spacing: {manifest['spacing']} mm",
    ]
    for key, value in manifest.get("training", {}).items():
        lines.append(f"- Training {key}: {value}")
    return "\n".join(lines) + "\n"


def write_bundle(
    directory: str | Path,
    manifest: dict,
    state_dicts: dict[str, dict[str, torch.Tensor]],
    extra_files: dict[str, str | Path] | None = None,
) -> Path:
    """Write a bundle folder: weights as safetensors, extra files, manifest with sizes and SHA-256.

    Args:
        directory: bundle folder (created).
        manifest: the manifest without "files" (filled here); "schema_version" defaults to 1.
        state_dicts: file name (e.g. "coarse.safetensors") -> state dict.
        extra_files: file name in the bundle -> source path (MODEL_CARD.md, LICENSE, ...).
            A MODEL_CARD.md is generated from the manifest when none is given.
    Returns:
        The bundle folder.
    """
    from safetensors.torch import save_file

    directory = Path(directory)
    manifest = copy.deepcopy(manifest)
    manifest.setdefault("schema_version", 1)
    manifest["files"] = []
    validate_manifest(manifest, f"for {directory}")
    directory.mkdir(parents=True, exist_ok=True)
    names: list[str] = []
    for name, state in state_dicts.items():
        tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}
        # one metadata entry only: safetensors writes its metadata map in no fixed order, so two
        # entries would give different bytes (and SHA-256) for the same weights from run to run
        save_file(tensors, str(directory / name), metadata={"format": "pt"})
        names.append(name)
    for name, source in (extra_files or {}).items():
        if Path(source).resolve() != (directory / name).resolve():
            shutil.copyfile(source, directory / name)
        names.append(name)
    card = manifest.setdefault("model_card", "MODEL_CARD.md")
    if card not in names:
        (directory / card).write_text(_model_card(manifest), encoding="utf-8")
        names.append(card)
    manifest["files"] = [file_entry(directory, name) for name in sorted(set(names))]
    validate_manifest(manifest, f"for {directory}")
    tmp = directory / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, directory / MANIFEST)
    return directory


def read_manifest(folder: Path) -> dict:
    try:
        return json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except OSError:
        raise BundleError(f"no readable {MANIFEST} in {folder}") from None
    except ValueError as exc:
        raise BundleError(f"{folder / MANIFEST} is not valid JSON ({exc})") from None


def resolve_bundle_path(name_or_path: str | Path) -> Path:
    """Folder of a bundle given its folder, its manifest.json, an id or ``id@version``."""
    path = Path(name_or_path).expanduser()
    if path.name == MANIFEST and path.is_file():
        return path.parent
    if path.is_dir():
        return path
    name = str(name_or_path)
    model_id, _, version = name.partition("@")
    found = find_installed(model_id, version or None)
    if found is None:
        known = sorted({f"{i}@{v}" for i, v, _ in installed_bundles()})
        hint = f"installed: {', '.join(known)}" if known else "no model is installed"
        raise BundleError(
            f"model '{name}' is neither a bundle folder nor an installed model ({hint}); "
            f"try `brainbarriers models download {model_id}`"
        )
    return found


def load_bundle(name_or_path: str | Path, verify: bool = True) -> Bundle:
    """Find, validate and verify a bundle (every file's size and SHA-256)."""
    folder = resolve_bundle_path(name_or_path)
    manifest = read_manifest(folder)
    validate_manifest(manifest, str(folder / MANIFEST))
    if verify:
        verify_files(folder, manifest["files"], f"{manifest['id']}@{manifest['version']}")
    return Bundle(folder, manifest)
