"""The training loop shared by the coarse and the fine stage.

Checkpoints (``checkpoint.pt`` in the stage folder) hold the model, optimizer, AMP scaler, the
position (epoch, step within the epoch, global step) and the RNG states, written atomically
(temporary file + os.replace) every ``checkpoint_every_steps`` steps and at each epoch's end. A
run started again in the same folder resumes from it; since every sample is a function of
(seed, epoch, index) the resumed run continues with exactly the samples and state the killed run
would have had.

Multi-GPU / multi-node: started by torchrun, the loop uses DistributedDataParallel (NCCL on CUDA,
gloo on CPU) and a DistributedSampler; the global batch size is split over the processes.
"""

from __future__ import annotations

import csv
import json
import math
import os
import random
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from brainbarriers.losses import DeepSupervisionLoss, DiceCELoss, FNDiceCELoss
from brainbarriers.networks import build
from brainbarriers.preprocessing import array_axis
from brainbarriers.structures import COARSE_CHANNELS, MODALITIES, FineTarget
from torch.utils.data import DataLoader, DistributedSampler

from .data import PadCollate, TrainingSet

CHECKPOINT = "checkpoint.pt"
FINAL = "final.safetensors"
SPEC = "network.json"


# ---------------------------------------------------------------- networks and losses
def network_spec(config: dict, target: FineTarget | None, direction=None) -> dict:
    """Architecture, channels and options of the coarse network (target None) or a fine network.

    For HMRNet-s the inter-slice axis is the array axis of the target's slice direction on the
    training grid (``preprocessing.array_axis``; the prepared grid has the identity direction).
    """
    direction = direction or (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    if target is None:
        c = config["coarse"]
        return {"architecture": c["architecture"], "in_channels": len(MODALITIES), "out_channels": COARSE_CHANNELS,
                "options": dict(c.get("options", {}))}
    net = config["fine"]["networks"][target.variant]
    options = dict(net.get("options", {}))
    if target.variant == "s" and target.slice_axis is not None:
        options["inter_slice_axis"] = array_axis(direction, target.slice_axis)
    margin = config["fine"].get("margin", "table")
    return {"architecture": net["architecture"], "in_channels": len(MODALITIES), "out_channels": 2,
            "options": options, "target": target.key, "slice_axis": target.slice_axis,
            "margin": target.margin if margin == "table" else int(margin),
            "max_crop": list(config["fine"].get("max_crop") or [128, 128, 128])}


def build_network(spec: dict) -> torch.nn.Module:
    return build(spec["architecture"], spec["in_channels"], spec["out_channels"], **spec["options"])


def make_loss(stage_cfg: dict, target: FineTarget | None) -> torch.nn.Module:
    loss_cfg = stage_cfg.get("loss", {})
    name = loss_cfg.get("name", "dice_ce")
    if name == "fn_dice_ce":
        theta = loss_cfg.get("theta", "table")
        base = FNDiceCELoss(theta=target.theta if (theta == "table" and target) else float(theta if theta != "table" else 1.0))
    elif name == "dice_ce":
        base = DiceCELoss()
    else:
        raise ValueError(f"unknown loss {name!r} (dice_ce or fn_dice_ce)")
    return DeepSupervisionLoss(base, stage_cfg.get("deep_supervision_weights", (0.3, 0.3, 0.4)))


def make_optimizer(model: torch.nn.Module, cfg: dict) -> torch.optim.Optimizer:
    name = cfg.get("name", "sgd").lower()
    if name == "sgd":
        return torch.optim.SGD(model.parameters(), lr=cfg["lr"], momentum=cfg.get("momentum", 0.99),
                               nesterov=cfg.get("nesterov", True), weight_decay=cfg.get("weight_decay", 1e-5))
    if name == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=cfg["lr"], weight_decay=cfg.get("weight_decay", 1e-5))
    if name == "adam":
        return torch.optim.Adam(model.parameters(), lr=cfg["lr"], weight_decay=cfg.get("weight_decay", 0.0))
    raise ValueError(f"unknown optimizer {name!r} (sgd, adam, adamw)")


def learning_rate(cfg: dict, schedule: dict, epoch: int, epochs: int) -> float:
    """Poly decay (paper): lr = lr0 * (1 - e / N) ** power for the 0-based epoch e; or constant."""
    lr0 = float(cfg["lr"])
    if schedule.get("name", "poly") == "poly":
        return lr0 * (1.0 - epoch / max(epochs, 1)) ** float(schedule.get("power", 0.9))
    return lr0


