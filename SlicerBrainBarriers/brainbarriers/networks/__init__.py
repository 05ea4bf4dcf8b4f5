"""Network factory: ``build(name, in_channels, out_channels, **options)``.

Names: "hmrnet-p", "hmrnet-s" (fine, per-target binary networks), "coarse-unet" (coarse
localisation), and the comparison networks: the Table VI baselines "unet3d", "res-unet3d",
"unet3d-cse", "unet3d-sse", "unet3d-scse", "sepnet3d", "focusnet", and the companion papers'
"hnf-netv2", "hmedn", "focusnetv2". Any of them can serve as a one-stage, coarse or fine model.
Defaults are the papers' settings (or the documented choices where a paper is silent; see
docs/networks.md). Unknown options raise TypeError.
"""

from __future__ import annotations

import inspect

from torch import nn

from .focusnet import FocusNet
from .hmedn import HMEDN
from .hmrnet import HMRNet
from .hnfnet import HNFNetV2
from .unet import CoarseUNet
from .unet3d import VARIANTS as UNET_VARIANTS
from .unet3d import UNet3D

ZOO = tuple(UNET_VARIANTS) + ("focusnet", "hnf-netv2", "hmedn", "focusnetv2")
NAMES = ("hmrnet-p", "hmrnet-s", "coarse-unet") + ZOO

_HMR_P_OPTIONS = ("hr_width", "mr_widths", "activation", "head_kernel", "post_conv", "deep_supervision",
                  "calibration")
_HMR_S_OPTIONS = _HMR_P_OPTIONS + ("inter_slice_axis",)
_SEP_DEFAULT_WIDTHS = (16, 32, 64, 128, 256)  # separable convs: about half the weights per level


def _check(name: str, options: dict, allowed) -> None:
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise TypeError(f"{name}: unknown option(s) {unknown}; allowed: {sorted(allowed)}")


def _options_of(cls, exclude=()) -> list[str]:
    return [p for p in inspect.signature(cls).parameters
            if p not in ("in_channels", "out_channels") + tuple(exclude)]


def _tuples(options: dict) -> dict:
    """JSON recipes give lists; the networks take tuples."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in options.items()}


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
    options = _tuples(options)
    if name in UNET_VARIANTS:
        fixed = UNET_VARIANTS[name]
        allowed = _options_of(UNet3D, exclude=fixed)
        if name != "sepnet3d":
            allowed = [a for a in allowed if a not in ("inter_slice_axis", "inplane_levels")]
        _check(name, options, allowed)
        if name == "sepnet3d":
            options.setdefault("widths", _SEP_DEFAULT_WIDTHS)
        return UNet3D(in_channels, out_channels, **fixed, **options)
    if name == "hnf-netv2":
        _check(name, options, _options_of(HNFNetV2))
        return HNFNetV2(in_channels, out_channels, **options)
    if name == "hmedn":
        _check(name, options, _options_of(HMEDN))
        return HMEDN(in_channels, out_channels, **options)
    if name in ("focusnet", "focusnetv2"):
        _check(name, options, _options_of(FocusNet, exclude=("version",)))
        return FocusNet(in_channels, out_channels, version=1 if name == "focusnet" else 2, **options)
    raise ValueError(f"unknown network {name!r}; choose one of {NAMES}")


__all__ = ["NAMES", "ZOO", "build", "HMRNet", "CoarseUNet", "UNet3D", "HNFNetV2", "HMEDN", "FocusNet"]
