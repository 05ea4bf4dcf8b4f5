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
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from brainbarriers.bundles.manifest import IDENTITY, coarse_network, fine_network
from brainbarriers.networks import build
from brainbarriers.structures import FineTarget
from torch.utils.data import DataLoader, DistributedSampler

from .config import Recipe, as_recipe, save_recipe
from .data import PadCollate, TrainingSet
from .losses import DeepSupervisionLoss, DiceCELoss, FNDiceCELoss
from .losses_zoo import DifficultyGuidedCELoss, FocusNetLoss, HMEDNLoss, ShapeAdversary, adversarial_step

CHECKPOINT = "checkpoint.pt"
FINAL = "final.safetensors"
SPEC = "network.json"


# ---------------------------------------------------------------- networks and losses
def network_spec(config: Recipe | dict, target: FineTarget | None, direction=None) -> dict:
    """Architecture, channels and options of the coarse network (target None) or a fine network.

    For HMRNet-s the inter-slice axis is the array axis of the target's slice direction on the
    training grid (``preprocessing.array_axis``; the prepared grid has the identity direction).
    """
    recipe = as_recipe(config)
    if target is None:
        return coarse_network(recipe.coarse.options, recipe.coarse.architecture)
    net = recipe.fine.networks[target.variant]
    margin = None if recipe.fine.margin == "table" else int(recipe.fine.margin)
    patch = recipe.fine.patch_size
    if isinstance(patch, dict):
        patch = patch.get(target.key, patch.get("default"))
    # trained on fixed windows: inference must see windows of the same size (instance-norm statistics)
    return fine_network(target, net.options, net.architecture, margin, recipe.fine.max_crop,
                        direction=direction or IDENTITY, slice_axis=recipe.fine.slice_axes.get(target.key),
                        window=patch)


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
    elif name == "difficulty_ce":
        base = DifficultyGuidedCELoss()
    elif name == "hmedn":
        return HMEDNLoss(DifficultyGuidedCELoss(), weights=stage_cfg.get("deep_supervision_weights", (0.3, 0.3, 0.4)))
    elif name == "focusnet":
        return FocusNetLoss(DiceCELoss())
    else:
        raise ValueError(f"unknown loss {name!r} (dice_ce, fn_dice_ce, difficulty_ce, hmedn or focusnet)")
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


@dataclass
class _Run:
    """Everything one training run holds between its stages."""

    out_dir: Path
    stage_cfg: dict
    rank: int
    world: int
    device: torch.device
    seed: int
    epochs: int
    iterations: int
    batch: int
    spec: dict
    model: torch.nn.Module
    loss_fn: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    use_amp: bool
    milestones: list[int]
    start_epoch: int = 0
    start_step: int = 0
    global_step: int = 0
    dataset: TrainingSet | None = None
    sampler: DistributedSampler | None = None
    collate: PadCollate | None = None
    writer: object = None
    t0: float = 0.0
    epoch_losses: list[float] = field(default_factory=list)
    last_lr: float = 0.0
    #: FocusNetv2's shape adversary and its optimizer (loss ``shape_constraint``), else None
    adversary: ShapeAdversary | None = None
    optimizer_d: torch.optim.Optimizer | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def log_path(self) -> Path:
        return self.out_dir / "log.csv"

    @property
    def checkpoint_path(self) -> Path:
        return self.out_dir / CHECKPOINT


def train(config: Recipe | dict, stage_cfg: dict, cache: Path, entries: list[dict], out_dir: Path,
          target: FineTarget | None = None, boxes: dict | None = None, spacing=None,
          milestones: list[int] | None = None, resume: bool = True, init_weights: dict | None = None) -> dict:
    """Train one network (coarse when ``target`` is None) on ``entries``; returns a summary dict.

    ``init_weights``: a state dict to start from (fine-tuning) instead of a random initialisation.

    Writes into ``out_dir``: checkpoint.pt (resumable), log.csv, tb/ (TensorBoard), network.json,
    recipe.json (the complete recipe), final.safetensors and ``epoch_NNNN.safetensors`` at the
    given milestone epochs.
    """
    recipe = as_recipe(config)
    run = _build(recipe, stage_cfg, entries, Path(out_dir), target, milestones, init_weights)
    if resume and run.checkpoint_path.is_file():
        _resume(run)
    _attach_data(run, cache, entries, target, spacing, boxes)
    _open_outputs(run, recipe)
    run.t0 = time.time()
    for epoch in range(run.start_epoch, run.epochs):
        run.epoch_losses.append(_train_epoch(run, epoch))
        _end_epoch(run, epoch)
    return _finish(run)


