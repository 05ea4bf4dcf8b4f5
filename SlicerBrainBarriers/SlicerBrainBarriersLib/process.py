"""Run the core pipeline's command line in a child process and follow its progress.

Written with ``subprocess`` and reader threads rather than ``qt.QProcess`` so the same code runs
headless (tests, scripts) and inside Slicer, where the widget polls :meth:`PipelineProcess.poll`
from a ``qt.QTimer``. Reading happens on threads so a chatty child can never block on a full pipe.
"""

from __future__ import annotations

import atexit
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Callable


@dataclass
class ProgressEvent:
    """One progress line of ``--progress json`` (or a plain log line when ``stage`` is "log")."""

    stage: str
    fraction: float | None = None
    message: str = ""
    outputs: dict = field(default_factory=dict)

    @classmethod
    def from_line(cls, line: str, source: str = "stdout") -> ProgressEvent:
        """Parse one output line; anything that is not a progress object becomes a log event."""
        text = line.rstrip("\r\n")
        if source == "stdout" and text.startswith("{"):
            try:
                data = json.loads(text)
            except ValueError:
                data = None
            if isinstance(data, dict) and "stage" in data:
                fraction = data.get("fraction")
                return cls(
                    stage=str(data["stage"]),
                    fraction=float(fraction) if isinstance(fraction, (int, float)) else None,
                    message=str(data.get("message", "")),
                    outputs=dict(data.get("outputs") or {}),
                )
        return cls(stage="log", message=text)


