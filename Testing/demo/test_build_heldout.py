"""The readers of scripts/build_heldout.py: FreeSurfer's 4dfp (held-out head 105) and .mgz with its
aseg labels (held-out head 106)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
from build_heldout import ASEG_TO_ABCS, aseg_label, read_4dfp, read_mgz  # noqa: E402

SIZE = (8, 6, 4)  # matrix size [1], [2], [3]: columns, rows, slices


def write_4dfp(folder: Path, values: np.ndarray, **header) -> Path:
    """``values`` (slices, rows, columns) as X.4dfp.img + X.4dfp.ifh, the header keys overridable."""
    fields = {"number format": "float", "imagedata byte order": "littleendian", "orientation": "2",
              "number of dimensions": "4", "matrix size [4]": "1"}
    for n, size in enumerate(reversed(values.shape), 1):
        fields[f"matrix size [{n}]"] = str(size)
        fields[f"scaling factor (mm/pixel) [{n}]"] = "1.000000"
    fields.update(header)
    image = folder / "head.4dfp.img"
    values.astype("<f4").tofile(image)
    image.with_suffix(".ifh").write_text("INTERFILE\t:=\n" + "".join(f"{k}\t:= {v}\n" for k, v in fields.items()))
    return image


def test_a_4dfp_volume_reads_in_freesurfers_lia_layout(tmp_path):
    values = np.arange(np.prod(SIZE), dtype=np.float32).reshape(SIZE[::-1]) + 0.4
    image = read_4dfp(write_4dfp(tmp_path, values))
    assert image.GetSize() == SIZE and image.GetSpacing() == (1.0, 1.0, 1.0)
    assert image.GetPixelID() == sitk.sitkInt16
    assert np.array_equal(sitk.GetArrayFromImage(image), np.round(values).astype(np.int16))
    origin = np.array(image.TransformIndexToPhysicalPoint((0, 0, 0)))
    step = {axis: np.array(image.TransformIndexToPhysicalPoint(tuple(int(a == axis) for a in range(3)))) - origin
            for axis in range(3)}
    # LPS: a column step goes to the left (+x), a row step down (-z), a slice step forward (-y)
    assert np.allclose(step[0], (1, 0, 0)) and np.allclose(step[1], (0, 0, -1)) and np.allclose(step[2], (0, -1, 0))
    centre = image.TransformContinuousIndexToPhysicalPoint(tuple(s / 2.0 for s in SIZE))
    assert np.allclose(centre, 0.0)


@pytest.mark.parametrize("header,message", [
    ({"imagedata byte order": "bigendian"}, "little-endian float"),
    ({"matrix size [4]": "3"}, "3D"),
    ({"scaling factor (mm/pixel) [2]": "2.000000"}, "1 mm"),
    ({"matrix size [1]": "9"}, "the header says"),
])
def test_a_4dfp_volume_it_cannot_read_is_refused(tmp_path, header, message):
    values = np.zeros(SIZE[::-1], np.float32)
    with pytest.raises(ValueError, match=message):
        read_4dfp(write_4dfp(tmp_path, values, **header))


def write_mgz(path: Path, values: np.ndarray, affine: np.ndarray) -> Path:
    import nibabel

    nibabel.save(nibabel.MGHImage(values, affine), str(path))
    return path


def test_an_mgz_volume_reads_in_lps_world_coordinates(tmp_path):
    values = np.arange(4 * 5 * 6, dtype=np.uint8).reshape(4, 5, 6)  # nibabel order: i, j, k
    # FreeSurfer's conformed LIA layout: i to the left, j down, k forward (RAS columns -x, -z, +y)
    affine = np.array([[-2.0, 0, 0, 10], [0, 0, 2.0, -20], [0, -2.0, 0, 30], [0, 0, 0, 1]])
    image = read_mgz(write_mgz(tmp_path / "head.mgz", values, affine))
    assert image.GetSize() == (4, 5, 6) and image.GetSpacing() == (2.0, 2.0, 2.0)
    for i, j, k in ((0, 0, 0), (3, 1, 2), (1, 4, 5)):
        ras = affine @ np.array([i, j, k, 1.0])
        lps = (-ras[0], -ras[1], ras[2])
        assert np.allclose(image.TransformIndexToPhysicalPoint((i, j, k)), lps)
        assert image[i, j, k] == values[i, j, k]


def test_aseg_labels_become_the_abcs_cerebellum_and_ventricles_on_the_stored_grid(tmp_path):
    aseg = np.zeros((40, 40, 40), np.int16)
    aseg[5:15, 5:20, 5:25] = 8  # left cerebellar cortex
    aseg[15:25, 5:20, 5:25] = 47  # right cerebellar cortex
    aseg[10:30, 25:31, 10:30] = 4  # a lateral ventricle
    aseg[30:34, 30:34, 30:34] = 17  # a hippocampus: no ABCs structure
    image = read_mgz(write_mgz(tmp_path / "aseg.mgz", aseg, np.eye(4)))
    grid = sitk.Image(20, 20, 20, sitk.sitkUInt8)
    grid.SetSpacing((2.0, 2.0, 2.0))
    grid.SetOrigin((-0.5, -0.5, 0.5))  # voxel edges on the 1 mm grid's (LPS x, y flipped)
    grid.SetDirection((-1, 0, 0, 0, -1, 0, 0, 0, 1))
    label = aseg_label(image, grid)
    volume = {v: (label == v).sum() * 8 for v in (0, *ASEG_TO_ABCS)}
    assert set(np.unique(label)) == {0, 1, 5}
    assert abs(volume[1] - 20 * 15 * 20) <= 0.15 * 20 * 15 * 20
    assert abs(volume[5] - 20 * 6 * 20) <= 0.3 * 20 * 6 * 20