def _build(recipe: Recipe, stage_cfg: dict, entries: list[dict], out_dir: Path, target: FineTarget | None,
           milestones: list[int] | None, init_weights: dict | None = None) -> _Run:
    """Processes, output folder, network, loss, optimizer and AMP scaler (seeded; nothing resumed yet)."""
    rank, world, device = init_distributed()
    if stage_cfg.get("threads"):
        torch.set_num_threads(int(stage_cfg["threads"]))
    if rank == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
    if world > 1:
        dist.barrier()
    seed = int(recipe.seed) + (0 if target is None else 1000 * target.coarse_index)
    global_batch = int(stage_cfg["batch_size"])
    if global_batch % world:
        raise ValueError(f"batch_size {global_batch} is not divisible by the {world} processes")
    direction = tuple(entries[0].get("direction") or IDENTITY)
    spec = network_spec(recipe, target, direction)
    torch.manual_seed(seed)
    model = build_network(spec)
    if init_weights is not None:
        try:
            model.load_state_dict(init_weights)
        except RuntimeError as e:  # torch lists every mismatched tensor; the first line says enough
            raise ValueError(f"the initial weights do not fit the recipe's network: {str(e).splitlines()[0]}") from None
    model = model.to(device)
    if stage_cfg.get("channels_last"):
        model = model.to(memory_format=torch.channels_last_3d)
    use_amp = bool(stage_cfg.get("amp")) and device.type == "cuda"
    adversary, optimizer_d = _shape_adversary(stage_cfg, spec, world, device, model)
    use_amp = use_amp and adversary is None  # the alternating step runs in full precision
    return _Run(adversary=adversary, optimizer_d=optimizer_d, out_dir=out_dir, stage_cfg=stage_cfg, rank=rank, world=world, device=device, seed=seed,
                epochs=int(stage_cfg["epochs"]), iterations=int(stage_cfg["iterations_per_epoch"]),
                batch=global_batch // world, spec=spec, model=model, loss_fn=make_loss(stage_cfg, target),
                optimizer=make_optimizer(model, stage_cfg["optimizer"]),
                scaler=torch.amp.GradScaler("cuda", enabled=use_amp), use_amp=use_amp,
                milestones=sorted(set(milestones or [])))


def _shape_adversary(stage_cfg: dict, spec: dict, world: int, device: torch.device, model: torch.nn.Module):
    """(ShapeAdversary, its Adam optimizer) when the stage's loss asks for FocusNetv2's shape
    constraint, else (None, None). The autoencoder has ShapeAutoencoder's widths (8, 16, 32; the
    paper gives none), fewer when the network's ROI is too small for three halvings (at least 2
    voxels must remain for instance norm); Adam lr 1e-3 is our choice (the paper gives none)."""
    loss = stage_cfg.get("loss", {})
    if not loss.get("shape_constraint"):
        return None, None
    if loss.get("name") != "focusnet" or spec["architecture"] != "focusnetv2":
        raise ValueError("loss.shape_constraint needs the focusnet loss on a focusnetv2 network "
                         f"(got {loss.get('name')!r} on {spec['architecture']!r})")
    if world > 1:
        raise ValueError("loss.shape_constraint trains on one process only (its autoencoder is not distributed)")
    from brainbarriers.networks.focusnet import ShapeAutoencoder

    levels = max(1, min(3, int(math.log2(max(2, min(model.roi_size)))) - 1))
    aae = ShapeAutoencoder((8, 16, 32)[:levels]).to(device)
    return ShapeAdversary(aae), torch.optim.Adam(aae.parameters(), lr=1e-3)


