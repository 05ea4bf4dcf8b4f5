"""Device choices for the panel: Auto, CPU, CUDA (with the GPU's name and memory), MPS.

The panel must not import torch (nor create a CUDA context) in Slicer's own process: it shows
:func:`unprobed_choices` at once and asks a child process (``python -m
SlicerBrainBarriersLib.devices``) what the machine has; the child prints one JSON progress line
``{"stage": "done", "outputs": {"choices": [...]}}`` read with :class:`~.process.PipelineProcess`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class DeviceChoice:
    value: str  # what the command line's --device takes
    label: str  # what the panel shows
    available: bool


def unprobed_choices() -> list[DeviceChoice]:
    """The four choices before anything is known about the machine (no torch import)."""
    return [
        DeviceChoice("auto", "Auto (CUDA, then Apple MPS, then CPU)", True),
        DeviceChoice("cpu", "CPU", True),
        DeviceChoice("cuda", "CUDA (checking...)", True),
        DeviceChoice("mps", "Apple MPS (checking...)", True),
    ]


def device_choices(torch_module=None) -> list[DeviceChoice]:
    """The four choices, annotated with what this machine has (imports torch: child process only).

    Args:
        torch_module: the imported torch (None: import it here; missing torch = CPU only known).
    """
    torch = torch_module
    if torch is None:
        try:
            import torch  # noqa: F811
        except Exception:  # missing, or a broken install (DLL/CUDA load errors): CPU and Auto remain
            torch = None
    cuda_label, cuda_ok = "CUDA (no NVIDIA GPU found)", False
    mps_ok = False
    if torch is not None:
        try:
            if torch.cuda.is_available():
                props = torch.cuda.get_device_properties(0)
                cuda_label = f"CUDA ({props.name}, {props.total_memory / 2**30:.0f} GB)"
                cuda_ok = True
            backend = getattr(torch.backends, "mps", None)
            mps_ok = bool(backend is not None and backend.is_available())
        except Exception as exc:  # a broken driver must not break the panel
            cuda_label = f"CUDA (unusable: {exc})"
    best = "CUDA" if cuda_ok else "Apple MPS" if mps_ok else "CPU"
    return [
        DeviceChoice("auto", f"Auto ({best})", True),
        DeviceChoice("cpu", "CPU", True),
        DeviceChoice("cuda", cuda_label, cuda_ok),
        DeviceChoice("mps", "Apple MPS" if mps_ok else "Apple MPS (not available)", mps_ok),
    ]


def choices_from_outputs(outputs: dict) -> list[DeviceChoice]:
    """Choices sent by the child process (its ``done`` line's outputs)."""
    return [DeviceChoice(**c) for c in outputs.get("choices", [])]


def main() -> None:
    print(json.dumps({"stage": "done", "outputs": {"choices": [asdict(c) for c in device_choices()]}}), flush=True)


if __name__ == "__main__":
    main()
