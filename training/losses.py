"""Training losses: soft Dice + CE, fn-weighted Dice + CE, and the deep-supervision wrapper.

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
    """Down-sample an integer label map (N,1,...) or (N,...) to ``size`` so that thin structures survive.

    A cell of the coarse grid is foreground when ANY of the full-resolution voxels it covers is
    foreground (max-pooling of ``label > 0``), so a one-voxel sheet is still there at 1/8; its class
    is the foreground class covering most of the cell (area pooling of the one-hot map). Nearest
    sampling would keep only every 2nd/4th/8th slice and drop a thin sheet between them. Adaptive
    pooling also handles sizes that are not an exact fraction of the input.
    """
    squeeze = target.dim() == len(size) + 1
    t = target.unsqueeze(1) if squeeze else target
    if tuple(t.shape[2:]) != tuple(size):
        if len(size) not in _POOLS:
            raise ValueError(f"labels must have 1 to 3 spatial axes, not {len(size)}")
        max_pool, avg_pool = _POOLS[len(size)]
        labels = t[:, 0].long()
        foreground = max_pool((labels > 0).float().unsqueeze(1), tuple(size))[:, 0] > 0
        classes = int(labels.max()) + 1
        if classes <= 2:
            t = foreground.long()
        else:
            share = avg_pool(F.one_hot(labels, classes).movedim(-1, 1).float()[:, 1:], tuple(size))
            t = torch.where(foreground, share.argmax(1) + 1, 0)
        t = t.unsqueeze(1).to(target.dtype)
    return t[:, 0] if squeeze else t


_POOLS = {1: (F.adaptive_max_pool1d, F.adaptive_avg_pool1d), 2: (F.adaptive_max_pool2d, F.adaptive_avg_pool2d),
          3: (F.adaptive_max_pool3d, F.adaptive_avg_pool3d)}


class DeepSupervisionLoss(nn.Module):
    """The paper's deep-supervision loss (eq. 11) added to the full-resolution loss.

    total = L(full) + 0.3 * L(1/8) + 0.3 * L(1/4) + 0.4 * L(1/2)

    The paper puts a 1x1x1 head at the end of each decoder level (1/8, 1/4, 1/2 of the input
    resolution; S = 3 levels) and weights their losses lambda_s = 0.3, 0.3, 0.4, each against the
    ground truth down-sampled to that level (here: ``downsample_labels``, max-pooled so 1-2 voxel
    sheets survive). The full-resolution output keeps weight 1. ``weights`` are listed from the
    coarsest level; ``outputs`` is the network's list [full, 1/2, 1/4, 1/8] or a single tensor
    (then total = L(full)).
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