# ---------------------------------------------------------------- distributed helpers
def dist_info() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment (0, 1, 0 when not distributed)."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))


def init_distributed() -> tuple[int, int, torch.device]:
    rank, world, local = dist_info()
    if torch.cuda.is_available():
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return rank, world, device


# ---------------------------------------------------------------- checkpoints
def atomic_torch_save(obj, path: Path) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    with open(tmp, "wb") as fh:
        torch.save(obj, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def save_weights(state_dict: dict, path: Path) -> None:
    from safetensors.torch import save_file

    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    save_file({k: v.detach().cpu().contiguous() for k, v in state_dict.items()}, str(tmp))
    os.replace(tmp, path)


def load_weights(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path))


def _rng_state() -> dict:
    np_state = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": {"name": np_state[0], "keys": torch.from_numpy(np_state[1].astype(np.int64)),
                       "pos": int(np_state[2]), "has_gauss": int(np_state[3]), "cached": float(np_state[4])}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def load_checkpoint(path: Path) -> dict:
    # weights_only: the checkpoint holds tensors and plain Python values only.
    return torch.load(path, map_location="cpu", weights_only=True)


# ---------------------------------------------------------------- the loop
def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if hasattr(model, "module") else model


def _trim_log(path: Path, global_step: int) -> None:
    if not path.is_file():
        return
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    if not rows:
        return
    keep = [rows[0]] + [r for r in rows[1:] if r and int(r[2]) <= global_step]
    with open(path, "w", newline="") as fh:
        csv.writer(fh).writerows(keep)


