"""The obvious eager HMRNet (p or s), used only as the benchmark baseline.

Written independently of brainbarriers.networks but with the same parameter names, so it loads
the same state_dict: BFC up-samples the MR features to full resolution at full width, convolves the
attention at full resolution, concatenates and multiplies, exactly as the method is described.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def unit(cin, cout, kernel, slope):
    return nn.Sequential(nn.Conv3d(cin, cout, kernel, padding=tuple(k // 2 for k in kernel)),
                         nn.InstanceNorm3d(cout, affine=True), nn.LeakyReLU(slope))


def conv3(cin, cout, axis, slope):
    if axis is None:
        return unit(cin, cout, (3, 3, 3), slope)
    intra = tuple(1 if d == axis else 3 for d in range(3))
    inter = tuple(3 if d == axis else 1 for d in range(3))
    return nn.Sequential(unit(cin, cout, intra, slope), unit(cout, cout, inter, slope), unit(cout, cout, intra, slope))


def block(cin, cout, axis, slope):
    return nn.Sequential(conv3(cin, cout, axis, slope), conv3(cout, cout, axis, slope))


class PlainBFC(nn.Module):
    def __init__(self, ch, cm, axis, slope):
        super().__init__()
        self.att_h, self.att_m = nn.Conv3d(cm, 1, 1), nn.Conv3d(ch, 1, 1)
        self.post_h, self.post_m = block(ch + cm, ch, axis, slope), block(cm + ch, cm, axis, slope)

    def forward(self, fh, fm):
        up = F.interpolate(fm, size=fh.shape[2:], mode="trilinear", align_corners=False)
        factor = tuple(a // b for a, b in zip(fh.shape[2:], fm.shape[2:]))
        down = F.avg_pool3d(fh, factor, factor)
        h = torch.sigmoid(self.att_h(up)) * torch.cat([fh, up], 1)
        m = torch.sigmoid(self.att_m(down)) * torch.cat([fm, down], 1)
        return self.post_h(h), self.post_m(m)


class PlainHMRNet(nn.Module):
    def __init__(self, cin=3, cout=2, hr=8, mr=(16, 32, 64, 128), axis=None, slope=0.0, head_kernel=1):
        super().__init__()
        w = [mr[0], mr[1], mr[2], mr[3], mr[2], mr[1], mr[0]]
        m_in = [cin, w[0], w[1], w[2], w[3] + w[2], w[4] + w[1], w[5] + w[0]]
        self.hr_blocks = nn.ModuleList([block(cin if k == 0 else hr, hr, axis, slope) for k in range(7)])
        self.mr_blocks = nn.ModuleList([block(m_in[k], w[k], axis, slope) for k in range(7)])
        self.bfcs = nn.ModuleList([PlainBFC(hr, w[k], axis, slope) for k in range(1, 7)])
        self.head = nn.Conv3d(hr + w[6], cout, head_kernel, padding=head_kernel // 2)
        self.ds_heads = nn.ModuleList([nn.Conv3d(c, cout, 1) for c in (w[5], w[4], w[3])])
        last = tuple(1 if d == axis else 2 for d in range(3)) if axis is not None else (2, 2, 2)
        self.pools = [(2, 2, 2), (2, 2, 2), last]

    def forward(self, x):
        h, m, skips = x, x, []
        for k in range(7):
            if 1 <= k <= 3:
                m = F.max_pool3d(m, self.pools[k - 1], self.pools[k - 1])
            elif k >= 4:
                s = skips[6 - k]
                m = torch.cat([F.interpolate(m, size=s.shape[2:], mode="trilinear", align_corners=False), s], 1)
            h, m = self.hr_blocks[k](h), self.mr_blocks[k](m)
            if k >= 1:
                h, m = self.bfcs[k - 1](h, m)
            if k < 3:
                skips.append(m)
        return self.head(torch.cat([h, m], 1))
