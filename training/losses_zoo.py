"""Losses of the comparison networks: HMEDN (difficulty-guided cross-entropy, contour regression)
and FocusNet/FocusNetv2 (centre heat maps, small-structure masks, adversarial shape constraint).

Targets are integer label maps (N, 1, *spatial) or (N, *spatial), as for brainbarriers_training.losses.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from brainbarriers.networks.padding import pad_to_multiple
from torch import nn

from .losses import DiceCELoss, _labels, downsample_labels

# ---------------------------------------------------------------- label-map helpers


def boundary(mask: torch.Tensor) -> torch.Tensor:
    """Inner boundary of binary masks (N, *spatial): voxels of the mask with a 26-neighbour outside it.

    Stands in for the paper's Canny detector, whose edges on a binary label map are these voxels."""
    m = mask.float().unsqueeze(1)
    eroded = -F.max_pool3d(-m, 3, stride=1, padding=1)
    return (m - eroded).clamp_min(0)[:, 0]


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian filter (sd ``sigma`` voxels, radius 3 sd, zero outside) of (N, *spatial)."""
    radius = max(1, int(math.ceil(3 * sigma)))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-t * t / (2 * sigma * sigma))
    k = k / k.sum()
    y = x.unsqueeze(1)
    for d in range(3):
        shape = [1, 1, 1, 1, 1]
        shape[2 + d] = k.numel()
        pad = [0, 0, 0, 0, 0, 0]
        pad[2 * (2 - d)] = pad[2 * (2 - d) + 1] = radius
        y = F.conv3d(F.pad(y, pad), k.view(shape))
    return y[:, 0]


def _normalised(x: torch.Tensor) -> torch.Tensor:
    peak = x.flatten(1).amax(1).clamp_min(1e-12).view(-1, *[1] * (x.dim() - 1))
    return x / peak


def difficulty_weights(labels: torch.Tensor, num_classes: int, mu0: float = 1.0, mu: float | Sequence[float] = 25.0,
                       sigma: float = 8.0) -> torch.Tensor:
    """HMEDN eq. 4: w(v) = mu_0 + sum_k mu_k SB_k(v), SB_k the Gaussian-smoothed (sd ``sigma``) boundary
    of class k (k = 1..K-1) scaled to a maximum of 1 per sample."""
    mus = [float(mu)] * (num_classes - 1) if isinstance(mu, (int, float)) else [float(m) for m in mu]
    w = torch.full(labels.shape, float(mu0), dtype=torch.float32, device=labels.device)
    for k, mk in zip(range(1, num_classes), mus):
        b = boundary(labels == k)
        if b.any():
            w = w + mk * _normalised(gaussian_blur(b, sigma))
    return w


def contour_target(labels: torch.Tensor, num_classes: int, sigma: float = 2.0) -> torch.Tensor:
    """HMEDN contour-regression target: the union of the class boundaries smoothed with sd ``sigma``
    (paper: 2) and scaled to a maximum of 1: a per-voxel 'probability of being on a boundary'."""
    b = torch.zeros(labels.shape, dtype=torch.float32, device=labels.device)
    for k in range(1, num_classes):
        b = torch.maximum(b, boundary(labels == k))
    return _normalised(gaussian_blur(b, sigma))


# ---------------------------------------------------------------- HMEDN


class DifficultyGuidedCELoss(nn.Module):
    """HMEDN eq. 5: L_s = -(1/N) sum_v w(v) log p(v, y_v), with w from :func:`difficulty_weights`
    (mu_0 = 1, mu_k = 25, sd 8: the paper's settings)."""

    def __init__(self, mu0: float = 1.0, mu: float | Sequence[float] = 25.0, sigma: float = 8.0):
        super().__init__()
        self.mu0, self.mu, self.sigma = mu0, mu, sigma

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        labels = _labels(target, logits)
        with torch.no_grad():
            w = difficulty_weights(labels, logits.shape[1], self.mu0, self.mu, self.sigma)
        ce = F.cross_entropy(logits.float(), labels, reduction="none")
        return (w * ce).mean()


class HMEDNLoss(nn.Module):
    """HMEDN eq. 6 with deep supervision: seg(full) + sum_s w_s seg(side_s) + hr_weight * seg(HR head)
    + alpha * mean((sigmoid(contour) - contour_target)^2). ``seg`` defaults to the difficulty-guided CE;
    beta * ||theta||^2 of eq. 6 is the optimizer's weight decay. A plain tensor (eval output) gets seg only."""

    def __init__(self, seg: nn.Module | None = None, alpha: float = 1.0, hr_weight: float = 1.0,
                 weights: Sequence[float] = (0.3, 0.3, 0.4), contour_sigma: float = 2.0):
        super().__init__()
        self.seg = seg if seg is not None else DifficultyGuidedCELoss()
        self.alpha, self.hr_weight, self.contour_sigma = alpha, hr_weight, contour_sigma
        self.weights = tuple(reversed([float(w) for w in weights]))  # finest first

    def forward(self, outputs, target: torch.Tensor) -> torch.Tensor:
        if isinstance(outputs, torch.Tensor):
            return self.seg(outputs, target)
        full = outputs[0]
        total = self.seg(full, target)
        for w, out in zip(self.weights, outputs[1:]):
            total = total + w * self.seg(out, downsample_labels(target, out.shape[2:]))
        aux = getattr(outputs, "aux", {})
        if "hr" in aux:
            total = total + self.hr_weight * self.seg(aux["hr"], downsample_labels(target, aux["hr"].shape[2:]))
        if "contour" in aux and self.alpha:
            labels = _labels(target, full)
            with torch.no_grad():
                goal = contour_target(labels, full.shape[1], self.contour_sigma)
            total = total + self.alpha * F.mse_loss(torch.sigmoid(aux["contour"][:, 0].float()), goal)
        return total


# ---------------------------------------------------------------- FocusNet / FocusNetv2


def centre_heatmaps(labels: torch.Tensor, classes: Sequence[int], sigma: float = 5.0) -> torch.Tensor:
    """(N, K, *spatial) Gaussians (sd ``sigma`` voxels, peak 1) at each class's centre of mass; zero
    where the class is absent."""
    n, shape = labels.shape[0], labels.shape[1:]
    grids = torch.meshgrid(*[torch.arange(s, dtype=torch.float32, device=labels.device) for s in shape],
                           indexing="ij")
    out = torch.zeros(n, len(classes), *shape, device=labels.device)
    for b in range(n):
        for j, c in enumerate(classes):
            m = labels[b] == c
            if not m.any():
                continue
            d2 = sum((g - g[m].mean()) ** 2 for g in grids)
            out[b, j] = torch.exp(-d2 / (2 * sigma * sigma))
    return out


def sos_pairs(outputs, labels: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per small class: (SOS logits (N, 1, *roi), ground-truth ROI masks (N, 1, *roi)) cropped at the
    ROIs the network used."""
    aux = outputs.aux
    pairs = []
    for j, c in enumerate(aux["small_classes"]):
        logits = aux["sos"][j]
        roi = logits.shape[2:]
        crops = []
        for b in range(labels.shape[0]):
            box = tuple(slice(int(s), int(s) + r) for s, r in zip(aux["roi_starts"][b, j], roi))
            crops.append((labels[(b,) + box] == c).float())
        pairs.append((logits, torch.stack(crops)[:, None]))
    return pairs


def binary_dice_bce(logits: torch.Tensor, goal: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    p = torch.sigmoid(logits.float())
    dice = 1 - (2 * (p * goal).sum() + eps) / (p.sum() + goal.sum() + eps)
    return dice + F.binary_cross_entropy_with_logits(logits.float(), goal)


class FocusNetLoss(nn.Module):
    """seg(S-Net) + heat_weight * L2(sigmoid(heat maps), centre Gaussians) + sos_weight * sum_k
    (Dice + BCE)(SOS_k, ROI ground truth). ``seg`` defaults to Dice + CE (the paper: focal + Dice)."""

    def __init__(self, seg: nn.Module | None = None, heat_weight: float = 1.0, sos_weight: float = 1.0,
                 sigma: float = 5.0):
        super().__init__()
        self.seg = seg if seg is not None else DiceCELoss()
        self.heat_weight, self.sos_weight, self.sigma = heat_weight, sos_weight, sigma

    def forward(self, outputs, target: torch.Tensor) -> torch.Tensor:
        if isinstance(outputs, torch.Tensor):
            return self.seg(outputs, target)
        full = outputs[0]
        total = self.seg(full, target)
        aux = getattr(outputs, "aux", {})
        if "heatmap" not in aux:
            return total
        labels = _labels(target, full)
        goal = centre_heatmaps(labels, aux["small_classes"], self.sigma)
        total = total + self.heat_weight * F.mse_loss(torch.sigmoid(aux["heatmap"].float()), goal)
        for logits, gt in sos_pairs(outputs, labels):
            total = total + self.sos_weight * binary_dice_bce(logits, gt)
        return total


class ShapeAdversary:
    """FocusNetv2's adversarial shape constraint around a :class:`ShapeAutoencoder` D.

    L_rec = ||D(y) - y||^2 + ||D(G(x)) - G(x)||^2 (eq. 4), L_shape = sum over D's latent code and
    decoder features of ||f(y) - f(G(x))||^2 (eq. 5, means per tensor). The segmentation network
    minimises L_seg + lambda1 L_shape (eq. 7, lambda1 = 5) with D fixed; D minimises
    L_rec - lambda2 L_shape (eq. 8, lambda2 = 0.001) with G fixed. G(x) is the SOS probability map.
    """

    def __init__(self, autoencoder: nn.Module, lambda1: float = 5.0, lambda2: float = 1e-3):
        self.aae, self.lambda1, self.lambda2 = autoencoder, lambda1, lambda2

    def _fit(self, x: torch.Tensor) -> torch.Tensor:
        return pad_to_multiple(x, self.aae.required_multiple)[0]

    def shape_loss(self, pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
        fp, fg = self.aae.features(self._fit(pred)), self.aae.features(self._fit(gt))
        return sum(F.mse_loss(a, b) for a, b in zip(fp, fg))

    def reconstruction_loss(self, pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
        p, g = self._fit(pred), self._fit(gt)
        return F.mse_loss(self.aae(g), g) + F.mse_loss(self.aae(p), p)

    def generator_term(self, outputs, target: torch.Tensor) -> torch.Tensor:
        labels = _labels(target, outputs[0])
        return self.lambda1 * sum(self.shape_loss(torch.sigmoid(lg), gt) for lg, gt in sos_pairs(outputs, labels))

    def discriminator_loss(self, outputs, target: torch.Tensor) -> torch.Tensor:
        labels = _labels(target, outputs[0])
        total = 0.0
        for lg, gt in sos_pairs(outputs, labels):
            pred = torch.sigmoid(lg.detach())
            total = total + self.reconstruction_loss(pred, gt) - self.lambda2 * self.shape_loss(pred, gt)
        return total


def adversarial_step(net: nn.Module, loss: nn.Module, adversary: ShapeAdversary, opt_g: torch.optim.Optimizer,
                     opt_d: torch.optim.Optimizer, x: torch.Tensor, target: torch.Tensor) -> tuple[float, float]:
    """One alternating update: G on L_seg + lambda1 L_shape (only opt_g steps), then D on
    L_rec - lambda2 L_shape from the same (detached) predictions. Returns (L_G, L_D)."""
    net.train()
    outputs = net(x)
    l_g = loss(outputs, target) + adversary.generator_term(outputs, target)
    opt_g.zero_grad()
    l_g.backward()
    opt_g.step()
    opt_d.zero_grad()  # drops what L_shape left on D's parameters during the G step
    l_d = adversary.discriminator_loss(outputs, target)
    l_d.backward()
    opt_d.step()
    opt_g.zero_grad()
    return float(l_g.detach()), float(l_d.detach())