def train(config: dict, stage_cfg: dict, cache: Path, entries: list[dict], out_dir: Path,
          target: FineTarget | None = None, boxes: dict | None = None, spacing=None,
          milestones: list[int] | None = None, resume: bool = True, init_weights: dict | None = None) -> dict:
    """Train one network (coarse when ``target`` is None) on ``entries``; returns a summary dict.

    ``init_weights``: a state dict to start from (fine-tuning) instead of a random initialisation.

    Writes into ``out_dir``: checkpoint.pt (resumable), log.csv, tb/ (TensorBoard), network.json,
    final.safetensors and ``epoch_NNNN.safetensors`` at the given milestone epochs.
    """
    from tqdm import tqdm

    out_dir = Path(out_dir)
    rank, world, device = init_distributed()
    is_main = rank == 0
    if stage_cfg.get("threads"):
        torch.set_num_threads(int(stage_cfg["threads"]))
    if is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
    if world > 1:
        dist.barrier()

    seed = int(config.get("seed", 0)) + (0 if target is None else 1000 * target.coarse_index)
    epochs = int(stage_cfg["epochs"])
    ipe = int(stage_cfg["iterations_per_epoch"])
    global_batch = int(stage_cfg["batch_size"])
    if global_batch % world:
        raise ValueError(f"batch_size {global_batch} is not divisible by the {world} processes")
    batch = global_batch // world

    direction = tuple(entries[0].get("direction") or (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
    spec = network_spec(config, target, direction)
    torch.manual_seed(seed)
    model = build_network(spec)
    if init_weights is not None:
        model.load_state_dict(init_weights)
    model = model.to(device)
    multiple = tuple(model.required_multiple)
    loss_fn = make_loss(stage_cfg, target)
    optimizer = make_optimizer(model, stage_cfg["optimizer"])
    use_amp = bool(stage_cfg.get("amp")) and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)

    start_epoch, start_step, global_step = 0, 0, 0
    ckpt_path = out_dir / CHECKPOINT
    if resume and ckpt_path.is_file():
        ckpt = load_checkpoint(ckpt_path)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        if ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
        start_epoch, start_step, global_step = ckpt["epoch"], ckpt["step"], ckpt["global_step"]
        _set_rng_state(ckpt["rng"])
        if is_main:
            print(f"resuming {out_dir.name} at epoch {start_epoch} step {start_step} (global step {global_step})",
                  flush=True)
            _trim_log(out_dir / "log.csv", global_step)

    if world > 1:
        model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    dataset = TrainingSet(cache, entries, target, stage_cfg, spacing, ipe * global_batch, seed, boxes=boxes)
    sampler = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=seed, drop_last=True)
    collate = PadCollate(multiple)
    workers = int(stage_cfg.get("num_workers", 0))

    if is_main:
        atomic_write_text(out_dir / SPEC, json.dumps(spec, indent=1))
        atomic_write_text(out_dir / "config.json", json.dumps(config, indent=1))
    writer = None
    if is_main and stage_cfg.get("tensorboard", True):
        try:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(out_dir / "tb"), purge_step=global_step or None)
        except ImportError:  # tensorboard is optional
            writer = None
    log_path = out_dir / "log.csv"
    if is_main and not log_path.is_file():
        log_path.write_text("epoch,step,global_step,loss,lr,seconds\n")
    every = int(stage_cfg.get("checkpoint_every_steps", 0) or 0)
    milestones = sorted(set(milestones or []))

    def checkpoint(epoch: int, step: int) -> None:
        if not is_main:
            return
        atomic_torch_save({"model": _unwrap(model).state_dict(), "optimizer": optimizer.state_dict(),
                           "scaler": scaler.state_dict() if use_amp else None, "epoch": epoch, "step": step,
                           "global_step": global_step, "rng": _rng_state(),
                           "schedule": {"epoch": epoch, "epochs": epochs}}, ckpt_path)

    epoch_losses: list[float] = []
    t0 = time.time()
    for epoch in range(start_epoch, epochs):
        lr = learning_rate(stage_cfg["optimizer"], stage_cfg.get("schedule", {}), epoch, epochs)
        for group in optimizer.param_groups:
            group["lr"] = lr
        sampler.set_epoch(epoch)
        dataset.set_epoch(epoch)
        skip = start_step if epoch == start_epoch else 0
        indices = list(sampler)[skip * batch: ipe * batch]
        loader = DataLoader(dataset, batch_size=batch, sampler=indices, num_workers=workers, collate_fn=collate,
                            pin_memory=device.type == "cuda", persistent_workers=False)
        model.train()
        running, count = 0.0, 0
        bar = tqdm(loader, total=ipe - skip, desc=f"{out_dir.name} {epoch + 1}/{epochs}", leave=False,
                   disable=not (is_main and stage_cfg.get("progress", True)))
        for step, (x, y) in enumerate(bar, start=skip):
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast("cuda", dtype=torch.float16) if use_amp else nullcontext():
                out = model(x)
                loss = loss_fn(out, y)
            scaler.scale(loss).backward()
            if stage_cfg.get("grad_clip"):
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), float(stage_cfg["grad_clip"]))
            scaler.step(optimizer)
            scaler.update()
            global_step += 1
            value = loss.detach().float()
            if world > 1:
                dist.all_reduce(value)
                value /= world
            value = float(value)
            if not math.isfinite(value):
                raise FloatingPointError(f"loss is {value} at epoch {epoch} step {step}")
            running += value
            count += 1
            if is_main:
                with open(log_path, "a") as fh:
                    fh.write(f"{epoch},{step},{global_step},{value:.6f},{lr:.6g},{time.time() - t0:.2f}\n")
                if writer is not None:
                    writer.add_scalar("loss", value, global_step)
                    writer.add_scalar("lr", lr, global_step)
                bar.set_postfix(loss=f"{value:.4f}")
            if every and (step + 1) % every == 0 and step + 1 < ipe:
                checkpoint(epoch, step + 1)
        epoch_losses.append(running / max(count, 1))
        checkpoint(epoch + 1, 0)
        if is_main and (epoch + 1) in milestones:
            save_weights(_unwrap(model).state_dict(), out_dir / f"epoch_{epoch + 1:04d}.safetensors")
        if is_main:
            print(f"{out_dir.name}: epoch {epoch + 1}/{epochs} loss {epoch_losses[-1]:.4f} lr {lr:.4g}", flush=True)
    if is_main:
        save_weights(_unwrap(model).state_dict(), out_dir / FINAL)
        if writer is not None:
            writer.close()
    if world > 1:
        dist.barrier()
    return {"epoch_losses": epoch_losses, "global_step": global_step, "out_dir": str(out_dir)}


def read_log(out_dir: Path) -> list[dict]:
    with open(Path(out_dir) / "log.csv", newline="") as fh:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(fh)]
