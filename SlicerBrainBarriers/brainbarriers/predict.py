"""Running networks on arrays: device choice, GPU-OOM fallback, padding, sliding window, flip TTA.

MONAI's sliding_window_inference is not used because MONAI is not a runtime dependency of the
Slicer module; the window here is small: equal-shape tiles, Gaussian blending, batched.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import torch

from .networks.inference import inference_context, prepare_for_inference
from .networks.padding import predict_padded


def _mps_available() -> bool:
    return getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()


def choose_device(name: str = "auto") -> torch.device:
    """"auto" -> cuda, then mps, then cpu; an explicit device that is absent is refused."""
    from .errors import BrainBarriersError

    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise BrainBarriersError("--device cuda: no CUDA GPU is available to this torch build; use --device cpu")
    if name == "mps" and not _mps_available():
        raise BrainBarriersError("--device mps: Apple MPS is not available; use --device cpu")
    if name not in ("cpu", "cuda", "mps"):
        raise BrainBarriersError(f"unknown device {name!r}; choose auto, cpu, cuda or mps")
    return torch.device(name)


def _is_oom(exc: BaseException) -> bool:
    if isinstance(exc, getattr(torch, "OutOfMemoryError", ())) or isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def tile_starts(length: int, roi: int, overlap: float = 0.25) -> list[int]:
    """Start positions of equal-size tiles covering ``length`` with at least ``overlap`` overlap."""
    if length <= roi:
        return [0]
    n = math.ceil((length - roi) / (roi * (1 - overlap))) + 1
    return sorted({int(round(s)) for s in np.linspace(0, length - roi, n)})


def gaussian_weight(shape: tuple[int, ...], sigma_scale: float = 0.125) -> torch.Tensor:
    """Separable Gaussian blending weight, highest at the tile centre (never zero)."""
    w = torch.ones(shape)
    for d, n in enumerate(shape):
        x = torch.arange(n, dtype=torch.float32) - (n - 1) / 2
        g = torch.exp(-0.5 * (x / max(n * sigma_scale, 1.0)) ** 2)
        view = [1] * len(shape)
        view[d] = n
        w = w * g.view(view)
    return w.clamp_min(1e-3)


class Runner:
    """Runs networks on one device with one precision; on GPU out-of-memory it moves to the CPU.

    Args:
        device: torch device.
        precision: "fp32" or "bf16" (passed to inference_context).
        batch_size: tiles/flips per forward.
    """

    def __init__(self, device: torch.device, precision: str = "fp32", batch_size: int = 1) -> None:
        self.device = torch.device(device)
        self.precision = precision
        self.batch_size = max(1, int(batch_size))
        self.notes: list[str] = []

    def prepare(self, net: torch.nn.Module) -> torch.nn.Module:
        return prepare_for_inference(net).to(self.device)

    def _fallback(self, net: torch.nn.Module) -> None:
        note = f"{self.device.type} ran out of memory; continuing on the CPU"
        self.notes.append(note)
        self.device = torch.device("cpu")
        self.precision = "fp32"
        net.to(self.device)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def forward(self, net: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Softmax probabilities (N, K, ...) on the CPU, padding to the net's required multiple."""
        while True:
            try:
                if next(net.parameters()).device != self.device:
                    net.to(self.device)
                with inference_context(self.device, self.precision):
                    logits = predict_padded(net, x.to(self.device))
                    return torch.softmax(logits.float(), dim=1).cpu()
            except Exception as exc:  # noqa: BLE001 - only OOM is handled, the rest re-raised
                if self.device.type == "cpu" or not _is_oom(exc):
                    raise
                self._fallback(net)

    def forward_tta(self, net: torch.nn.Module, x: torch.Tensor, flip_axes: tuple[int, ...] = ()) -> torch.Tensor:
        """Probabilities for one input (1, C, ...) averaged over all flips of ``flip_axes`` (spatial 0..2)."""
        combos = [c for r in range(len(flip_axes) + 1) for c in itertools.combinations(flip_axes, r)]
        total = None
        for start in range(0, len(combos), self.batch_size):
            chunk = combos[start : start + self.batch_size]
            batch = torch.cat([x.flip([2 + a for a in c]) if c else x for c in chunk])
            probs = self.forward(net, batch)
            for i, c in enumerate(chunk):
                p = probs[i : i + 1]
                p = p.flip([2 + a for a in c]) if c else p
                total = p if total is None else total + p
        return total / len(combos)

    def predict(
        self,
        net: torch.nn.Module,
        array: np.ndarray,
        max_shape: tuple[int, int, int],
        flip_axes: tuple[int, ...] = (),
        overlap: float = 0.25,
    ) -> np.ndarray:
        """Probabilities (K, D, H, W) for a (C, D, H, W) array; sliding window where it exceeds ``max_shape``."""
        x = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))[None]
        spatial = x.shape[2:]
        roi = tuple(min(int(s), int(m)) for s, m in zip(spatial, max_shape))
        if roi == tuple(spatial):
            return self.forward_tta(net, x, flip_axes)[0].numpy()
        starts = list(itertools.product(*[tile_starts(s, r, overlap) for s, r in zip(spatial, roi)]))
        weight = gaussian_weight(roi)
        acc = None
        norm = torch.zeros(spatial)
        tiles = [tuple(slice(s, s + r) for s, r in zip(st, roi)) for st in starts]
        per_forward = max(1, self.batch_size // max(1, 2 ** len(flip_axes)))
        for i in range(0, len(tiles), per_forward):
            group = tiles[i : i + per_forward]
            if flip_axes:
                probs = [self.forward_tta(net, x[(slice(None), slice(None), *t)], flip_axes)[0] for t in group]
            else:
                batch = torch.cat([x[(slice(None), slice(None), *t)] for t in group])
                probs = list(self.forward(net, batch))
            for t, p in zip(group, probs):
                if acc is None:
                    acc = torch.zeros((p.shape[0], *spatial))
                acc[(slice(None), *t)] += p * weight
                norm[t] += weight
        return (acc / norm).numpy()
