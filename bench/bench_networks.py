"""Forward time and peak memory of HMRNet-p / HMRNet-s on one crop, against a plain eager baseline.

    .venv/bin/python bench/bench_networks.py [--size 96] [--repeats 5] [--threads 2] [--variants p s]

Every configuration runs in its own subprocess (so peak RSS is per configuration): batch 1,
three input channels, torch.set_num_threads(threads), one warm-up then the median of ``repeats``
forwards under inference mode. "plain" is bench/plain_hmrnet.py (the obvious eager network) loaded
with the SAME state_dict as brainbarriers.networks; "ours" is brainbarriers.networks.build(...) run
through prepare_for_inference + inference_context(precision=...). Printed: median seconds, peak
RSS, CPU time (less sensitive than wall time to other load on the machine), the ratios ours/plain, the max abs difference of the fp32 logits and the voxel agreement of
the bf16 segmentation (argmax) with fp32.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
VARIANTS = {"p": ("hmrnet-p", {}), "s": ("hmrnet-s", {"inter_slice_axis": 2})}
IMPLS = ("plain-fp32", "ours-fp32", "ours-bf16")


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MB (VmHWM; ru_maxrss would include the parent's
    peak, which Linux carries over fork+exec)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def worker(args) -> None:
    import numpy as np
    import torch
    from safetensors.torch import load_file

    torch.set_num_threads(args.threads)
    name, options = VARIANTS[args.variant]
    state = load_file(os.path.join(args.tmp, f"weights_{args.variant}.safetensors"))
    x = load_file(os.path.join(args.tmp, "input.safetensors"))["x"]
    if args.impl.startswith("plain"):
        sys.path.insert(0, str(HERE))
        from plain_hmrnet import PlainHMRNet

        net = PlainHMRNet(axis=options.get("inter_slice_axis")).eval()
        net.load_state_dict(state)
        ctx = torch.inference_mode
    else:
        from brainbarriers.networks import build
        from brainbarriers.networks.inference import inference_context, prepare_for_inference

        net = build(name, 3, 2, **options)
        net.load_state_dict(state)
        net = prepare_for_inference(net)
        precision = args.impl.split("-")[1]

        def ctx():
            return inference_context(torch.device("cpu"), precision=precision)

    del state
    rss_before = peak_rss_mb()
    times, cpu_times = [], []
    for i in range(args.repeats + 1):
        start, cpu_start = time.perf_counter(), time.process_time()
        with ctx():
            out = net(x)
        if i:
            times.append(time.perf_counter() - start)
            cpu_times.append(time.process_time() - cpu_start)
        if i < args.repeats:
            del out
    np.save(os.path.join(args.tmp, f"out_{args.variant}_{args.impl}.npy"), out.float().numpy())
    print(json.dumps({"median_s": statistics.median(times), "times": times,
                      "median_cpu_s": statistics.median(cpu_times), "peak_rss_mb": peak_rss_mb(),
                      "rss_before_forward_mb": rss_before}))


def load_state(path: str) -> dict:
    import torch

    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(path)
    return torch.load(path, map_location="cpu", weights_only=True)


def check_equal_in_float64(net, options, size: int = 32) -> None:
    """The lean eval path and the plain baseline compute the same function: compare in float64,
    where rounding cannot hide a difference (fp32 rounding alone is amplified by the InstanceNorms)."""
    import copy

    import torch

    sys.path.insert(0, str(HERE))
    from plain_hmrnet import PlainHMRNet

    ours = copy.deepcopy(net).double().eval()
    plain = PlainHMRNet(axis=options.get("inter_slice_axis")).double().eval()
    plain.load_state_dict(ours.state_dict())
    x = torch.randn(1, 3, size, size, size, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    with torch.inference_mode():
        diff = float((ours(x) - plain(x)).abs().max())
    print(f"  same state_dict, float64, {size}^3: max |ours - plain| = {diff:.2e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--variants", nargs="+", default=["p", "s"], choices=sorted(VARIANTS))
    parser.add_argument("--impls", nargs="+", default=list(IMPLS), choices=IMPLS)
    parser.add_argument("--weights", nargs="+", default=[], metavar="VARIANT=PATH",
                        help="state_dict files (safetensors or torch weights-only) to use instead of random "
                             "initialisation, e.g. p=fine_cerebellum.safetensors; makes the bf16 agreement meaningful")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    parser.add_argument("--impl", help=argparse.SUPPRESS)
    parser.add_argument("--tmp", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return

    import numpy as np
    import torch
    from brainbarriers.networks import build
    from safetensors.torch import save_file

    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        save_file({"x": torch.randn(1, 3, args.size, args.size, args.size)}, os.path.join(tmp, "input.safetensors"))
        print(f"crop {args.size}^3 x 3 channels, batch 1, {args.threads} threads, median of {args.repeats} "
              f"after 1 warm-up, torch {torch.__version__}")
        results = {}
        for v in args.variants:
            name, options = VARIANTS[v]
            torch.manual_seed(1)
            net = build(name, 3, 2, **options)
            weights = dict(w.split("=", 1) for w in args.weights).get(v)
            if weights:
                net.load_state_dict(load_state(weights))
            n_params = sum(p.numel() for p in net.parameters())
            print(f"{name}: {'weights ' + weights if weights else 'random initialisation'}")
            check_equal_in_float64(net, options)
            save_file({k: t.contiguous() for k, t in net.state_dict().items()},
                      os.path.join(tmp, f"weights_{v}.safetensors"))
            del net
            for impl in args.impls:
                cmd = [sys.executable, __file__, "--worker", "--variant", v, "--impl", impl, "--tmp", tmp,
                       "--threads", str(args.threads), "--repeats", str(args.repeats)]
                proc = subprocess.run(cmd, capture_output=True, text=True)
                if proc.returncode:
                    sys.exit(f"{name} {impl} failed:\n{proc.stderr}")
                r = json.loads(proc.stdout.strip().splitlines()[-1])
                results[v, impl] = r
                print(f"{name:9s} ({n_params / 1e6:.3f} M params) {impl:10s}: {r['median_s']:6.2f} s "
                      f"(runs {', '.join(f'{t:.2f}' for t in r['times'])}; CPU {r['median_cpu_s']:.2f} s), peak RSS {r['peak_rss_mb']:7.0f} MB "
                      f"(before forward {r['rss_before_forward_mb']:.0f} MB)", flush=True)
            outs = {impl: np.load(os.path.join(tmp, f"out_{v}_{impl}.npy")) for impl in args.impls}
            base = results.get((v, "plain-fp32"))
            for impl in args.impls:
                if impl == "plain-fp32" or base is None:
                    continue
                r = results[v, impl]
                line = (f"  {name} {impl} / plain-fp32: time x{r['median_s'] / base['median_s']:.2f}, "
                        f"CPU time x{r['median_cpu_s'] / base['median_cpu_s']:.2f}, "
                        f"peak RSS x{r['peak_rss_mb'] / base['peak_rss_mb']:.2f}")
                diff = np.abs(outs[impl] - outs["plain-fp32"])
                agree = float((outs[impl].argmax(1) == outs["plain-fp32"].argmax(1)).mean())
                line += f"; logits max |diff| {diff.max():.2e}; argmax agreement {100 * agree:.3f}%"
                print(line)
            if "ours-bf16" in outs and "ours-fp32" in outs:
                agree = float((outs["ours-bf16"].argmax(1) == outs["ours-fp32"].argmax(1)).mean())
                print(f"  {name} ours-bf16 vs ours-fp32 segmentation agreement {100 * agree:.3f}% "
                      "(random weights give near-tied logits; pass --weights for a trained network)")


if __name__ == "__main__":
    main()
