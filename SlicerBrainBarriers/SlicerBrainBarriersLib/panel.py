"""What the panel shows, as plain data (tested headless; the widget only copies it into Qt)."""

from __future__ import annotations

from brainbarriers.structures import OUTPUT_LABELS

from .process import ProgressEvent

QUALITIES = (("fast", "Fast"), ("full", "Full (adds flip test-time augmentation, about 2x slower)"))

STAGE_NAMES = {
    "start": "Starting",
    "load": "Loading inputs",
    "prepare": "Preparing inputs",
    "register": "Registering inputs",
    "preprocess": "Preprocessing",
    "coarse": "Locating structures (coarse network)",
    "fine": "Segmenting structures (fine networks)",
    "postprocess": "Post-processing",
    "export": "Writing results",
    "download": "Downloading the model",
    "done": "Done",
    "error": "Failed",
}


def structure_items() -> list[tuple[str, str, tuple[int, int, int]]]:
    """(key, display name, RGB colour) of every output label, in label order."""
    return [(lab.key, lab.name, lab.color) for lab in OUTPUT_LABELS]


def progress_percent(event: ProgressEvent) -> int | None:
    if event.fraction is None:
        return None
    return int(round(100 * min(max(event.fraction, 0.0), 1.0)))


def stage_text(event: ProgressEvent) -> str:
    """One line under the progress bar: the stage and the pipeline's own message."""
    name = STAGE_NAMES.get(event.stage, event.stage.replace("_", " ").capitalize())
    return f"{name}: {event.message}" if event.message else name


def edited_question(segment_name: str) -> str:
    """Text of the dialog shown before an edited segment would be touched."""
    return (
        f"The segment '{segment_name}' was edited after it was generated (or was made by hand).\n\n"
        "Replace it with the new result, keep your version, or add the new result as a separate segment?"
    )


def failure_text(message: str, registered: bool) -> str:
    """What the panel says when the pipeline refused or failed, with the way out when there is one."""
    text = f"Segmentation failed: {message}"
    if ("does not line up" in message or "misaligned" in message.lower()) and not registered:
        text += ("\n\nThe inputs do not line up. Tick 'Co-register MR inputs' to align the MR volumes to the "
                 "reference rigidly, or register them yourself (General Registration) and harden the transform.")
    return text


def flagged_text(count: int) -> str:
    """The Review section's summary line."""
    if count == 0:
        return "No segment flagged by the quality checks."
    return f"{count} segment{'s' if count != 1 else ''} flagged: check {'them' if count != 1 else 'it'} first."
