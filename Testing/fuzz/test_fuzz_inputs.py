"""Fuzz the input readers and the CLI with damaged real files (issue 12).

Every case must end in a one-line ``InputError`` (CLI: one line on stderr, exit 2, no traceback,
nothing left in the output folder) or, where the file is whole, in the original voxels. Cases are
made from files SimpleITK writes (see ``mutations``); the reader runs in-process on every case, the
CLI in-process (``brainbarriers.cli.main``) on every damaged case, and a few in a real subprocess.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
import SimpleITK as sitk
from brainbarriers.cli import main as cli_main
from brainbarriers.errors import InputError
from brainbarriers.io import read_image
from fuzz_counts import COUNTS
from mutations import all_cases, base_image, write_dicom
from pipeline_helpers import assert_one_line_error, run_cli

CASES = all_cases()
DAMAGED = [c for c in CASES if c.expect == "error"]
#: Cases also run in a real subprocess (proves no traceback reaches a real stderr).
SUBPROCESS = ["niigz-cut33", "mhaz-gz-crc", "dicom-missing_middle"]


@pytest.fixture(scope="module")
def image() -> sitk.Image:
    return base_image()


@pytest.fixture(scope="module")
def good_mr(tmp_path_factory, image):
    """Whole T1 and T2 files for the CLI cases (the damaged file is the CT)."""
    folder = tmp_path_factory.mktemp("mr")
    paths = {}
    for m in ("t1", "t2"):
        a = np.clip(sitk.GetArrayFromImage(image) + 1000.0, 0, None)
        img = sitk.GetImageFromArray(a)
        img.CopyInformation(image)
        paths[m] = folder / f"{m}.nrrd"
        sitk.WriteImage(img, str(paths[m]))
    return paths


def _one_line(message: str) -> None:
    assert message and "\n" not in message and "Traceback" not in message, message


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_reader(case, tmp_path, image):
    path = case.make(tmp_path, image)
    t0 = time.perf_counter()
    try:
        out = read_image(path, "ct")
    except InputError as exc:
        COUNTS["reader"] += 1
        _one_line(str(exc))
        assert str(path) in str(exc), str(exc)
        assert case.expect in ("error", "error_or_same"), f"{case.id}: refused a whole file: {exc}"
        return
    finally:
        assert time.perf_counter() - t0 < 10, f"{case.id}: the reader took too long"
    COUNTS["reader"] += 1
    assert case.expect != "error", f"{case.id}: a damaged file was read without complaint"
    if case.expect == "valid":
        return
    expected = sitk.GetArrayFromImage(sitk.Cast(image, sitk.sitkInt16) if case.fmt == "dicom" else image)
    got = sitk.GetArrayFromImage(out)
    assert got.shape == expected.shape, case.id
    assert np.allclose(got, expected, atol=1.0 if case.fmt == "dicom" else 0.0), case.id


@pytest.mark.parametrize("case", DAMAGED, ids=lambda c: c.id)
def test_cli(case, tmp_path, image, good_mr, fuzz_bundle, capfd):
    path = case.make(tmp_path, image)
    out = tmp_path / "out"
    code = cli_main(["segment", "--ct", str(path), "--t1", str(good_mr["t1"]), "--t2", str(good_mr["t2"]),
                     "--model", str(fuzz_bundle), "--output", str(out), "--progress", "none", "--case", "fuzz"])
    captured = capfd.readouterr()
    COUNTS["cli"] += 1
    assert code == 2, (case.id, code, captured.err)
    lines = [ln for ln in captured.err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("brainbarriers: error: "), captured.err
    assert "Traceback" not in captured.err and captured.out == ""
    assert not out.exists() or list(out.iterdir()) == [], list(out.iterdir())


@pytest.mark.parametrize("case_id", SUBPROCESS)
def test_cli_subprocess(case_id, tmp_path, image, good_mr, fuzz_bundle):
    case = next(c for c in CASES if c.id == case_id)
    path = case.make(tmp_path, image)
    out = tmp_path / "out"
    proc = run_cli("segment", "--ct", str(path), "--t1", str(good_mr["t1"]), "--t2", str(good_mr["t2"]),
                   "--model", str(fuzz_bundle), "--output", str(out), timeout=120)
    COUNTS["cli_subprocess"] += 1
    assert proc.returncode == 2
    assert_one_line_error(proc, path.name if path.is_file() else "slice")
    assert not out.exists() or list(out.iterdir()) == []


def test_case_list_is_large_enough(tmp_path, image):
    assert len(CASES) >= 50 and len(DAMAGED) >= 50
    assert write_dicom(tmp_path / "d", image).is_dir()
