"""The 4dfp reader of scripts/build_heldout.py (held-out head 105 comes as FreeSurfer's 4dfp)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
from build_heldout import read_4dfp  # noqa: E402

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