def _resume(run: _Run) -> None:
    """Model, optimizer, scaler, position and RNG states from the run's checkpoint."""
    ckpt = load_checkpoint(run.checkpoint_path)
    run.model.load_state_dict(ckpt["model"])
    run.optimizer.load_state_dict(ckpt["optimizer"])
    if ckpt.get("scaler"):
        run.scaler.load_state_dict(ckpt["scaler"])
    if run.adversary is not None and ckpt.get("adversary"):
        run.adversary.aae.load_state_dict(ckpt["adversary"]["model"])
        run.optimizer_d.load_state_dict(ckpt["adversary"]["optimizer"])
    run.start_epoch, run.start_step, run.global_step = ckpt["epoch"], ckpt["step"], ckpt["global_step"]
    _set_rng_state(ckpt["rng"])
    if run.is_main:
        print(f"resuming {run.out_dir.name} at epoch {run.start_epoch} step {run.start_step} "
              f"(global step {run.global_step})", flush=True)
        _trim_log(run.log_path, run.global_step)


def _attach_data(run: _Run, cache: Path, entries: list[dict], target: FineTarget | None, spacing,
                 boxes: dict | None) -> None:
    """DistributedDataParallel when started by torchrun; the sample set, its sampler and collation."""
    if run.world > 1:
        run.model = torch.nn.parallel.DistributedDataParallel(
            run.model, device_ids=[run.device.index] if run.device.type == "cuda" else None)
    global_batch = run.batch * run.world
    run.dataset = TrainingSet(cache, entries, target, run.stage_cfg, spacing, run.iterations * global_batch,
                              run.seed, boxes=boxes)
    run.sampler = DistributedSampler(run.dataset, num_replicas=run.world, rank=run.rank, shuffle=True,
                                     seed=run.seed, drop_last=True)
    run.collate = PadCollate(tuple(_unwrap(run.model).required_multiple))


def _open_outputs(run: _Run, recipe: Recipe) -> None:
    """network.json, recipe.json, the TensorBoard writer and the log header (main process only)."""
    if not run.is_main:
        return
    atomic_write_text(run.out_dir / SPEC, json.dumps(run.spec, indent=1))
    save_recipe(recipe, run.out_dir)
    if run.stage_cfg.get("tensorboard", True):
        try:
            from torch.utils.tensorboard import SummaryWriter

            run.writer = SummaryWriter(str(run.out_dir / "tb"), purge_step=run.global_step or None)
        except ImportError:  # tensorboard is optional
            run.writer = None
    if not run.log_path.is_file():
        run.log_path.write_text("epoch,step,global_step,loss,lr,seconds\n")


def _train_epoch(run: _Run, epoch: int) -> float:
    """One epoch (from the resumed step in the first); returns its mean loss."""
    from tqdm import tqdm

    cfg = run.stage_cfg
    lr = learning_rate(cfg["optimizer"], cfg.get("schedule", {}), epoch, run.epochs)
    for group in run.optimizer.param_groups:
        group["lr"] = lr
    run.sampler.set_epoch(epoch)
    run.dataset.set_epoch(epoch)
    skip = run.start_step if epoch == run.start_epoch else 0
    indices = list(run.sampler)[skip * run.batch: run.iterations * run.batch]
    loader = DataLoader(run.dataset, batch_size=run.batch, sampler=indices, num_workers=int(cfg.get("num_workers", 0)),
                        collate_fn=run.collate, pin_memory=run.device.type == "cuda", persistent_workers=False)
    run.model.train()
    every = int(cfg.get("checkpoint_every_steps", 0) or 0)
    running, count = 0.0, 0
    bar = tqdm(loader, total=run.iterations - skip, desc=f"{run.out_dir.name} {epoch + 1}/{run.epochs}", leave=False,
               disable=not (run.is_main and cfg.get("progress", True)))
    for step, (x, y) in enumerate(bar, start=skip):
        value = _train_step(run, x, y)
        if not math.isfinite(value):
            raise FloatingPointError(f"loss is {value} at epoch {epoch} step {step}")
        running += value
        count += 1
        if run.is_main:
            _log_step(run, epoch, step, value, lr)
            bar.set_postfix(loss=f"{value:.4f}")
        if every and (step + 1) % every == 0 and step + 1 < run.iterations:
            _checkpoint(run, epoch, step + 1)
    run.last_lr = lr
    return running / max(count, 1)


