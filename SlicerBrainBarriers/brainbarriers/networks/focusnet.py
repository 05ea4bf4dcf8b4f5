"""FocusNet (Gao et al., MICCAI 2019) and FocusNetv2 (Gao et al., MedIA 2020): segment everything
with a main network, find small structures, and segment them again at full resolution.

* S-Net: a U-Net of SE-residual blocks (residual block with channel squeeze-and-excitation,
  reduction 2) with few down-samplings. FocusNetv2: two 2x down-samplings and a DenseASPP at 1/4
  (dilations 3, 6, 12, 18; each layer a 1x1x1 bottleneck then a dilated 3x3x3 conv that sees the
  input and all earlier layers). The paper dilates in-plane only (its CT has thick slices):
  ``slice_axis`` (default None: isotropic, as ABCs is resampled to 1.2 mm) keeps dilation 1 there.
  FocusNet (v1 here): three down-samplings, no DenseASPP.
* SOL-Net: one SE-residual block on the last decoder features and a 1x1x1 conv giving one centre
  heat map per small structure (sigmoid; trained by L2 towards a Gaussian of sd 5 voxels at the
  structure's centre).
* SOS-Net (one per small structure): the last decoder features and the raw input, cropped
  ("ROI-pooled") around the heat-map maximum with a fixed ``roi_size``, through two SE-residual
  blocks and a 1x1x1 conv: a binary mask logit. In the output, the structure's class logit inside
  the ROI is replaced by ``s + logsumexp(other logits)``, which makes its softmax probability
  exactly sigmoid(s) (the paper overlays the small-structure masks on S-Net's result).

Which classes are "small" is ``small_classes`` (default: every foreground class).
Choices where the papers are silent (they report no parameter counts): widths (24, 48, 96)
(v2, 1.7 M parameters) and (16, 32, 64, 128) (v1, 2.7 M like the HMRNet paper's U-Net),
SOS width 24, ROI size (32, 32, 32) voxels (paper: 8 x 64 x 64 at 3 x 1 x 1 mm; ABCs is
isotropic). Training-mode output: ``[S-Net logits]`` with
``aux = {"heatmap", "sos", "roi_starts", "small_classes"}``; the losses and the adversarial
shape autoencoder (:class:`ShapeAutoencoder`) are used by brainbarriers_training.losses_zoo.
"""

from __future__ import annotations

import torch
from torch import nn

from .blocks import DilatedUnit, OutputList, ResBlock, as_float32


def se_res(cin: int, cout: int, stride=1, dilation=1, activation: str = "relu") -> ResBlock:
    return ResBlock(cin, cout, activation, stride=stride, dilation=dilation, attention="cse")


def axis_dilation(d: int, slice_axis: int | None) -> tuple[int, int, int]:
    return tuple(1 if ax == slice_axis else d for ax in range(3))  # type: ignore[return-value]


