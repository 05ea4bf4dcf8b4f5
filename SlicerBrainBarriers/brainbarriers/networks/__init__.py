"""Network factory: ``build(name, in_channels, out_channels, **options)``.

Names: "hmrnet-p", "hmrnet-s" (fine, per-target binary networks) and "coarse-unet" (coarse
localisation). Defaults are the paper's settings. Unknown options raise TypeError.
"""

from __future__ import annotations

import inspect

from torch import nn

from .hmrnet import HMRNet
from .unet import CoarseUNet

NAMES = ("hmrnet-p", "hmrnet-s", "coarse-unet")

_HMR_P_OPTIONS = ("hr_width", "mr_widths", "activation", "head_kernel", "post_conv", "deep_supervision",
                  "calibration")
_HMR_S_OPTIONS = _HMR_P_OPTIONS + ("inter_slice_axis",)


def _check(name: str, options: dict, allowed) -> None:
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise TypeError(f"{name}: unknown option(s) {unknown}; allowed: {sorted(allowed)}")


def build(name: str, in_channels: int, out_channels: int, **options) -> nn.Module:
    """Build a network by name with default (paper) settings overridden by ``options``."""
    if name in ("hmrnet-p", "hmrnet-s"):
        variant = name[-1]
        _check(name, options, _HMR_S_OPTIONS if variant == "s" else _HMR_P_OPTIONS)
        if "mr_widths" in options:
            options["mr_widths"] = tuple(options["mr_widths"])
        return HMRNet(in_channels, out_channels, variant=variant, **options)
    if name == "coarse-unet":
        allowed = [p for p in inspect.signature(CoarseUNet).parameters if p not in ("in_channels", "out_channels")]
        _check(name, options, allowed)
        return CoarseUNet(in_channels, out_channels, **options)
    raise ValueError(f"unknown network {name!r}; choose one of {NAMES}")


__all__ = ["NAMES", "build", "HMRNet", "CoarseUNet"]