def _train_step(run: _Run, x: torch.Tensor, y: torch.Tensor) -> float:
    """One optimizer step; returns the loss (averaged over the processes)."""
    x, y = x.to(run.device, non_blocking=True), y.to(run.device, non_blocking=True)
    if run.stage_cfg.get("channels_last"):
        x = x.contiguous(memory_format=torch.channels_last_3d)
    if run.adversary is not None:  # FocusNetv2: network and shape autoencoder updated alternately
        value_g, _ = adversarial_step(run.model, run.loss_fn, run.adversary, run.optimizer, run.optimizer_d, x, y)
        run.global_step += 1
        return value_g
    run.optimizer.zero_grad(set_to_none=True)
    with torch.autocast("cuda", dtype=torch.float16) if run.use_amp else nullcontext():
        loss = run.loss_fn(run.model(x), y)
    run.scaler.scale(loss).backward()
    if run.stage_cfg.get("grad_clip"):
        run.scaler.unscale_(run.optimizer)
        torch.nn.utils.clip_grad_norm_(run.model.parameters(), float(run.stage_cfg["grad_clip"]))
    run.scaler.step(run.optimizer)
    run.scaler.update()
    run.global_step += 1
    value = loss.detach().float()
    if run.world > 1:
        dist.all_reduce(value)
        value /= run.world
    return float(value)


def _log_step(run: _Run, epoch: int, step: int, value: float, lr: float) -> None:
    with open(run.log_path, "a") as fh:
        fh.write(f"{epoch},{step},{run.global_step},{value:.6f},{lr:.6g},{time.time() - run.t0:.2f}\n")
    if run.writer is not None:
        run.writer.add_scalar("loss", value, run.global_step)
        run.writer.add_scalar("lr", lr, run.global_step)


def _checkpoint(run: _Run, epoch: int, step: int) -> None:
    """Write the resumable state (main process; atomically): the next step to run is (epoch, step)."""
    if not run.is_main:
        return
    atomic_torch_save({"model": _unwrap(run.model).state_dict(), "optimizer": run.optimizer.state_dict(),
                       "scaler": run.scaler.state_dict() if run.use_amp else None, "epoch": epoch, "step": step,
                       "global_step": run.global_step, "rng": _rng_state(),
                       "schedule": {"epoch": epoch, "epochs": run.epochs},
                       "adversary": None if run.adversary is None else
                       {"model": run.adversary.aae.state_dict(), "optimizer": run.optimizer_d.state_dict()}},
                      run.checkpoint_path)


def _end_epoch(run: _Run, epoch: int) -> None:
    """Checkpoint at the epoch's end, milestone weights, and the epoch's line on stdout."""
    _checkpoint(run, epoch + 1, 0)
    if run.is_main and (epoch + 1) in run.milestones:
        save_weights(_unwrap(run.model).state_dict(), run.out_dir / f"epoch_{epoch + 1:04d}.safetensors")
    if run.is_main:
        print(f"{run.out_dir.name}: epoch {epoch + 1}/{run.epochs} loss {run.epoch_losses[-1]:.4f} "
              f"lr {run.last_lr:.4g}", flush=True)


def _finish(run: _Run) -> dict:
    """Final weights, writer closed, processes in step; the run's summary."""
    if run.is_main:
        save_weights(_unwrap(run.model).state_dict(), run.out_dir / FINAL)
        if run.writer is not None:
            run.writer.close()
    if run.world > 1:
        dist.barrier()
    return {"epoch_losses": run.epoch_losses, "global_step": run.global_step, "out_dir": str(run.out_dir)}


def read_log(out_dir: Path) -> list[dict]:
    with open(Path(out_dir) / "log.csv", newline="") as fh:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(fh)]