class DenseASPP(nn.Module):
    """Densely connected atrous spatial pyramid pooling (Yang et al.): y_i = conv3_{d_i}(conv1([x, y_1..y_{i-1}])),
    output conv1x1([x, y_1, ..., y_n]) back to the input width."""

    def __init__(self, channels: int, dilations=(3, 6, 12, 18), growth: int | None = None,
                 slice_axis: int | None = None, activation: str = "relu"):
        super().__init__()
        growth = growth or max(1, channels // 4)
        self.layers = nn.ModuleList()
        for i, d in enumerate(dilations):
            cin = channels + i * growth
            self.layers.append(nn.Sequential(
                DilatedUnit(cin, 2 * growth, (1, 1, 1), activation),
                DilatedUnit(2 * growth, growth, (3, 3, 3), activation, 1, axis_dilation(d, slice_axis))))
        self.out = DilatedUnit(channels + len(dilations) * growth, channels, (1, 1, 1), activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = [x]
        for layer in self.layers:
            feats.append(layer(torch.cat(feats, 1)))
        return self.out(torch.cat(feats, 1))


class FocusNet(nn.Module):
    """FocusNet / FocusNetv2 segmentation network (see module docstring).

    Args:
        in_channels, out_channels: input modalities, output classes.
        version: 1 (FocusNet) or 2 (FocusNetv2).
        widths: S-Net widths, full resolution first (v2: three, v1: four levels).
        small_classes: classes refined by SOL/SOS (default every foreground class; () = S-Net only).
        roi_size: SOS crop size in voxels (clamped to the input size).
        sos_width: SOS-Net width.
        slice_axis: axis kept undilated in DenseASPP (None: dilate all axes).
        activation: "relu" or "leaky_relu".
    """

    def __init__(self, in_channels: int, out_channels: int, version: int = 2, widths=None, small_classes=None,
                 roi_size=(32, 32, 32), sos_width: int = 24, slice_axis: int | None = None,
                 activation: str = "relu"):
        super().__init__()
        if version not in (1, 2):
            raise ValueError("version must be 1 or 2")
        widths = [int(w) for w in (widths or ((24, 48, 96) if version == 2 else (16, 32, 64, 128)))]
        self.version = version
        self.deep_supervision = False
        self.small_classes = tuple(range(1, out_channels) if small_classes is None else (int(c) for c in small_classes))
        if any(not 0 < c < out_channels for c in self.small_classes):
            raise ValueError(f"small_classes must be foreground classes 1..{out_channels - 1}")
        self.roi_size = tuple(int(r) for r in roi_size)
        self.required_multiple = (2 ** (len(widths) - 1),) * 3
        act = activation
        self.encoder = nn.ModuleList([se_res(in_channels, widths[0], activation=act)])
        for i in range(1, len(widths)):
            self.encoder.append(nn.Sequential(se_res(widths[i - 1], widths[i], 2, activation=act),
                                              se_res(widths[i], widths[i], activation=act)))
        self.context = DenseASPP(widths[-1], slice_axis=slice_axis, activation=act) if version == 2 else nn.Identity()
        self.ups, self.decoder = nn.ModuleList(), nn.ModuleList()
        for i in range(len(widths) - 2, -1, -1):
            self.ups.append(nn.ConvTranspose3d(widths[i + 1], widths[i], 2, stride=2))
            self.decoder.append(se_res(2 * widths[i], widths[i], activation=act))
        self.head = nn.Conv3d(widths[0], out_channels, 1)
        k = len(self.small_classes)
        if k:
            self.sol = nn.Sequential(se_res(widths[0], widths[0], activation=act), nn.Conv3d(widths[0], k, 1))
            self.sos = nn.ModuleList([
                nn.Sequential(se_res(widths[0] + in_channels, sos_width, activation=act),
                              se_res(sos_width, sos_width, activation=act), nn.Conv3d(sos_width, 1, 1))
                for _ in range(k)])

    def snet(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for enc in self.encoder:
            x = enc(x)
            skips.append(x)
        x = self.context(skips.pop())
        for up, dec in zip(self.ups, self.decoder):
            x = dec(torch.cat([up(x), skips.pop()], 1))
        return x

    def roi_starts(self, heat: torch.Tensor) -> torch.Tensor:
        """(N, K, 3) corner of the ROI centred on each heat map's maximum, kept inside the volume."""
        n, k = heat.shape[:2]
        shape = heat.shape[2:]
        roi = [min(r, s) for r, s in zip(self.roi_size, shape)]
        flat = heat.reshape(n, k, -1).argmax(-1)
        starts = []
        for d in range(3):
            stride = int(torch.tensor(shape[d + 1:]).prod()) if d < 2 else 1
            centre = (flat // stride) % shape[d]
            starts.append((centre - roi[d] // 2).clamp(0, shape[d] - roi[d]))
        return torch.stack(starts, -1)

    def forward(self, x: torch.Tensor, starts: torch.Tensor | None = None) -> torch.Tensor | OutputList:
        """``starts`` (N, K, 3) overrides the ROI corners found from the heat maps."""
        feats = self.snet(x)
        logits = self.head(feats)
        if not self.small_classes:
            return OutputList([logits]) if self.training else as_float32(logits)
        heat = self.sol(feats)
        if starts is None:
            starts = self.roi_starts(heat.detach())
        roi = [min(r, s) for r, s in zip(self.roi_size, x.shape[2:])]
        inputs = torch.cat([feats, x], 1)
        sos = []
        for j, net in enumerate(self.sos):
            crops = [inputs[(b, slice(None)) + self._box(starts[b, j], roi)] for b in range(x.shape[0])]
            sos.append(net(torch.stack(crops)))
        if self.training:
            return OutputList([logits], {"heatmap": heat, "sos": sos, "roi_starts": starts,
                                         "small_classes": self.small_classes})
        return as_float32(self.paste(logits, sos, starts, roi))

    @staticmethod
    def _box(start: torch.Tensor, roi) -> tuple[slice, ...]:
        return tuple(slice(int(s), int(s) + r) for s, r in zip(start, roi))

    def paste(self, logits: torch.Tensor, sos: list[torch.Tensor], starts: torch.Tensor, roi) -> torch.Tensor:
        """Class c's logit inside its ROI := s + logsumexp(other classes), so softmax_c = sigmoid(s) there."""
        out = logits.clone()
        for j, c in enumerate(self.small_classes):
            others = [i for i in range(logits.shape[1]) if i != c]
            for b in range(logits.shape[0]):
                box = self._box(starts[b, j], roi)
                region = out[(b, others) + box]
                out[(b, c) + box] = sos[j][b, 0] + torch.logsumexp(region, 0)
        return out


class ShapeAutoencoder(nn.Module):
    """Adversarial autoencoder of FocusNetv2 (Fig. 4) on one-channel ROI masks.

    Encoder: stride-2 conv units ``widths``; decoder: transposed convs back to the ROI size and a
    sigmoid. ``features(y)`` returns the latent code and the decoder's feature maps (the multi-scale
    representation the shape loss compares); ``forward(y)`` the reconstruction. Widths are not
    given in the paper (chosen: 8, 16, 32).
    """

    def __init__(self, widths=(8, 16, 32), activation: str = "relu"):
        super().__init__()
        self.required_multiple = (2 ** len(widths),) * 3
        enc, cin = [], 1
        for w in widths:
            enc.append(DilatedUnit(cin, w, (3, 3, 3), activation, 2))
            cin = w
        self.encoder = nn.Sequential(*enc)
        self.decoder = nn.ModuleList()
        for w in list(widths[-2::-1]) + [widths[0]]:
            self.decoder.append(nn.Sequential(nn.ConvTranspose3d(cin, w, 2, stride=2),
                                              nn.InstanceNorm3d(w, affine=True), nn.ReLU()))
            cin = w
        self.out = nn.Conv3d(cin, 1, 1)

    def features(self, y: torch.Tensor) -> list[torch.Tensor]:
        z = self.encoder(y)
        feats = [z]
        for up in self.decoder:
            feats.append(up(feats[-1]))
        return feats

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.out(self.features(y)[-1]))
