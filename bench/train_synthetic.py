"""Train an HMRNet briefly on synthetic blobs so that bench_networks.py can check the bf16
segmentation against fp32 on a network whose logits are not near-ties (random weights are).

    .venv/bin/python bench/train_synthetic.py hmrnet-p 40 /tmp/trained_hmrnet-p.safetensors
    .venv/bin/python bench/bench_networks.py --weights p=/tmp/trained_hmrnet-p.safetensors

Prints the fp32 and bf16 Dice and their voxel agreement on a 96^3 synthetic scene.
"""

from __future__ import annotations

import argparse
import time

import torch
from brainbarriers.networks import build
from brainbarriers.networks.inference import inference_context, prepare_for_inference
from brainbarriers_training.losses import DeepSupervisionLoss, FNDiceCELoss
from safetensors.torch import save_file


def scene(size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Random spheres, visible with different contrast in three noisy channels."""
    g = torch.Generator().manual_seed(seed)
    z, y, x = torch.meshgrid(*[torch.arange(size, dtype=torch.float32)] * 3, indexing="ij")
    label = torch.zeros(size, size, size, dtype=torch.long)
    for _ in range(max(1, (size // 32) ** 3 * 2)):
        c = torch.rand(3, generator=g) * size
        r = 3 + torch.rand(1, generator=g) * size / 8
        label |= (((z - c[0]) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2) ** 0.5 < r).long()
    contrast = torch.tensor([1.0, -0.7, 0.5]).view(3, 1, 1, 1)
    image = label[None].float() * contrast + torch.randn(3, size, size, size, generator=g) * 0.4
    return image[None], label


def dice(pred: torch.Tensor, label: torch.Tensor) -> float:
    return float(2 * ((pred == 1) & (label == 1)).sum() / ((pred == 1).sum() + (label == 1).sum()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", choices=["hmrnet-p", "hmrnet-s"])
    parser.add_argument("steps", type=int)
    parser.add_argument("output")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--crop", type=int, default=32)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    net = build(args.name, 3, 2, **({"inter_slice_axis": 2} if args.name == "hmrnet-s" else {}))
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    loss_fn = DeepSupervisionLoss(FNDiceCELoss(2.0))
    start = time.perf_counter()
    for step in range(args.steps):
        image, label = scene(args.crop, step % 8)
        net.train()
        opt.zero_grad()
        loss = loss_fn(net(image), label[None, None])
        loss.backward()
        opt.step()
        if step % 10 == 0:
            print(f"step {step}: loss {loss.item():.3f} ({time.perf_counter() - start:.0f} s)", flush=True)
    prepare_for_inference(net)
    image, label = scene(96, 123)
    with inference_context("cpu", "fp32"):
        ref = net(image).argmax(1)[0]
    with inference_context("cpu", "bf16"):
        low = net(image).argmax(1)[0]
    print(f"96^3 scene: Dice fp32 {dice(ref, label):.4f}, bf16 {dice(low, label):.4f}, "
          f"voxel agreement {100 * float((ref == low).float().mean()):.3f}%")
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, args.output)


if __name__ == "__main__":
    main()