class PipelineProcess:
    """A child process whose stdout carries JSON progress lines.

    States: "running", "done" (exit 0 and a "done" line), "failed", "cancelled".

    Args:
        command: program and arguments.
        env: environment for the child (None = inherit).
        cwd: working folder for the child.
        expect_result: success needs a "done" line (False: exit code 0 is enough, for commands
            without JSON progress such as ``brainbarriers models download``).
    """

    def __init__(
        self, command: Sequence[str], env: dict | None = None, cwd: str | None = None, expect_result: bool = True
    ) -> None:
        self.command = list(command)
        self.expect_result = expect_result
        self._events: queue.Queue[ProgressEvent] = queue.Queue()
        self._cancelled = False
        self.last_progress: ProgressEvent | None = None
        self.result: ProgressEvent | None = None
        self.error: str | None = None
        self._stderr_tail: deque[str] = deque(maxlen=20)
        kwargs: dict = {}
        if os.name == "nt":
            # own group for taskkill /T; no console window popping up from inside Slicer
            kwargs["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP | subprocess.CREATE_NO_WINDOW  # type: ignore[attr-defined]
        else:
            # Own process group, so cancel can end the whole tree (DataLoader workers etc.).
            kwargs["start_new_session"] = True
        self._proc = subprocess.Popen(
            self.command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            cwd=cwd,
            text=True,
            encoding="utf-8",
            errors="replace",
            bufsize=1,
            **kwargs,
        )
        self._readers = [
            threading.Thread(target=self._read, args=(self._proc.stdout, "stdout"), daemon=True),
            threading.Thread(target=self._read, args=(self._proc.stderr, "stderr"), daemon=True),
        ]
        for t in self._readers:
            t.start()
        _LIVE.add(self)

    @property
    def pid(self) -> int:
        return self._proc.pid

    def _read(self, stream, source: str) -> None:
        for line in iter(stream.readline, ""):
            event = ProgressEvent.from_line(line, source)
            if source == "stderr" and event.message.strip():
                self._stderr_tail.append(event.message)
            self._events.put(event)
        stream.close()

    @property
    def returncode(self) -> int | None:
        return self._proc.poll()

    @property
    def state(self) -> str:
        if self._cancelled:
            return "cancelled"
        code = self._proc.poll()
        if code is None or any(t.is_alive() for t in self._readers):
            return "running"
        if code == 0 and (self.result is not None or not self.expect_result):
            return "done"
        return "failed"

    def poll(self) -> list[ProgressEvent]:
        """Events that arrived since the last call (never blocks)."""
        events = []
        while True:
            try:
                event = self._events.get_nowait()
            except queue.Empty:
                break
            if event.stage == "done":
                self.result = event
            elif event.stage == "error":
                self.error = event.message
            elif event.stage != "log":
                self.last_progress = event
            events.append(event)
        return events

    def failure_message(self) -> str:
        """One line saying why the run failed (the child's own error line when it sent one)."""
        if self.error:
            return self.error
        if self._stderr_tail:
            return self._stderr_tail[-1]
        return f"the segmentation process exited with code {self.returncode} without a result"

    def wait(self, timeout: float | None = None, on_event=None, interval: float = 0.05) -> str:
        """Block until the process ends (or ``timeout`` seconds pass: then cancel); returns the state."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            for event in self.poll():
                if on_event is not None:
                    on_event(event)
            if self.state != "running":
                break
            if deadline is not None and time.monotonic() > deadline:
                self.cancel()
                break
            time.sleep(interval)
        for event in self.poll():  # the last lines read before the pipes closed
            if on_event is not None:
                on_event(event)
        return self.state

    def cancel(self, grace: float = 3.0, wait: bool = True, on_ended: Callable[[], None] | None = None) -> None:
        """End the child and everything it started.

        Args:
            grace: seconds between the polite stop (SIGTERM) and the forced one (SIGKILL).
            wait: block until the tree is gone; False returns at once (the GUI thread must never
                wait on a child) and finishes on a background thread.
            on_ended: called (on that thread when ``wait`` is False) once the child has ended.
        """
        self._cancelled = True
        if wait:
            self._end(grace, on_ended)
        else:
            threading.Thread(target=self._end, args=(grace, on_ended), daemon=True, name="cancel").start()

    def _end(self, grace: float, on_ended: Callable[[], None] | None) -> None:
        if self._proc.poll() is None:
            if os.name == "nt":
                subprocess.run(
                    ["taskkill", "/F", "/T", "/PID", str(self._proc.pid)],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    check=False,
                )
            else:
                _signal_group(self._proc.pid, signal.SIGTERM)
                try:
                    self._proc.wait(timeout=grace)
                except subprocess.TimeoutExpired:
                    pass
                _signal_group(self._proc.pid, signal.SIGKILL)
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        for t in self._readers:
            t.join(timeout=2)
        if on_ended is not None:
            on_ended()

    @property
    def ended(self) -> bool:
        """The child has exited (after a cancel, the background stop has finished)."""
        return self._proc.poll() is not None


#: Started processes; the ones still running are ended when this interpreter (Slicer) exits.
_LIVE: weakref.WeakSet = weakref.WeakSet()


@atexit.register
def _end_live_processes() -> None:
    for proc in list(_LIVE):
        if proc.returncode is None:
            proc.cancel(grace=1.0)


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)  # the group id equals the child's pid (start_new_session)
    except (ProcessLookupError, PermissionError):
        pass


class PythonNotFound(RuntimeError):
    """Inside Slicer, no ``PythonSlicer`` to run the pipeline with."""


def python_executable() -> str:
    """Python to run the pipeline with: Slicer's ``PythonSlicer`` inside Slicer, else this one.

    Inside Slicer ``sys.executable`` is the Slicer application itself, so it is never used there:
    PythonSlicer is looked for next to Slicer (``<Slicer home>/bin``), then on PATH; when it is
    missing this raises :class:`PythonNotFound` with a one-line message.
    """
    import shutil

    try:
        import slicer

        app = getattr(slicer, "app", None)
    except ImportError:
        app = None
    if app is None:
        return sys.executable
    name = "PythonSlicer.exe" if os.name == "nt" else "PythonSlicer"
    places = [os.path.join(str(app.slicerHome), "bin", name)] if getattr(app, "slicerHome", None) else []
    for place in places:
        if os.path.isfile(place) and os.access(place, os.X_OK):
            return place
    found = shutil.which(name)
    if found:
        return found
    raise PythonNotFound(
        f"{name} was not found (looked in {', '.join(places) or 'Slicer bin'} and on PATH); "
        "reinstall Slicer, or run the brainbarriers command line outside Slicer"
    )
