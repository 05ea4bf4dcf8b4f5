"""HNF-Netv2 (Jia et al., BraTS 2021): high-resolution, non-local feature network with semantic
discrimination enhancing (SDE) blocks.

Layout (paper, Sec. 3): two conv blocks at full resolution, a stride-2 conv to 1/2, four cascaded
parallel multi-scale fusion (PMF) modules whose number of branches grows with depth (2, 3, 4, 4
branches at 1/2 ... 1/16; a new branch is made by a stride-2 conv from the lowest one), every
branch ending in an intra-scale SDE block and every PMF ending in a fully connected fusion (each
output branch sums all branches: identity, stride-2 convs down, 1x1x1 conv + trilinear up). One
inter-scale SDE block sits between the 3rd and 4th PMF. The last PMF's four outputs are brought to
1/2 scale and concatenated ("mixed features"), passed through the EMA module, brought back to full
resolution and ``base_width`` channels by a conv and trilinear up-sampling, added to the
full-resolution encoder features, and decoded by two conv blocks. Down-sampling is by stride-2
convolutions throughout. No deep supervision (the paper has none).

Choices where the paper is silent: branch widths ``widths`` = (32, 64, 128, 256) (HRNet-W32
style), ``units`` = 1 residual block per branch, SDE reduction 4, an inter-scale SDE that ends in
a 1x1x1 conv back to the branch width (the concat adds one channel), EMA with 64 bases and three
EM iterations (the EMANet defaults; the paper's value of K is lost in our copy). With these the
network has 18.2 M parameters, the paper reports 17.91 M (docs/networks.md).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import DilatedUnit, PlainBlock, ResBlock, as_float32, resize_to


class IntraSDE(nn.Module):
    """Intra-scale SDE: y = x * sigmoid(W2 relu(W1 GAP(x) + b1) + b2), the global (GAP) features
    re-weighting the high-resolution channels."""

    def __init__(self, channels: int, reduction: int = 4):
        super().__init__()
        hidden = max(1, channels // reduction)
        self.fc1 = nn.Conv3d(channels, hidden, 1)
        self.fc2 = nn.Conv3d(hidden, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = torch.sigmoid(self.fc2(torch.relu(self.fc1(x.mean((2, 3, 4), keepdim=True)))))
        return x * w


class InterSDE(nn.Module):
    """Inter-scale SDE: GAP of the smallest-scale branch, up-sampled to each branch's size, reduced
    to one channel by a 3x3x3 conv, concatenated to that branch, then a 1x1x1 conv back to its width."""

    def __init__(self, widths: list[int]):
        super().__init__()
        self.reduce = nn.ModuleList([nn.Conv3d(widths[-1], 1, 3, padding=1) for _ in widths])
        self.merge = nn.ModuleList([nn.Conv3d(w + 1, w, 1) for w in widths])

    def forward(self, branches: list[torch.Tensor]) -> list[torch.Tensor]:
        g = branches[-1].mean((2, 3, 4), keepdim=True)
        out = []
        for b, red, mer in zip(branches, self.reduce, self.merge):
            up = g.expand(-1, -1, *b.shape[2:])
            out.append(mer(torch.cat([b, red(up)], 1)))
        return out


class EMA(nn.Module):
    """Expectation-maximisation attention (Li et al. 2019) on features X (N, C, L voxels).

    Bases mu (C, K), unit columns. T iterations of
        E step: Z = softmax_k(X^T mu)                                   (N, L, K)
        M step: mu_k = sum_n Z_nk x_n / sum_n Z_nk, then mu_k / ||mu_k||
    then X~ = mu Z^T; output = act(x + IN(conv1x1(relu(X~)))) with x the input. The initial bases are
    a buffer updated in training by a moving average (momentum 0.9) of the batch's final bases.
    """

    def __init__(self, channels: int, bases: int = 64, iterations: int = 3, momentum: float = 0.9):
        super().__init__()
        self.iterations, self.momentum = iterations, momentum
        mu = torch.randn(1, channels, bases, generator=torch.Generator().manual_seed(0)) * math.sqrt(2.0 / bases)
        self.register_buffer("mu", F.normalize(mu, dim=1))
        self.conv_in = nn.Conv3d(channels, channels, 1)
        self.conv_out = nn.Sequential(nn.Conv3d(channels, channels, 1, bias=False),
                                      nn.InstanceNorm3d(channels, affine=True))
        self.extra_macs = 0

    def em(self, x: torch.Tensor, mu: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (N, C, L), mu (N, C, K) -> responsibilities Z (N, L, K) and the updated bases."""
        z = x.new_zeros(0)
        for _ in range(self.iterations):
            z = torch.softmax(torch.bmm(x.transpose(1, 2), mu), dim=2)  # E step
            zn = z / (1e-6 + z.sum(1, keepdim=True))
            mu = F.normalize(torch.bmm(x, zn), dim=1)  # M step
        return z, mu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        idn = x
        x = self.conv_in(x)
        n, c = x.shape[:2]
        shape = x.shape[2:]
        flat = x.reshape(n, c, -1).float()
        mu0 = self.mu.expand(n, -1, -1).to(flat.dtype, copy=True)  # the buffer is updated below
        z, mu = self.em(flat, mu0)
        if self.training:
            with torch.no_grad():
                mean = F.normalize(mu.mean(0, keepdim=True), dim=1)
                self.mu.mul_(self.momentum).add_(mean * (1 - self.momentum))
                self.mu.copy_(F.normalize(self.mu, dim=1))
        rec = torch.bmm(mu, z.transpose(1, 2)).reshape(n, c, *shape).to(x.dtype)
        k, voxels = mu.shape[2], flat.shape[2]
        self.extra_macs = n * voxels * c * k * (2 * self.iterations + 1)
        return torch.relu(idn + self.conv_out(torch.relu(rec)))


