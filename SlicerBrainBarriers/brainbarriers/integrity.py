"""Proving an image file is whole before its voxels are used.

SimpleITK reads a truncated NIfTI (plain or gzip) without complaint and fills the missing part with
zeros, and its MetaImage reader reports damage on stderr only. So every file is checked here first:

* its header is read on its own (``ImageFileReader.ReadImageInformation``) and the size it claims is
  bounded before anything is allocated;
* the voxel data the header points to (after NIfTI's ``vox_offset``, after an NRRD or MetaImage text
  header, or in a detached data file) holds exactly the bytes the header describes;
* a compressed stream is decompressed to its end, which verifies its checksum (gzip: CRC-32 and
  length through Python's ``gzip`` module; zlib: Adler-32; bzip2: its block CRCs). Decompression only
  counts bytes, so a "gzip bomb" costs time bounded by the header's size, not memory.

Where the data starts is read from the header with a few lines of text parsing (NRRD and MetaImage
headers are ``key: value`` / ``Key = Value`` lines; SimpleITK reports NIfTI's ``vox_offset``): ITK
does not expose data offsets, and pynrrd would be a new runtime dependency for one field.
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import os
import re
import struct
import tempfile
import threading
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .errors import InputError

#: Largest image the reader accepts, in voxels (2^31: 8 GiB as float32, beyond any head scan).
MAX_VOXELS = 2**31
#: Largest size of one axis (a whole-body CT at 0.5 mm has ~4000 slices).
MAX_AXIS = 16384
_CHUNK = 1 << 20
_STDERR_LOCK = threading.RLock()


@dataclass(frozen=True)
class Header:
    """What an image header claims, read without touching the voxels."""

    size: tuple[int, ...]
    spacing: tuple[float, ...]
    origin: tuple[float, ...]
    direction: tuple[float, ...]
    components: int
    bytes_per_component: int
    metadata: dict

    @property
    def voxels(self) -> int:
        return int(np.prod([int(s) for s in self.size], dtype=object))

    @property
    def nbytes(self) -> int:
        return self.voxels * self.components * self.bytes_per_component


@contextlib.contextmanager
def quiet_stderr():
    """Send what C++ libraries print on file descriptor 2 (ITK MetaIO, GDCM) to a buffer.

    Yields a list that receives the captured text once the block ends; a one-line error must not be
    followed by library chatter.
    """
    captured: list[str] = []
    with _STDERR_LOCK, tempfile.TemporaryFile() as buf:
        try:
            saved = os.dup(2)
        except OSError:  # no stderr at all (some GUI hosts)
            yield captured
            return
        try:
            os.dup2(buf.fileno(), 2)
            yield captured
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            buf.seek(0)
            captured.append(buf.read().decode("utf-8", "replace"))


def sitk_reason(exc: Exception, chatter: str = "") -> str:
    """The informative line of a SimpleITK/ITK error (or of what the library printed)."""
    lines = [ln.strip() for ln in (str(exc) + "\n" + chatter).splitlines() if ln.strip()]
    for key in ("[nrrd]", "MetaImage:", "ERROR", "Could not", "Reason"):
        for ln in lines:
            if key in ln and "Exception thrown" not in ln:
                ln = re.sub(r"\(0x[0-9a-fA-F]+\)", "", ln.split("sitk::ERROR:")[-1]).strip().rstrip(":")
                return ln[:160]
    return "unknown format"


def read_header(path: Path, label: str) -> Header:
    """The header of one image file, its claimed size bounded before any allocation."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        with quiet_stderr() as chatter:
            reader.ReadImageInformation()
    except (RuntimeError, OSError) as exc:
        raise InputError(f"{label}: cannot read the image header ({sitk_reason(exc, ''.join(chatter))})") from None
    try:
        metadata = {k: reader.GetMetaData(k) for k in reader.GetMetaDataKeys()}
    except (TypeError, UnicodeDecodeError, RuntimeError):
        raise InputError(f"{label}: damaged header (its text is not readable)") from None
    header = Header(
        size=tuple(int(s) for s in reader.GetSize()), spacing=tuple(reader.GetSpacing()),
        origin=tuple(reader.GetOrigin()), direction=tuple(reader.GetDirection()),
        components=int(reader.GetNumberOfComponents()),
        bytes_per_component=_component_bytes(reader.GetPixelID()), metadata=metadata,
    )
    check_claimed_size(header.size, label)
    return header


def _component_bytes(pixel_id: int) -> int:
    probe = sitk.Image([1, 1], pixel_id)
    return probe.GetSizeOfPixelComponent()


