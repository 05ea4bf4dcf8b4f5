"""The self-test finds the sample case in Slicer's build/install tree and in a source checkout."""

from __future__ import annotations

import pytest
from SlicerBrainBarriersLib import samples


def _write_case(folder):
    folder.mkdir(parents=True)
    for m in ("ct", "t1", "t2"):
        (folder / f"sample_{m}.nrrd").write_bytes(b"NRRD0004\n")
    return folder


def test_build_or_install_tree(tmp_path, monkeypatch):
    module_dir = tmp_path / "lib" / "Slicer-5.10" / "qt-scripted-modules"  # CMake copies the case here
    expected = _write_case(module_dir / "Resources" / "SampleData")
    monkeypatch.setattr(samples, "MODULE_DIR", module_dir)
    assert samples.sample_folder() == expected
    assert samples.sample_files()["t2"] == expected / "sample_t2.nrrd"


def test_source_checkout(tmp_path, monkeypatch):
    expected = _write_case(tmp_path / "Resources" / "SampleData")  # top of the checkout
    monkeypatch.setattr(samples, "MODULE_DIR", tmp_path / "SlicerBrainBarriers")
    assert samples.sample_folder() == expected


def test_missing_case_names_both_places(tmp_path, monkeypatch):
    monkeypatch.setattr(samples, "MODULE_DIR", tmp_path / "mod")
    with pytest.raises(FileNotFoundError, match="mod/Resources/SampleData or .*Resources/SampleData"):
        samples.sample_files()


def test_this_checkout_has_the_case():
    assert samples.sample_folder() is not None
