"""One run at a time per output folder and case: a lock file held from the overwrite check to the rename.

Two ``segment`` runs into the same folder and case would otherwise both pass the "outputs exist?"
check and rename their files over each other's (a .seg.nrrd from one run, a report from the other).
The lock is ``<out>/.<case>.lock``, locked with ``flock`` on POSIX (the kernel releases it when the
process dies, so a killed run never leaves a stale lock) and created exclusively elsewhere. The file is
removed when the run ends, so a failed run leaves nothing in the output folder.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

from .errors import OutputError

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None


def lock_path(out_dir: str | Path, case: str) -> Path:
    return Path(out_dir) / f".{case}.lock"


def _busy(path: Path, case: str, stale_hint: bool = False) -> OutputError:
    try:
        holder = path.read_text(encoding="utf-8").strip()
    except OSError:
        holder = ""
    return OutputError(
        f"another brainbarriers run is writing case {case} in {path.parent}{f' ({holder})' if holder else ''}; "
        f"wait for it to finish or choose another --output or --case"
        + (f" (if no run is active, delete {path})" if stale_hint else "")
    )


@contextlib.contextmanager
def case_lock(out_dir: str | Path, case: str) -> Iterator[Path]:
    """Hold the lock of ``case`` in ``out_dir`` (OutputError at once if another run holds it)."""
    path = lock_path(out_dir, case)
    stamp = f"pid {os.getpid()}, started {time.strftime('%Y-%m-%d %H:%M:%S')}"
    if fcntl is None:
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            raise _busy(path, case, stale_hint=True) from None
        except OSError as exc:
            raise OutputError(f"cannot create the lock file {path} ({exc.strerror or exc})") from None
        try:
            os.write(fd, stamp.encode())
            os.close(fd)
            yield path
        finally:
            with contextlib.suppress(OSError):
                path.unlink()
        return
    while True:
        try:
            fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
        except OSError as exc:
            raise OutputError(f"cannot create the lock file {path} ({exc.strerror or exc})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise _busy(path, case) from None
        # The holder before us may have removed the file between our open and our lock: then the lock
        # is on a file nobody else sees, so try again on the one at the path.
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, stamp.encode())
        yield path
    finally:
        with contextlib.suppress(OSError):
            path.unlink()  # before the unlock, so a waiting opener sees the file is gone
        os.close(fd)
