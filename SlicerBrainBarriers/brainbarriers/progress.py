"""Progress reporting: a tqdm bar on a terminal, JSON lines for the Slicer module, or nothing.

JSON protocol (one object per line on stdout, flushed):
``{"stage": str, "fraction": float 0..1 (overall), "message": str}``; on success the last line is
``{"stage": "done", "fraction": 1.0, "message": ..., "outputs": {...}}``; on failure
``{"stage": "error", "message": "<one line>"}``.
"""

from __future__ import annotations

import json
import sys
from typing import TextIO


class NullProgress:
    def __call__(self, stage: str, fraction: float, message: str = "") -> None:
        pass

    def done(self, message: str, outputs: dict | None = None) -> None:
        pass

    def error(self, message: str) -> None:
        pass

    def close(self) -> None:
        pass


class JsonProgress(NullProgress):
    """One JSON object per line (the Slicer module's subprocess reads these)."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout

    def _emit(self, obj: dict) -> None:
        self.stream.write(json.dumps(obj) + "\n")
        self.stream.flush()

    def __call__(self, stage: str, fraction: float, message: str = "") -> None:
        self._emit({"stage": stage, "fraction": round(float(min(max(fraction, 0.0), 1.0)), 4), "message": message})

    def done(self, message: str, outputs: dict | None = None) -> None:
        self._emit({"stage": "done", "fraction": 1.0, "message": message, "outputs": outputs or {}})

    def error(self, message: str) -> None:
        self._emit({"stage": "error", "message": message})


class TqdmProgress(NullProgress):
    """A percentage bar on stderr (silent when stderr is not a terminal)."""

    def __init__(self, enabled: bool | None = None) -> None:
        from tqdm import tqdm

        enabled = sys.stderr.isatty() if enabled is None else enabled
        self.bar = tqdm(total=100, disable=not enabled, file=sys.stderr, bar_format="{desc} {bar} {percentage:3.0f}% {elapsed}")

    def __call__(self, stage: str, fraction: float, message: str = "") -> None:
        self.bar.set_description_str(f"{stage}: {message}"[:60].ljust(60))
        self.bar.update(max(0, round(fraction * 100) - self.bar.n))

    def done(self, message: str, outputs: dict | None = None) -> None:
        self(("done"), 1.0, message)
        self.close()

    def close(self) -> None:
        self.bar.close()


def make_progress(kind: str | None) -> NullProgress:
    """"json" -> JsonProgress, "bar"/None -> TqdmProgress (terminal only), "none" -> NullProgress."""
    if kind == "json":
        return JsonProgress()
    if kind == "none":
        return NullProgress()
    return TqdmProgress()
