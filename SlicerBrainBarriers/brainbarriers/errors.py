"""Errors that reach the user as one line (the command line prints them without a traceback)."""

from __future__ import annotations


class BrainBarriersError(Exception):
    """A problem with the user's input, model or environment; its message is one line."""

    exit_code = 2


class InputError(BrainBarriersError):
    """An input image is missing, unreadable or unsuitable."""


class BundleError(BrainBarriersError):
    """A model bundle is missing, invalid, corrupt or tampered with."""


class DownloadError(BundleError):
    """A download failed, was truncated or did not match its SHA-256."""


class OutputError(BrainBarriersError):
    """An output cannot be written (exists without --overwrite, folder not writable)."""


class Cancelled(BrainBarriersError):
    """The run was cancelled by a signal; ``exit_code`` is 128 + signal number."""

    def __init__(self, message: str, exit_code: int = 130) -> None:
        super().__init__(message)
        self.exit_code = exit_code