class PMF(nn.Module):
    """Parallel multi-scale fusion module: residual blocks + intra-scale SDE per branch, then the fully
    connected fusion out_i = relu(sum_j T_ij(b_j))."""

    def __init__(self, widths: list[int], units: int = 2, activation: str = "relu", reduction: int = 4):
        super().__init__()
        self.branches = nn.ModuleList()
        for w in widths:
            self.branches.append(nn.Sequential(*[ResBlock(w, w, activation) for _ in range(units)],
                                               IntraSDE(w, reduction)))
        self.fuse = nn.ModuleList()
        for i, wi in enumerate(widths):
            row = nn.ModuleList()
            for j, wj in enumerate(widths):
                if j == i:
                    row.append(nn.Identity())
                elif j > i:  # lower resolution: 1x1x1 conv to wi, up-sampled in forward
                    row.append(nn.Sequential(nn.Conv3d(wj, wi, 1), nn.InstanceNorm3d(wi, affine=True)))
                else:  # higher resolution: (i - j) stride-2 convs, the last one to wi without activation
                    steps = [DilatedUnit(wj, wj, (3, 3, 3), activation, 2) for _ in range(i - j - 1)]
                    steps.append(DilatedUnit(wj, wi, (3, 3, 3), activation, 2, act=False))
                    row.append(nn.Sequential(*steps))
            self.fuse.append(row)

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        xs = [b(x) for b, x in zip(self.branches, xs)]
        out = []
        for i, row in enumerate(self.fuse):
            acc = xs[i]
            for j, t in enumerate(row):
                if j != i:
                    acc = acc + resize_to(t(xs[j]), xs[i].shape[2:])
            out.append(torch.relu(acc))
        return out


class HNFNetV2(nn.Module):
    """HNF-Netv2 (see module docstring).

    Args:
        in_channels, out_channels: input modalities, output classes.
        base_width: full-resolution width (paper: 32).
        widths: branch widths at 1/2, 1/4, 1/8, 1/16.
        units: residual blocks per branch in each PMF.
        bases, em_iterations: EMA bases K and EM iterations T.
        intra_sde, inter_sde: switch the SDE blocks (both off = the original HNF-Net).
        activation: "relu" or "leaky_relu".
    """

    def __init__(self, in_channels: int, out_channels: int, base_width: int = 32, widths=(32, 64, 128, 256),
                 units: int = 1, bases: int = 64, em_iterations: int = 3, intra_sde: bool = True,
                 inter_sde: bool = True, activation: str = "relu", sde_reduction: int = 4):
        super().__init__()
        widths = [int(w) for w in widths]
        if len(widths) != 4:
            raise ValueError("widths needs four branch widths (1/2 ... 1/16)")
        self.required_multiple = (16, 16, 16)
        self.deep_supervision = False
        self.enc = PlainBlock(in_channels, base_width, activation)
        self.down = DilatedUnit(base_width, widths[0], (3, 3, 3), activation, 2)
        self.transitions = nn.ModuleList()
        self.pmfs = nn.ModuleList()
        n_prev = 1
        for k in range(4):
            n = min(k + 2, 4)
            self.transitions.append(
                DilatedUnit(widths[n - 2], widths[n - 1], (3, 3, 3), activation, 2) if n > n_prev else nn.Identity())
            pmf = PMF(widths[:n], units, activation, sde_reduction)
            if not intra_sde:
                for br in pmf.branches:
                    br[-1] = nn.Identity()
            self.pmfs.append(pmf)
            n_prev = n
        self.inter = InterSDE(widths) if inter_sde else None
        mixed = sum(widths)
        self.ema = EMA(mixed, bases, em_iterations)
        self.up = DilatedUnit(mixed, base_width, (3, 3, 3), activation)
        self.dec = nn.Sequential(PlainBlock(base_width, base_width, activation),
                                 PlainBlock(base_width, base_width, activation))
        self.head = nn.Conv3d(base_width, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        full = self.enc(x)
        xs = [self.down(full)]
        for k, (tr, pmf) in enumerate(zip(self.transitions, self.pmfs)):
            if not isinstance(tr, nn.Identity):
                xs = xs + [tr(xs[-1])]
            xs = pmf(xs)
            if k == 2 and self.inter is not None:
                xs = self.inter(xs)
        half = xs[0].shape[2:]
        mixed = torch.cat([resize_to(b, half) for b in xs], 1)
        y = resize_to(self.up(self.ema(mixed)), full.shape[2:]) + full
        return as_float32(self.head(self.dec(y)))
