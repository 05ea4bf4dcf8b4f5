"""Every kind of bad input gets a one-line error, a non-zero exit and no traceback (CLI in a subprocess)."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from brainbarriers.predict import Runner
from phantom import make_image, write_case
from pipeline_helpers import CASE_GRID, assert_one_line_error, run_cli


def _write(path, array, spacing=(2.5, 2.5, 2.5), vector=False):
    img = sitk.GetImageFromArray(array, isVector=vector)
    if img.GetDimension() == 3 or img.GetDimension() == 2:
        img.SetSpacing(spacing[: img.GetDimension()])
    sitk.WriteImage(img, str(path))
    return path


def _args(ct, t1, t2, bundle, out, *extra):
    args = ["segment"]
    for flag, value in (("--ct", ct), ("--t1", t1), ("--t2", t2)):
        if value is not None:
            args += [flag, str(value)]
    return [*args, "--model", str(bundle), "--output", str(out), *extra]


def _bad_image(kind, tmp_path, case_files):
    """(path of a bad CT or T1, which flag it replaces, expected words in the error)."""
    shape = (20, 24, 22)
    if kind == "missing":
        return tmp_path / "nope.nii.gz", "ct", ["file not found"]
    if kind == "unreadable":
        p = tmp_path / "junk.nrrd"
        p.write_bytes(b"NRRD0004\ngarbage\n")
        return p, "ct", ["cannot read"]
    if kind == "not_dicom":
        (tmp_path / "folder").mkdir()
        (tmp_path / "folder" / "notes.txt").write_text("not dicom")
        return tmp_path / "folder", "ct", ["without a DICOM series"]
    if kind == "2d":
        return _write(tmp_path / "slice.nrrd", np.random.rand(30, 30).astype(np.float32)), "ct", ["2D"]
    if kind == "4d":
        img = sitk.JoinSeries([make_image("ct", size=(20, 20, 20))] * 3)
        sitk.WriteImage(img, str(tmp_path / "four.nii.gz"))
        return tmp_path / "four.nii.gz", "ct", ["4D"]
    if kind == "vector":
        return _write(tmp_path / "rgb.nrrd", np.random.rand(*shape, 3).astype(np.float32), vector=True), "ct", ["vector"]
    if kind == "constant":
        return _write(tmp_path / "const.nrrd", np.full(shape, 7, np.float32)), "ct", ["constant"]
    if kind == "nan":
        a = np.full(shape, np.nan, np.float32)
        return _write(tmp_path / "nan.nrrd", a), "ct", ["NaN"]
    if kind == "spacing":
        return _write(tmp_path / "sp.nrrd", np.random.rand(*shape).astype(np.float32), spacing=(250.0, 250.0, 250.0)), \
            "ct", ["absurd voxel spacing"]
    if kind == "no_overlap":
        img = make_image("t1", **CASE_GRID)
        img.SetOrigin([o + 2000.0 for o in img.GetOrigin()])
        sitk.WriteImage(img, str(tmp_path / "far_t1.nrrd"))
        return tmp_path / "far_t1.nrrd", "t1", ["do not overlap"]
    if kind == "ct_as_t1":
        return case_files["ct"], "t1", ["looks like a CT"]
    if kind == "misaligned":
        sitk.WriteImage(make_image("t1", shift=(0, 45, 0), **CASE_GRID), str(tmp_path / "shift_t1.nrrd"))
        return tmp_path / "shift_t1.nrrd", "t1", ["does not line up", "--register"]
    raise AssertionError(kind)


KINDS = ["missing", "unreadable", "not_dicom", "2d", "4d", "vector", "constant", "nan", "spacing", "no_overlap", "ct_as_t1",
         "misaligned"]


@pytest.mark.parametrize("kind", KINDS)
def test_bad_image(kind, tmp_path, case_files, tiny_bundle):
    path, flag, words = _bad_image(kind, tmp_path, case_files)
    files = {**case_files, flag: path}
    out = tmp_path / "out"
    proc = run_cli(*_args(files["ct"], files["t1"], files["t2"], tiny_bundle, out))
    assert_one_line_error(proc, *words)
    assert not out.exists() or list(out.iterdir()) == []


def test_missing_modality_lists_what_works(tmp_path, case_files, tiny_bundle):
    proc = run_cli(*_args(case_files["ct"], None, case_files["t2"], tiny_bundle, tmp_path / "o"))
    assert_one_line_error(proc, "cannot run on ct+t2", "accepts: ct+t1+t2")
    proc = run_cli(*_args(None, None, None, tiny_bundle, tmp_path / "o"))
    assert_one_line_error(proc, "at least one input")


def test_a_tile_overlap_outside_zero_to_one_is_refused(tmp_path, case_files, tiny_bundle):
    out = tmp_path / "o"
    proc = run_cli(*_args(case_files["ct"], case_files["t1"], case_files["t2"], tiny_bundle, out), "--tile-overlap", "1")
    assert_one_line_error(proc, "tile overlap 1.0 is not a fraction")
    assert not out.exists() or not any(out.iterdir())  # nothing written


def test_tampered_bundle(tmp_path, case_files, tiny_bundle):
    import shutil

    bundle = tmp_path / "tampered"
    shutil.copytree(tiny_bundle, bundle)
    w = bundle / "coarse.safetensors"
    data = bytearray(w.read_bytes())
    data[len(data) // 2] ^= 0x55
    w.write_bytes(bytes(data))
    proc = run_cli(*_args(case_files["ct"], case_files["t1"], case_files["t2"], bundle, tmp_path / "o"))
    assert_one_line_error(proc, "SHA-256 mismatch", "coarse.safetensors")
    proc = run_cli(*_args(case_files["ct"], case_files["t1"], case_files["t2"], tmp_path / "no-bundle", tmp_path / "o"))
    assert_one_line_error(proc, "no-bundle")


def test_output_not_writable_and_bad_options(tmp_path, case_files, tiny_bundle):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    proc = run_cli(*_args(case_files["ct"], case_files["t1"], case_files["t2"], tiny_bundle, blocker / "sub"))
    assert_one_line_error(proc, "not writable")
    proc = run_cli(*_args(case_files["ct"], case_files["t1"], case_files["t2"], tiny_bundle, tmp_path / "o",
                          "--structures", "brainstem"))
    assert_one_line_error(proc, "unknown structure")
    proc = run_cli(*_args(case_files["ct"], case_files["t1"], case_files["t2"], tiny_bundle, tmp_path / "o",
                          "--device", "cuda"))
    if not torch.cuda.is_available():
        assert_one_line_error(proc, "no CUDA GPU")
    proc = run_cli("segment", "--quality", "best", "--output", str(tmp_path))
    assert_one_line_error(proc, "invalid choice")


def test_register_recovers_a_misaligned_mr(tmp_path, case_files, tiny_bundle):
    for m in ("t1", "t2"):
        sitk.WriteImage(make_image(m, shift=(0, 12, -8), **CASE_GRID), str(tmp_path / f"s_{m}.nrrd"))
    proc = run_cli(*_args(case_files["ct"], tmp_path / "s_t1.nrrd", tmp_path / "s_t2.nrrd", tiny_bundle, tmp_path / "o",
                          "--register", "--structures", "ventricles", "--progress", "none"))
    assert proc.returncode == 0, proc.stderr
    import json

    notes = json.loads((tmp_path / "o" / "case_ct_report.json").read_text())["notes"]
    reg = [n for n in notes if n.startswith("t1 registered")]
    params = np.array(json.loads(reg[0].split(": ", 1)[1]))
    assert np.allclose(params[3:], [0, 12, -8], atol=2.0), params  # the shift, as the fixed-to-moving map


def test_dicom_series_folder(tmp_path, tiny_bundle):
    from brainbarriers.io import read_image

    img = sitk.Cast(make_image("ct", size=(32, 36, 12), spacing=(2.0, 2.0, 3.0)), sitk.sitkInt16)
    folder = tmp_path / "dicom"
    folder.mkdir()
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    series = "1.2.826.0.1.3680043.2.1125.1.1"
    for k in range(img.GetDepth()):
        s = img[:, :, k]
        for tag, value in (("0008|0060", "CT"), ("0020|000e", series), ("0020|0013", str(k + 1)),
                           ("0020|0037", "1\\0\\0\\0\\1\\0"), ("0028|0030", "2\\2"), ("0018|0050", "3"),
                           ("0020|0032", "\\".join(map(str, img.TransformIndexToPhysicalPoint((0, 0, k)))))):
            s.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"{k:03d}.dcm"))
        writer.Execute(s)
    out = read_image(folder, "ct")
    assert out.GetSize() == img.GetSize()
    assert np.allclose(out.GetSpacing(), (2.0, 2.0, 3.0), atol=1e-3)
    assert np.allclose(out.GetOrigin(), img.GetOrigin(), atol=1e-3)


class _OomOnGpuNet(torch.nn.Module):
    """Raises the GPU out-of-memory error whenever its input is not on the CPU (a GPU stand-in)."""

    required_multiple = (1, 1, 1)

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(()))

    def to(self, *args, **kwargs):  # weights stay on the CPU: the "GPU" here is the meta device
        device = torch.device(args[0]) if args else kwargs.get("device")
        return super().to(device) if device is not None and device.type == "cpu" else self

    def forward(self, x):
        if x.device.type != "cpu":
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return torch.stack([-x[:, 0], x[:, 0]], 1) * self.w


def test_gpu_out_of_memory_retries_on_cpu():
    runner = Runner(torch.device("meta"))
    probs = runner.predict(_OomOnGpuNet(), np.ones((1, 6, 6, 6), np.float32), (8, 8, 8))
    assert runner.device.type == "cpu" and probs.shape == (2, 6, 6, 6) and (probs[1] > 0.5).all()
    assert any("out of memory" in n and "CPU" in n for n in runner.notes)


def test_write_case_helper_roundtrip(tmp_path):
    paths = write_case(tmp_path, "p", modalities=("t2",), size=(10, 12, 8))
    assert sitk.ReadImage(str(paths["t2"])).GetSize() == (10, 12, 8)
