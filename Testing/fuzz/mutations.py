"""Damaged and awkward image files made from real ones: the fuzz suite's cases.

Each ``FuzzCase`` writes a real image with SimpleITK (NIfTI, NIfTI gzip, NRRD raw/gzip, detached
NRRD, MetaImage raw/compressed, detached MetaImage, a DICOM series), then mutates its bytes or header
fields. ``expect`` says what the reader must do:

* ``"error"``: the file is damaged or its header contradicts its data: a one-line InputError;
* ``"same"``: the file is whole: it must read, with the original voxels;
* ``"error_or_same"``: an odd but possibly valid header (e.g. a negative pixdim): either;
* ``"valid"``: a smaller but whole image (a DICOM series without its first slice): it must read.
"""

from __future__ import annotations

import gzip
import shutil
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

SIZE = (20, 18, 16)
SPACING = (2.0, 2.0, 2.5)
DICOM_SERIES = "1.2.826.0.1.3680043.2.1125.99.12"

#: base name -> (file written by SimpleITK, compression, main file a reader is given, data file)
FORMATS = {
    "nii": ("img.nii", False, "img.nii", "img.nii"),
    "niigz": ("img.nii.gz", True, "img.nii.gz", "img.nii.gz"),
    "nrrd": ("img.nrrd", False, "img.nrrd", "img.nrrd"),
    "nrrdgz": ("img.nrrd", True, "img.nrrd", "img.nrrd"),
    "nhdr": ("img.nhdr", True, "img.nhdr", "img.raw.gz"),
    "mha": ("img.mha", False, "img.mha", "img.mha"),
    "mhaz": ("img.mha", True, "img.mha", "img.mha"),
    "mhd": ("img.mhd", False, "img.mhd", "img.raw"),
}


def base_image() -> sitk.Image:
    """A small CT-like volume: a bright ellipsoid in air, with noise (so it is never constant)."""
    k, j, i = np.meshgrid(*[np.arange(n) for n in reversed(SIZE)], indexing="ij")
    c = [(n - 1) / 2 for n in reversed(SIZE)]
    inside = ((k - c[0]) / 7) ** 2 + ((j - c[1]) / 8) ** 2 + ((i - c[2]) / 9) ** 2 <= 1
    rng = np.random.default_rng(12)
    a = np.where(inside, 40.0, -1000.0) + rng.normal(0, 5, inside.shape)
    img = sitk.GetImageFromArray(a.astype(np.float32))
    img.SetSpacing(SPACING)
    img.SetOrigin((-20.0, -18.0, 10.0))
    return img


def write_format(folder: Path, fmt: str, image: sitk.Image) -> Path:
    name, compress, main, _ = FORMATS[fmt]
    folder.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(folder / name), useCompression=compress)
    return folder / main


def write_dicom(folder: Path, image: sitk.Image) -> Path:
    """The image as a CT DICOM series, one file per slice (int16)."""
    folder.mkdir(parents=True, exist_ok=True)
    img = sitk.Cast(image, sitk.sitkInt16)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for z in range(img.GetDepth()):
        s = img[:, :, z]
        pos = img.TransformIndexToPhysicalPoint((0, 0, z))
        for tag, value in (("0008|0060", "CT"), ("0020|000e", DICOM_SERIES), ("0020|0013", str(z + 1)),
                           ("0020|0037", "1\\0\\0\\0\\1\\0"), ("0018|0050", str(SPACING[2])),
                           ("0020|0032", "\\".join(f"{v:.3f}" for v in pos))):
            s.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"slice{z:03d}.dcm"))
        writer.Execute(s)
    return folder


@dataclass(frozen=True)
class FuzzCase:
    id: str
    fmt: str  # a FORMATS key or "dicom"
    mutate: Callable[[Path, Path], None]  # (main path, data path) -> None, in place
    expect: str

    def make(self, folder: Path, image: sitk.Image) -> Path:
        folder = folder / self.id
        if self.fmt == "dicom":
            main = write_dicom(folder, image)
            self.mutate(main, main)
            return main
        main = write_format(folder, self.fmt, image)
        self.mutate(main, folder / FORMATS[self.fmt][3])
        return main


# --- byte-level mutations ----------------------------------------------------------------------------


def truncate(fraction: float, minus: int = 0):
    def run(main: Path, data: Path) -> None:
        b = data.read_bytes()
        data.write_bytes(b[: max(0, int(len(b) * fraction) - minus)])

    return run