def check_claimed_size(size: tuple[int, ...], label: str) -> None:
    """Refuse absurd dimensions before anything is allocated for them."""
    if any(s < 1 for s in size):
        raise InputError(f"{label}: the header claims size {tuple(size)}; every axis needs at least one voxel")
    voxels = int(np.prod([int(s) for s in size], dtype=object))
    if max(size) > MAX_AXIS or voxels > MAX_VOXELS:
        raise InputError(
            f"{label}: the header claims {voxels:,} voxels (size {tuple(size)}), more than any scan "
            f"(at most {MAX_VOXELS:,} voxels, {MAX_AXIS} per axis); the header is damaged"
        )


# --- voxel data layout per format --------------------------------------------------------------------


def _text_header(path: Path, separator: str, last_key: str | None) -> tuple[dict[str, str], int]:
    """``key<sep>value`` lines of a text header and the byte offset just after it.

    The header ends at an empty line (NRRD) or after the line whose key is ``last_key`` (MetaImage).
    """
    fields: dict[str, str] = {}
    offset = 0
    with open(path, "rb") as f:
        for n, raw in enumerate(f):
            offset += len(raw)
            line = raw.decode("latin-1").rstrip("\r\n")
            if n == 0 and line.startswith("NRRD"):
                continue
            if not line.strip():
                if last_key is None:
                    return fields, offset
                continue
            if line.startswith("#") or separator not in line:
                continue
            key, value = line.split(separator, 1)
            key = key.strip().lower()
            fields[key] = value.strip()
            if last_key is not None and key == last_key:
                return fields, offset
            if offset > 1 << 20:  # a megabyte of header text is not a header
                break
    return fields, -1 if last_key is not None else offset


@dataclass
class _Payload:
    """Where the voxel data of a file lies: file, start offset, encoding ('raw', 'gzip', 'zlib', 'bzip2'),
    and ``prefix``: bytes before the voxels inside the decompressed stream (a .nii.gz holds its header)."""

    file: Path
    offset: int
    encoding: str
    prefix: int = 0


def _check_nifti_pixdim(path: Path, label: str) -> None:
    """Without an sform the voxel size is pixdim[1..3], and ITK's niftilib silently turns a 0 or NaN
    there into 1 mm before SimpleITK reports it; so those fields are read from the raw NIfTI-1 header
    (348 bytes: sizeof_hdr at 0, pixdim float32[8] at 76, sform_code int16 at 254). NIfTI-2 is left
    to ITK."""
    try:
        opener = gzip.open if path.name.lower().endswith(".gz") else open
        with opener(path, "rb") as f:
            raw = f.read(348)
    except (OSError, EOFError, zlib.error):
        return  # the stream check reports the damage
    if len(raw) < 348:
        return
    for endian in ("<", ">"):
        if struct.unpack_from(endian + "i", raw, 0)[0] == 348:
            break
    else:
        return
    if struct.unpack_from(endian + "h", raw, 254)[0] > 0:
        return
    pixdim = struct.unpack_from(endian + "8f", raw, 76)
    for i in (1, 2, 3):
        if not np.isfinite(pixdim[i]) or pixdim[i] == 0:
            raise InputError(f"{label}: damaged NIfTI header: pixdim[{i}] (a voxel size) is {pixdim[i]:g}")


def _nifti_payload(path: Path, header: Header, label: str) -> _Payload:
    _check_nifti_pixdim(path, label)
    try:
        offset = int(float(header.metadata.get("vox_offset", "352")))
    except ValueError:
        raise InputError(f"{label}: damaged NIfTI header (vox_offset {header.metadata.get('vox_offset')!r})") from None
    with open(path, "rb") as f:
        magic = f.read(2)
    if magic == b"\x1f\x8b":
        return _Payload(path, 0, "gzip", prefix=offset)  # the whole file, header included, is one gzip stream
    return _Payload(path, offset, "raw")


def _nrrd_payload(path: Path, label: str) -> _Payload | None:
    fields, end = _text_header(path, ":", None)
    encoding = fields.get("encoding", "raw").lower()
    encoding = {"gz": "gzip", "bz2": "bzip2", "txt": "text", "ascii": "text"}.get(encoding, encoding)
    if encoding not in ("raw", "gzip", "bzip2"):
        return None  # text/hex data: teem counts values itself and fails on short data
    data_file = fields.get("data file") or fields.get("datafile")
    if int(fields.get("line skip", fields.get("lineskip", "0")) or 0) != 0:
        return None  # rare; teem handles the skip and its own short-read checks
    byte_skip = int(fields.get("byte skip", fields.get("byteskip", "0")) or 0)
    if data_file:
        if data_file.upper().startswith("LIST") or len(data_file.split()) > 1:
            return None  # several data files: teem checks each one's size itself
        target = Path(data_file) if Path(data_file).is_absolute() else path.parent / data_file
        if not target.is_file():
            raise InputError(f"{label}: its data file {target} is missing")
        if byte_skip < 0 or (byte_skip and encoding != "raw"):
            return None  # data "at the end of the file", or skipped inside the stream: teem checks those
        return _Payload(target, byte_skip, encoding)
    if byte_skip != 0:
        return None
    return _Payload(path, end, encoding)


