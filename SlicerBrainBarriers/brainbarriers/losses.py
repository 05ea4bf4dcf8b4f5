"""Segmentation losses: soft Dice + CE, fn-weighted Dice + CE, and a deep-supervision wrapper.

All losses take logits (N, C, *spatial) and an integer label tensor (N, 1, *spatial) or
(N, *spatial). Dice terms are "batch Dice": sums run over the batch and all voxels, per class,
then the classes (background excluded) are averaged.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def _labels(target: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    if target.dim() == logits.dim():
        if target.shape[1] != 1:
            raise ValueError("target must be an integer label map (N,1,...) or (N,...), not one-hot")
        target = target[:, 0]
    if target.shape != logits.shape[:1] + logits.shape[2:]:
        raise ValueError(f"target shape {tuple(target.shape)} does not match logits {tuple(logits.shape)}")
    return target.long()


def soft_counts(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Soft TP, FP, FN per class (summed over batch and voxels) from softmax probabilities.

    TP = sum(p*g), FP = sum(p*(1-g)), FN = sum((1-p)*g), with g the one-hot target.
    """
    p = torch.softmax(logits.float(), 1)
    g = F.one_hot(labels, logits.shape[1]).movedim(-1, 1).to(p.dtype)
    dims = (0,) + tuple(range(2, logits.dim()))
    tp = (p * g).sum(dims)
    fp = p.sum(dims) - tp
    fn = g.sum(dims) - tp
    return tp, fp, fn


class FNDiceCELoss(nn.Module):
    """False-negative-weighted soft Dice + cross-entropy.

    L = L_CE + mean_c [ 1 - (2 TP_c + eps) / (2 TP_c + FP_c + theta * FN_c + eps) ]

    over the foreground classes c (background excluded unless ``include_background``). theta = 1
    gives the plain soft Dice loss; theta > 1 penalises missed voxels more (paper, eq. 8 corrected).

    Args:
        theta: false-negative weight.
        include_background: include class 0 in the Dice mean.
        eps: smoothing term.
        ce_weight, dice_weight: weights of the two terms (1:1 by default).
    """

    def __init__(self, theta: float = 1.0, include_background: bool = False, eps: float = 1e-5,
                 ce_weight: float = 1.0, dice_weight: float = 1.0):
        super().__init__()
        self.theta, self.include_background, self.eps = float(theta), include_background, eps
        self.ce_weight, self.dice_weight = ce_weight, dice_weight

    def dice_loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        labels = _labels(target, logits)
        tp, fp, fn = soft_counts(logits, labels)
        score = (2 * tp + self.eps) / (2 * tp + fp + self.theta * fn + self.eps)
        if not self.include_background:
            score = score[1:]
        return 1 - score.mean()

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        labels = _labels(target, logits)
        loss = self.dice_weight * self.dice_loss(logits, labels)
        if self.ce_weight:
            loss = loss + self.ce_weight * F.cross_entropy(logits.float(), labels)
        return loss


class DiceCELoss(FNDiceCELoss):
    """Soft Dice + cross-entropy (1:1): L = L_CE + mean_c [1 - (2 TP_c + eps) / (2 TP_c + FP_c + FN_c + eps)],
    background excluded from the Dice mean by default."""

    def __init__(self, include_background: bool = False, eps: float = 1e-5, ce_weight: float = 1.0,
                 dice_weight: float = 1.0):
        super().__init__(1.0, include_background, eps, ce_weight, dice_weight)


def downsample_labels(target: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Nearest-neighbour down-sampling of an integer label map (N,1,...) or (N,...) to ``size``."""
    squeeze = target.dim() == len(size) + 1
    t = target.unsqueeze(1) if squeeze else target
    if tuple(t.shape[2:]) != tuple(size):
        t = F.interpolate(t.float(), size=tuple(size), mode="nearest").to(target.dtype)
    return t[:, 0] if squeeze else t


class DeepSupervisionLoss(nn.Module):
    """Weighted sum of a loss over the deep-supervision outputs.

    total = L(full) + w_1/2 * L(1/2) + w_1/4 * L(1/4) + w_1/8 * L(1/8)

    with ``weights`` listed from the coarsest level: (w_1/8, w_1/4, w_1/2) = (0.3, 0.3, 0.4) (paper).
    ``outputs`` is the network's list [full, 1/2, 1/4, 1/8] or a single tensor (then total = L(full));
    the full-resolution integer target is down-sampled (nearest) to each output's size.
    """

    def __init__(self, loss: nn.Module, weights: Sequence[float] = (0.3, 0.3, 0.4)):
        super().__init__()
        self.loss = loss
        self.weights = tuple(float(w) for w in weights)

    def forward(self, outputs: torch.Tensor | Sequence[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        if isinstance(outputs, torch.Tensor):
            return self.loss(outputs, target)
        outputs = list(outputs)
        aux = outputs[1:]
        if len(aux) > len(self.weights):
            raise ValueError(f"{len(aux)} deep-supervision outputs but only {len(self.weights)} weights")
        # weights are given coarsest first; aux runs 1/2, 1/4, 1/8 (finest first)
        weights = list(reversed(self.weights))[: len(aux)]
        total = self.loss(outputs[0], target)
        for w, out in zip(weights, aux):
            total = total + w * self.loss(out, downsample_labels(target, out.shape[2:]))
        return total
