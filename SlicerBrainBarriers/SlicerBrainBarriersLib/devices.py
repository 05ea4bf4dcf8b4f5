"""Device choices for the panel: Auto, CPU, CUDA (with the GPU's name and memory), MPS."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DeviceChoice:
    value: str  # what the command line's --device takes
    label: str  # what the panel shows
    available: bool


def device_choices(torch_module=None) -> list[DeviceChoice]:
    """The four choices, annotated with what this machine has.

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
