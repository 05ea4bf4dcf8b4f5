"""Forward time and peak memory of HMRNet-p / HMRNet-s on one crop, against a plain eager baseline;
and (``--zoo``) parameters, MACs, forward time and peak memory of every network of the factory.

    .venv/bin/python bench/bench_networks.py [--size 96] [--repeats 5] [--threads 2] [--variants p s]
    .venv/bin/python bench/bench_networks.py --zoo [--size 96] [--device cpu|cuda] [--networks unet3d hmedn]
    .venv/bin/python bench/bench_networks.py --params-table    # the table of docs/networks.md

``--zoo``: every network is built with its default (paper) settings, 3 input channels and 2 output
classes, random weights, and runs in its own subprocess on a crop of ``--size``^3 padded to the
network's required multiple: one warm-up, then the median of ``repeats`` fp32 forwards in eval and
inference mode. Peak memory is the process's peak RSS on CPU, torch.cuda.max_memory_allocated on
CUDA. MACs come from brainbarriers.networks.complexity (forward hooks on conv/transposed conv/linear
layers plus EMA's matrix products; norms, activations, pooling and interpolation not counted).

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
import platform
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


# Published parameter counts / MACs (source in brackets); "-" where the paper gives none.
PAPER = {
    "hmrnet-p": ("3.4 M (HMRNet paper, HR 16; release HR 8: 3.12 M)", "234.15 G at HR 16, crop not stated"),
    "hmrnet-s": ("-", "-"),
    "coarse-unet": ("- (nnU-Net plans per data set)", "-"),
    "unet3d": ("2.7 M (HMRNet paper, Sec. V)", "116.45 G, crop not stated"),
    "res-unet3d": ("-", "-"),
    "unet3d-cse": ("-", "-"),
    "unet3d-sse": ("-", "-"),
    "unet3d-scse": ("-", "-"),
    "sepnet3d": ("-", "-"),
    "focusnet": ("-", "-"),
    "hnf-netv2": ("17.91 M (HNF-Netv2 Table 1; 4 MR inputs)", "449.79 G FLOPs at their crop"),
    "hmedn": ("4.39 M (HMEDN Table VI, 3D Proposed-L2; 4 inputs)", "-"),
    "focusnetv2": ("-", "-"),
}


def zoo_worker(args) -> None:
    import torch
    from brainbarriers.networks import build
    from brainbarriers.networks.complexity import count_macs, count_parameters
    from brainbarriers.networks.inference import inference_context, prepare_for_inference
    from brainbarriers.networks.padding import pad_to_multiple

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    net = build(args.network, 3, 2)
    params = count_parameters(net)
    x, _ = pad_to_multiple(torch.randn(1, 3, args.size, args.size, args.size), net.required_multiple)
    if args.macs_only:
        print(json.dumps({"params": params, "macs": count_macs(net, tuple(x.shape[2:])), "median_s": float("nan"),
                          "peak_mb": float("nan"), "shape": list(x.shape[2:])}))
        return
    net = prepare_for_inference(net.to(device))
    x = x.to(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for i in range(args.repeats + 1):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        with inference_context(device, "fp32"):
            out = net(x)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i:
            times.append(time.perf_counter() - start)
        del out
    peak = (torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else peak_rss_mb())
    macs = count_macs(net.cpu().float(), tuple(x.shape[2:]))
    print(json.dumps({"params": params, "macs": macs, "median_s": statistics.median(times), "peak_mb": peak,
                      "shape": list(x.shape[2:])}))


def run_zoo(args) -> None:
    import torch
    from brainbarriers.networks import NAMES

    names = args.networks or list(NAMES)
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    what = "peak RSS" if device == "cpu" else "peak CUDA memory allocated"
    print(f"crop {args.size}^3 x 3 channels (padded to each network's multiple), batch 1, fp32, {device}, "
          f"{args.threads} threads, median of {args.repeats} after 1 warm-up, torch {torch.__version__}, "
          f"{platform.processor() or platform.machine()} {os.cpu_count()} CPUs")
    print(f"{'network':12s} {'params':>11s} {'GMAC':>8s} {'time s':>8s} {'memory MB':>10s}  padded crop   paper params / MACs")
    for name in names:
        cmd = [sys.executable, __file__, "--zoo-worker", "--network", name, "--size", str(args.size),
               "--threads", str(args.threads), "--repeats", str(args.repeats), "--device", device]
        if args.macs_only:
            cmd.append("--macs-only")
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode:
            print(f"{name:12s} failed: {proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else proc.returncode}")
            continue
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        paper = PAPER.get(name, ("-", "-"))
        timing = (f"{'-':>8s} {'-':>10s}" if args.macs_only
                  else f"{r['median_s']:8.3f} {r['peak_mb']:10.0f}")
        print(f"{name:12s} {r['params']:>11,d} {r['macs'] / 1e9:8.2f} {timing}  "
              f"{'x'.join(map(str, r['shape'])):12s}  {paper[0]} / {paper[1]}", flush=True)
    print(f"memory: {what}; MACs: forward hooks (brainbarriers.networks.complexity); 2 output classes throughout")


def params_table() -> None:
    """The parameter table of docs/networks.md (3 input channels, 2 classes, default options)."""
    from brainbarriers.networks import ZOO, build
    from brainbarriers.networks.complexity import count_parameters

    print("| network | ours (parameters) | paper |")
    print("|---|---:|---|")
    for name in ("hmrnet-p", "hmrnet-s", "coarse-unet") + ZOO:
        net = build(name, 3, 7 if name == "coarse-unet" else 2)
        print(f"| `{name}` | {count_parameters(net):,d} | {PAPER.get(name, ('-', '-'))[0]} |")


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
    parser.add_argument("--zoo", action="store_true", help="parameters, MACs, time and memory of every network")
    parser.add_argument("--networks", nargs="+", help="with --zoo: only these networks")
    parser.add_argument("--device", default="auto", help="with --zoo: cpu, cuda or auto (cuda when present)")
    parser.add_argument("--macs-only", action="store_true", help="with --zoo: parameters and MACs, no timing")
    parser.add_argument("--params-table", action="store_true", help="print the parameter table of docs/networks.md")
    parser.add_argument("--zoo-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--network", help=argparse.SUPPRESS)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    parser.add_argument("--impl", help=argparse.SUPPRESS)
    parser.add_argument("--tmp", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    if args.zoo_worker:
        zoo_worker(args)
        return
    if args.params_table:
        params_table()
        return
    if args.zoo:
        run_zoo(args)
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