def _meta_payload(path: Path, label: str) -> _Payload | None:
    fields, end = _text_header(path, "=", "elementdatafile")
    if "elementdatafile" not in fields:
        raise InputError(f"{label}: damaged MetaImage header (no ElementDataFile line)")
    compressed = fields.get("compresseddata", "false").lower() == "true"
    encoding = "zlib" if compressed else "raw"
    if int(fields.get("headersize", "0") or 0) != 0:
        return None  # -1 means "data at the end": the start follows from the expected size
    name = fields["elementdatafile"]
    if name.upper() == "LOCAL":
        return _Payload(path, end, encoding)
    if name.upper().startswith("LIST") or len(name.split()) > 1:
        return None  # one file per slice: MetaIO checks each one's size itself
    target = Path(name) if Path(name).is_absolute() else path.parent / name
    if not target.is_file():
        raise InputError(f"{label}: its data file {target} is missing")
    return _Payload(target, 0, encoding)


def _stream_length(payload: _Payload, limit: int, label: str) -> int:
    """Bytes of voxel data the payload holds (decompressed to its end: checksums are verified).

    Stops counting once ``limit`` is passed: more data than the header describes is already an error.
    """
    total = 0
    name = payload.file.name
    try:
        with open(payload.file, "rb") as raw:
            if payload.encoding == "raw":
                return max(0, os.fstat(raw.fileno()).st_size - payload.offset)
            raw.seek(payload.offset)
            if payload.encoding == "gzip":
                stream = gzip.GzipFile(fileobj=raw)  # reads from the current position to the end, CRC checked
            elif payload.encoding == "bzip2":
                stream = bz2.BZ2File(raw)
            else:
                stream = _ZlibReader(raw)
            with stream:
                while True:
                    chunk = stream.read(_CHUNK)
                    if not chunk:
                        break
                    total += len(chunk)
                    if total > limit:
                        return total
    except EOFError:
        raise InputError(
            f"{label}: the file is truncated: its {payload.encoding} data in {name} ends before the end-of-stream "
            "marker (an interrupted copy or download?)"
        ) from None
    except (gzip.BadGzipFile, OSError, zlib.error, ValueError) as exc:
        what = "checksum" if "CRC" in str(exc) or "check" in str(exc) else "data"
        raise InputError(f"{label}: the file is damaged: its {payload.encoding} {what} in {name} is corrupt ({exc})") from None
    return total


class _ZlibReader:
    """zlib stream reader that fails on a truncated stream (``zlib.decompressobj`` does not)."""

    def __init__(self, f) -> None:
        self.f = f
        self.d = zlib.decompressobj(zlib.MAX_WBITS | 32)  # zlib or gzip wrapper, detected from its header

    def read(self, n: int) -> bytes:
        while True:
            if self.d.unconsumed_tail:
                out = self.d.decompress(self.d.unconsumed_tail, n)
            elif self.d.eof:
                if self.d.unused_data.strip(b"\x00") or self.f.read(1).strip(b"\x00"):
                    raise ValueError("data after the end of the compressed stream")
                return b""
            else:
                chunk = self.f.read(_CHUNK)
                if not chunk:
                    raise EOFError
                out = self.d.decompress(chunk, n)
            if out:
                return out

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        pass


def check_whole(path: Path, header: Header, label: str) -> None:
    """Raise InputError unless the file's voxel data is complete, intact and exactly what the header describes."""
    name = path.name.lower()
    if name.endswith((".nii", ".nii.gz")):
        payload = _nifti_payload(path, header, label)
    elif name.endswith((".nrrd", ".nhdr")):
        payload = _nrrd_payload(path, label)
    elif name.endswith((".mha", ".mhd")):
        payload = _meta_payload(path, label)
    else:
        payload = None  # other formats SimpleITK reads: its own checks and the header bound only
    if payload is None:
        return
    expected = header.nbytes + payload.prefix
    got = _stream_length(payload, expected, label)
    if got < expected:
        raise InputError(
            f"{label}: the file is truncated: it holds {max(0, got - payload.prefix):,} bytes of voxel data where its "
            f"header describes {header.nbytes:,} (size {header.size})"
        )
    if got > expected:
        raise InputError(
            f"{label}: the file holds more voxel data than its header describes ({header.nbytes:,} bytes for size "
            f"{header.size}): wrong dimensions or data type in the header"
        )