def gzip_garbage(kind: str):
    """Damage inside a compressed stream (the data file of a compressed format)."""

    def run(main: Path, data: Path) -> None:
        b = bytearray(data.read_bytes())
        start = _stream_start(data)
        mid = start + (len(b) - start) // 2
        rng = np.random.default_rng(len(b))
        if kind == "garbage":
            b[mid: mid + 64] = rng.integers(0, 256, 64, dtype=np.uint8).tobytes()
        elif kind == "flip":
            b[mid] ^= 0x01
        elif kind == "crc":
            b[-6] ^= 0xFF  # the stored checksum (gzip CRC-32 / zlib Adler-32 trailer)
        elif kind == "tail":
            b += b"garbage after the end of the stream"
        elif kind == "header":
            b[start + 3] ^= 0xFF  # gzip flags / zlib header byte
        elif kind == "replace":
            b[start:] = rng.integers(0, 256, len(b) - start, dtype=np.uint8).tobytes()
        data.write_bytes(bytes(b))

    return run


def _stream_start(data: Path) -> int:
    b = data.read_bytes()
    for magic in (b"\x1f\x8b", b"\x78\x9c", b"\x78\xda", b"\x78\x01"):
        at = b.find(magic, 0 if data.suffix in (".gz",) or data.name.endswith(".nii.gz") else 40)
        if at >= 0:
            return at
    return 0


# --- header mutations --------------------------------------------------------------------------------


def _nifti_edit(main: Path, edit: Callable[[bytearray], None]) -> None:
    gz = main.name.endswith(".gz")
    raw = bytearray(gzip.decompress(main.read_bytes()) if gz else main.read_bytes())
    edit(raw)
    main.write_bytes(gzip.compress(bytes(raw)) if gz else bytes(raw))


def nifti(field: str, value) -> Callable[[Path, Path], None]:
    """Set a NIfTI-1 header field (little endian): 'dimN', 'datatype', 'bitpix', 'pixdimN', 'vox_offset',
    'sizeof_hdr', 'magic'; a pixdim edit also drops the sform so the spacing comes from pixdim."""

    def edit(h: bytearray) -> None:
        if field.startswith("dim"):
            struct.pack_into("<h", h, 40 + 2 * int(field[3:]), value)
        elif field == "datatype":
            struct.pack_into("<h", h, 70, value)
        elif field == "bitpix":
            struct.pack_into("<h", h, 72, value)
        elif field.startswith("pixdim"):
            struct.pack_into("<f", h, 76 + 4 * int(field[6:]), value)
            struct.pack_into("<h", h, 254, 0)  # sform_code
        elif field == "vox_offset":
            struct.pack_into("<f", h, 108, value)
        elif field == "sizeof_hdr":
            struct.pack_into("<i", h, 0, value)
        elif field == "magic":
            h[344:348] = value

    return lambda main, data: _nifti_edit(main, edit)


def text_field(key: str, value: str, separator: str) -> Callable[[Path, Path], None]:
    """Replace the value of ``key`` in an NRRD (``key: value``) or MetaImage (``Key = Value``) header."""

    def run(main: Path, data: Path) -> None:
        b = main.read_bytes()
        lines = b.split(b"\n")
        for n, line in enumerate(lines):
            if line.split(separator.encode())[0].strip().lower() == key.lower().encode():
                lines[n] = key.encode() + separator.encode() + b" " + value.encode()
                break
            if not line.strip() and n > 0:
                break
        else:
            raise AssertionError(f"{key} not in {main}")
        main.write_bytes(b"\n".join(lines))

    return run


def nrrd(key: str, value: str):
    return text_field(key, value, ":")


def meta(key: str, value: str):
    return text_field(key, value, " =")


# --- DICOM series mutations --------------------------------------------------------------------------


def dicom(kind: str):
    def run(folder: Path, _: Path) -> None:
        files = sorted(folder.glob("*.dcm"))
        mid = files[len(files) // 2]
        if kind == "missing_middle":
            mid.unlink()
        elif kind == "missing_two":
            files[3].unlink()
            files[4].unlink()
        elif kind == "duplicate":
            shutil.copy(mid, folder / "copy_of_slice.dcm")
        elif kind.startswith("truncate_0"):
            b = mid.read_bytes()
            mid.write_bytes(b[: int(len(b) * float(kind.split("_")[1]))])
        elif kind == "truncate_last":
            b = files[-1].read_bytes()
            files[-1].write_bytes(b[:-20])
        elif kind == "uneven":
            _set_position(mid, 0.9)
        elif kind == "first_removed":
            files[0].unlink()
        elif kind == "junk_file":
            (folder / "notes.txt").write_text("not DICOM")
        elif kind == "zero_bytes":
            mid.write_bytes(b"")
        elif kind == "garbage_slice":
            b = bytearray(mid.read_bytes())
            b[132:400] = bytes(range(256)) + bytes(12)
            mid.write_bytes(bytes(b))

    return run


def _set_position(path: Path, shift_mm: float) -> None:
    """Move one slice along z by rewriting its Image Position (Patient) element (implicit VR little
    endian, as GDCM writes it here: tag, 4-byte length, text)."""
    b = path.read_bytes()
    at = b.find(b"\x20\x00\x32\x00")
    assert at >= 0 and b[at + 4: at + 6] != b"DS"
    length = struct.unpack_from("<I", b, at + 4)[0]
    text = b[at + 8: at + 8 + length].decode().strip().split("\\")
    text[2] = f"{float(text[2]) + shift_mm:g}"
    new = "\\".join(text).encode()
    new += b" " * (len(new) % 2)
    path.write_bytes(b[:at + 4] + struct.pack("<I", len(new)) + new + b[at + 8 + length:])


# --- the case list ---------------------------------------------------------------------------------


def all_cases() -> list[FuzzCase]:
    cases: list[FuzzCase] = []
    for fmt in FORMATS:
        cases.append(FuzzCase(f"{fmt}-whole", fmt, lambda m, d: None, "same"))
        for frac in (0.0, 0.02, 0.1, 0.33, 0.5, 0.75, 0.9, 0.99, 1.0):
            minus = 1 if frac == 1.0 else 0
            cases.append(FuzzCase(f"{fmt}-cut{int(frac * 100)}", fmt, truncate(frac, minus), "error"))
    for fmt in ("niigz", "nrrdgz", "nhdr", "mhaz"):
        for kind in ("garbage", "flip", "crc", "tail", "header", "replace"):
            cases.append(FuzzCase(f"{fmt}-gz-{kind}", fmt, gzip_garbage(kind), "error"))
    for fmt in ("nii", "niigz"):
        cases += [
            FuzzCase(f"{fmt}-dim1-bigger", fmt, nifti("dim1", SIZE[0] + 3), "error"),
            FuzzCase(f"{fmt}-dim3-smaller", fmt, nifti("dim3", SIZE[2] - 5), "error"),
            FuzzCase(f"{fmt}-dim2-zero", fmt, nifti("dim2", 0), "error"),
            FuzzCase(f"{fmt}-dim2-negative", fmt, nifti("dim2", -7), "error"),
            FuzzCase(f"{fmt}-dim1-huge", fmt, nifti("dim1", 32000), "error"),
            FuzzCase(f"{fmt}-dim0-2d", fmt, nifti("dim0", 2), "error"),
            FuzzCase(f"{fmt}-dim0-8", fmt, nifti("dim0", 8), "error"),
            FuzzCase(f"{fmt}-datatype-int16", fmt, nifti("datatype", 4), "error"),
            FuzzCase(f"{fmt}-datatype-float64", fmt, nifti("datatype", 64), "error"),
            FuzzCase(f"{fmt}-datatype-uint8", fmt, nifti("datatype", 2), "error"),
            FuzzCase(f"{fmt}-datatype-rgb", fmt, nifti("datatype", 128), "error"),
            FuzzCase(f"{fmt}-datatype-unknown", fmt, nifti("datatype", 999), "error"),
            FuzzCase(f"{fmt}-bitpix-wrong", fmt, nifti("bitpix", 8), "error_or_same"),
            FuzzCase(f"{fmt}-pixdim-zero", fmt, nifti("pixdim1", 0.0), "error"),
            FuzzCase(f"{fmt}-pixdim-negative", fmt, nifti("pixdim2", -2.0), "error_or_same"),
            FuzzCase(f"{fmt}-pixdim-nan", fmt, nifti("pixdim3", float("nan")), "error"),
            FuzzCase(f"{fmt}-pixdim-huge", fmt, nifti("pixdim1", 1e6), "error"),
            FuzzCase(f"{fmt}-vox-offset-beyond", fmt, nifti("vox_offset", 1e6), "error"),
            FuzzCase(f"{fmt}-vox-offset-inside-header", fmt, nifti("vox_offset", 100.0), "error"),
            FuzzCase(f"{fmt}-sizeof-hdr", fmt, nifti("sizeof_hdr", 1234), "error_or_same"),
            FuzzCase(f"{fmt}-magic", fmt, nifti("magic", b"xx1\x00"), "error_or_same"),
        ]
    for fmt in ("nrrd", "nrrdgz", "nhdr"):
        cases += [
            FuzzCase(f"{fmt}-sizes-bigger", fmt, nrrd("sizes", f"{SIZE[0]} {SIZE[1] + 2} {SIZE[2]}"), "error"),
            FuzzCase(f"{fmt}-sizes-smaller", fmt, nrrd("sizes", f"{SIZE[0]} {SIZE[1]} {SIZE[2] - 4}"), "error"),
            FuzzCase(f"{fmt}-sizes-huge", fmt, nrrd("sizes", "100000 100000 100000"), "error"),
            FuzzCase(f"{fmt}-sizes-zero", fmt, nrrd("sizes", f"{SIZE[0]} 0 {SIZE[2]}"), "error"),
            FuzzCase(f"{fmt}-type-short", fmt, nrrd("type", "short"), "error"),
            FuzzCase(f"{fmt}-type-double", fmt, nrrd("type", "double"), "error"),
            FuzzCase(f"{fmt}-type-bogus", fmt, nrrd("type", "float128"), "error"),
            FuzzCase(f"{fmt}-spacing-zero", fmt, nrrd("space directions", "(0,0,0) (0,2,0) (0,0,2.5)"), "error"),
            FuzzCase(f"{fmt}-spacing-nan", fmt, nrrd("space directions", "(nan,0,0) (0,2,0) (0,0,2.5)"), "error"),
            FuzzCase(f"{fmt}-spacing-negative", fmt, nrrd("space directions", "(-2,0,0) (0,2,0) (0,0,2.5)"), "same"),
            FuzzCase(f"{fmt}-dimension-4", fmt, nrrd("dimension", "4"), "error"),
        ]
    cases.append(FuzzCase("nrrd-encoding-gzip-on-raw", "nrrd", nrrd("encoding", "gzip"), "error"))
    cases.append(FuzzCase("nrrdgz-encoding-raw-on-gzip", "nrrdgz", nrrd("encoding", "raw"), "error"))
    cases.append(FuzzCase("nhdr-data-file-missing", "nhdr", nrrd("data file", "nowhere.raw.gz"), "error"))
    for fmt in ("mha", "mhaz", "mhd"):
        cases += [
            FuzzCase(f"{fmt}-dimsize-bigger", fmt, meta("DimSize", f"{SIZE[0] + 1} {SIZE[1]} {SIZE[2]}"), "error"),
            FuzzCase(f"{fmt}-dimsize-smaller", fmt, meta("DimSize", f"{SIZE[0]} {SIZE[1]} {SIZE[2] - 3}"), "error"),
            FuzzCase(f"{fmt}-dimsize-huge", fmt, meta("DimSize", "90000 90000 90000"), "error"),
            FuzzCase(f"{fmt}-type-short", fmt, meta("ElementType", "MET_SHORT"), "error"),
            FuzzCase(f"{fmt}-type-double", fmt, meta("ElementType", "MET_DOUBLE"), "error"),
            FuzzCase(f"{fmt}-spacing-zero", fmt, meta("ElementSpacing", "0 2 2.5"), "error"),
            FuzzCase(f"{fmt}-spacing-negative", fmt, meta("ElementSpacing", "-2 2 2.5"), "error_or_same"),
            FuzzCase(f"{fmt}-spacing-nan", fmt, meta("ElementSpacing", "nan 2 2.5"), "error"),
            FuzzCase(f"{fmt}-ndims-2", fmt, meta("NDims", "2"), "error"),
        ]
    cases.append(FuzzCase("mha-compressed-flag-on-raw", "mha", meta("CompressedData", "True"), "error"))
    cases.append(FuzzCase("mhaz-compressed-flag-off", "mhaz", meta("CompressedData", "False"), "error"))
    cases.append(FuzzCase("mhd-data-file-missing", "mhd", meta("ElementDataFile", "nowhere.raw"), "error"))
    cases.append(FuzzCase("dicom-whole", "dicom", lambda m, d: None, "same"))
    for kind in ("missing_middle", "missing_two", "duplicate", "truncate_0.5", "truncate_0.95", "truncate_last",
                 "uneven", "zero_bytes", "garbage_slice"):
        cases.append(FuzzCase(f"dicom-{kind}", "dicom", dicom(kind), "error"))
    cases.append(FuzzCase("dicom-junk-file", "dicom", dicom("junk_file"), "same"))
    cases.append(FuzzCase("dicom-first-removed", "dicom", dicom("first_removed"), "valid"))
    return cases
