import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from brainbarriers.structures import fine_target
from brainbarriers_training.data import Augmenter, TrainingSet
from brainbarriers_training.engine import build_network, load_checkpoint, load_weights, network_spec, read_log
from brainbarriers_training.stages import train_coarse, train_fine
from training_helpers import PYTHONPATH, REPO, run_training_cli, tiny_config, write_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_loss_decreases_and_fine_uses_coarse_checkpoints(prepared, tmp_path):
    _, cache, _ = prepared
    cfg = tiny_config(train={"epochs": 6, "iterations_per_epoch": 4, "checkpoint_every_steps": 0,
                             "optimizer": {"name": "adamw", "lr": 0.02}})
    summary = train_coarse(cfg, cache, tmp_path)
    losses = summary["epoch_losses"]
    print("coarse epoch losses", [round(v, 3) for v in losses])
    assert losses[-1] < 0.85 * losses[0]
    coarse = tmp_path / "coarse"
    assert sorted(p.name for p in coarse.glob("epoch_*.safetensors")) == [
        "epoch_0002.safetensors", "epoch_0004.safetensors", "epoch_0006.safetensors"]
    boxes = json.loads((coarse / "coarse_boxes.json").read_text())
    assert sorted(boxes) == ["epoch_0002", "epoch_0004", "epoch_0006"]

    cfg_f = tiny_config(train={"epochs": 1, "iterations_per_epoch": 2, "checkpoint_every_steps": 0})
    fine = train_fine(cfg_f, cache, tmp_path, (fine_target("falx"),))
    assert fine["falx"]["box_source"] == "coarse checkpoints"
    spec = json.loads((tmp_path / "fine" / "falx" / "network.json").read_text())
    assert spec["architecture"] == "hmrnet-s" and spec["options"]["inter_slice_axis"] == 2  # LR on the LPS grid
    assert (tmp_path / "fine" / "falx" / "final.safetensors").is_file()


def test_fine_samples_draw_boxes_from_coarse_checkpoints(prepared):
    _, cache, index = prepared
    entries = index["cases"]
    t = fine_target("cerebellum")
    cfg = tiny_config()["train"] | {"margin": 0, "augmentation": {}}
    grown = {e["case"]: [e["boxes"][t.key][0], [v + 2 for v in e["boxes"][t.key][1]]] for e in entries}
    far = [[0, 0, 0], [3, 3, 3]]  # misses the cerebellum: the sampler falls back to the true box
    fake = {"a": {e["case"]: {t.key: grown[e["case"]]} for e in entries},
            "b": {e["case"]: {t.key: None} for e in entries},
            "c": {e["case"]: {t.key: far} for e in entries}}
    ds = TrainingSet(cache, entries[:1], t, cfg, index["spacing"], 40, seed=1, boxes=fake, augment=False)
    shapes = {tuple(ds[i][0].shape[1:]) for i in range(len(ds))}
    (k0, j0, i0), (k1, j1, i1) = entries[0]["boxes"][t.key]
    assert shapes == {(k1 - k0 + 2, j1 - j0 + 2, i1 - i0 + 2), (k1 - k0, j1 - j0, i1 - i0)}  # never the far box
    ds_gt = TrainingSet(cache, entries[:1], t, cfg, index["spacing"], 1, seed=1, augment=False)
    x, y = ds_gt[0]
    assert tuple(x.shape[1:]) == (k1 - k0, j1 - j0, i1 - i0) and int(y.sum()) > 0


def test_modality_dropout_zeroes_channels(prepared):
    _, cache, index = prepared
    cfg = tiny_config()["train"]
    cfg["augmentation"] = {"modality_dropout_probability": 1.0}
    ds = TrainingSet(cache, index["cases"], None, cfg, index["coarse_spacing"], 12, seed=0)
    for i in range(12):
        x, _ = ds[i]
        zero = [bool((x[c] == 0).all()) for c in range(3)]
        assert 1 <= sum(zero) <= 2


def test_single_modality_steps_keep_one_of_the_present_channels():
    ds = Augmenter({"single_modality_probability": 1.0, "modality_dropout_probability": 1.0}, (2.0, 2.0, 2.0))
    image = np.random.default_rng(0).normal(size=(3, 4, 4, 4)).astype(np.float32)
    image[1] = 0.0  # a case without this modality
    rng = np.random.default_rng(1)
    kept = []
    for _ in range(40):
        out = ds.intensity(image, rng)
        alive = [c for c in range(3) if out[c].any()]
        assert len(alive) == 1
        kept.append(alive[0])
    assert set(kept) == {0, 2}  # never the missing channel, both present ones in turn


def test_recipes_without_single_modality_steps_keep_their_random_stream():
    image = np.random.default_rng(0).normal(size=(3, 4, 4, 4)).astype(np.float32)
    outs = []
    for extra in ({}, {"single_modality_probability": 0.0}):
        ds = Augmenter({"modality_dropout_probability": 0.5, "noise_probability": 0.5} | extra, (2.0, 2.0, 2.0))
        rng = np.random.default_rng(3)
        outs.append(np.stack([ds.intensity(image, rng) for _ in range(10)]))
    np.testing.assert_array_equal(*outs)


def test_augmentation_is_seeded(prepared):
    _, cache, index = prepared
    cfg = tiny_config()["train"]
    cfg["augmentation"] |= {"affine_probability": 1.0, "elastic_probability": 1.0, "gamma_probability": 1.0}
    a = TrainingSet(cache, index["cases"], fine_target("tentorium"), tiny_config()["fine"] | cfg, index["spacing"], 3, 5)
    b = TrainingSet(cache, index["cases"], fine_target("tentorium"), tiny_config()["fine"] | cfg, index["spacing"], 3, 5)
    for i in range(3):
        torch.testing.assert_close(a[i][0], b[i][0])
        assert torch.equal(a[i][1], b[i][1])
    a.set_epoch(1)
    assert not torch.equal(a[0][0], b[0][0])


def _resume_config(tmp_path):
    cfg = tiny_config(train={"epochs": 3, "iterations_per_epoch": 8, "batch_size": 2, "checkpoint_every_steps": 1})
    cfg["train"]["augmentation"] |= {"affine_probability": 0.5, "gamma_probability": 0.5}
    return write_config(cfg, tmp_path / "resume.json")


def test_killed_run_resumes_at_the_same_step_with_the_same_state(prepared, tmp_path):
    _, cache, _ = prepared
    config = _resume_config(tmp_path)
    args = ["train-coarse", "--config", str(config), "--cache", str(cache), "--threads", "1"]
    ref = run_training_cli(args + ["--workdir", str(tmp_path / "ref")], timeout=600)
    assert ref.returncode == 0, ref.stderr

    work = tmp_path / "killed"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=PYTHONPATH)
    proc = subprocess.Popen([sys.executable, "-m", "brainbarriers_training", *args, "--workdir", str(work)], env=env, cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt = work / "coarse" / "checkpoint.pt"
    killed_at = None
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if ckpt.is_file():
            state = load_checkpoint(ckpt)
            if state["global_step"] >= 5:  # mid-run (epoch 0 or 1), after some checkpoints
                proc.send_signal(signal.SIGKILL)
                killed_at = state["global_step"]
                break
        time.sleep(0.02)
    proc.wait()
    assert killed_at is not None and proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    state = load_checkpoint(ckpt)  # whatever was written last is complete (atomic writes)
    assert state["global_step"] >= killed_at
    assert state["global_step"] < 24

    resumed = run_training_cli(args + ["--workdir", str(work)], timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert f"(global step {state['global_step']})" in resumed.stdout
    assert f"epoch {state['epoch']} step {state['step']}" in resumed.stdout

    a = load_weights(tmp_path / "ref" / "coarse" / "final.safetensors")
    b = load_weights(work / "coarse" / "final.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)
    la, lb = read_log(tmp_path / "ref" / "coarse"), read_log(work / "coarse")
    assert [r["global_step"] for r in lb] == list(range(1, 25))
    np.testing.assert_allclose([r["loss"] for r in la], [r["loss"] for r in lb], rtol=0, atol=1e-6)
    assert not list((work / "coarse").glob("*.tmp*"))


def test_ddp_two_processes_gloo_matches_single_process(prepared, tmp_path):
    _, cache, _ = prepared
    cfg = tiny_config(train={"epochs": 2, "iterations_per_epoch": 4, "batch_size": 2, "checkpoint_every_steps": 0})
    cfg["train"]["augmentation"] = {}  # compare the optimisation itself
    config = write_config(cfg, tmp_path / "ddp.json")
    common = ["train-coarse", "--config", str(config), "--cache", str(cache), "--threads", "1"]
    single = run_training_cli(common + ["--workdir", str(tmp_path / "single")], timeout=600)
    assert single.returncode == 0, single.stderr
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=PYTHONPATH)
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          "-m", "brainbarriers_training", *common, "--workdir", str(tmp_path / "ddp")], env=env, cwd=REPO,
                         capture_output=True, text=True, timeout=600)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    ls, ld = read_log(tmp_path / "single" / "coarse"), read_log(tmp_path / "ddp" / "coarse")
    assert len(ls) == len(ld) == 8
    # same samples, same initial weights; the losses differ only in batch Dice vs. the mean over
    # two per-process Dice terms
    print("single", [round(r["loss"], 4) for r in ls])
    print("ddp   ", [round(r["loss"], 4) for r in ld])
    np.testing.assert_allclose([r["loss"] for r in ld], [r["loss"] for r in ls], rtol=0.05)
    a = load_weights(tmp_path / "single" / "coarse" / "final.safetensors")
    b = load_weights(tmp_path / "ddp" / "coarse" / "final.safetensors")
    va = torch.cat([a[k].flatten() for k in sorted(a) if a[k].is_floating_point()])
    vb = torch.cat([b[k].flatten() for k in sorted(a) if a[k].is_floating_point()])
    rel = float((va - vb).norm() / va.norm())
    print("relative weight difference", rel)
    assert rel < 0.05, rel


def test_network_spec_inter_slice_axis_follows_direction():
    cfg = tiny_config()
    t = fine_target("transverse_sinus")
    assert network_spec(cfg, t)["options"]["inter_slice_axis"] == 0  # IS -> array axis 0 on the LPS grid
    flipped = (0.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 0.0)  # image axis 0 along S
    assert network_spec(cfg, t, flipped)["options"]["inter_slice_axis"] == 2


def test_coarse_windows_only_in_the_first_patch_epochs(prepared):
    """``coarse.patch_epochs``: windows before that epoch, the whole head from it on."""
    _, cache, index = prepared
    cfg = tiny_config()["train"] | {"augmentation": {}}
    whole = tuple(TrainingSet(cache, index["cases"], None, cfg, index["coarse_spacing"], 1, seed=3)[0][1].shape)
    patch = [max(1, s - 3) for s in whole]
    ds = TrainingSet(cache, index["cases"], None, cfg | {"patch_size": patch, "patch_epochs": 2},
                     index["coarse_spacing"], 1, seed=3)
    shapes = []
    for epoch in range(4):
        ds.set_epoch(epoch)
        shapes.append(tuple(ds[0][1].shape))
    assert shapes == [tuple(patch)] * 2 + [whole] * 2
    always = TrainingSet(cache, index["cases"], None, cfg | {"patch_size": patch}, index["coarse_spacing"], 1, seed=3)
    always.set_epoch(3)
    assert tuple(always[0][1].shape) == tuple(patch)


def test_samples_do_not_depend_on_loader_workers(prepared):
    from brainbarriers_training.data import PadCollate
    from torch.utils.data import DataLoader

    _, cache, index = prepared
    cfg = tiny_config()["train"]
    cfg["augmentation"] |= {"affine_probability": 1.0, "gamma_probability": 1.0}
    ds = TrainingSet(cache, index["cases"], None, cfg, index["coarse_spacing"], 4, seed=2)
    batches = []
    for workers in (0, 2):
        loader = DataLoader(ds, batch_size=2, num_workers=workers, collate_fn=PadCollate((8, 8, 8)))
        batches.append([b for b in loader])
    for (x0, y0), (x2, y2) in zip(*batches):
        assert torch.equal(x0, x2) and torch.equal(y0, y2)


def test_train_coarse_continues_from_given_weights_and_refuses_ones_that_do_not_fit(prepared, tmp_path):
    """--init-from: the first step starts from the given weights (its loss is theirs, not a fresh
    network's); a missing, damaged or mismatched file is a one-line error before any training."""
    _, cache, _ = prepared
    config = write_config(tiny_config(train={"epochs": 2, "iterations_per_epoch": 3, "checkpoint_every_steps": 0,
                                             "optimizer": {"name": "adamw", "lr": 0.02}},
                                      coarse={"box_checkpoints": []}), tmp_path / "tiny.json")
    common = ["train-coarse", "--config", str(config), "--cache", str(cache), "--threads", "1"]
    r = run_training_cli([*common, "--workdir", str(tmp_path / "first")])
    assert r.returncode == 0, r.stderr
    trained = tmp_path / "first/coarse/final.safetensors"
    r = run_training_cli([*common, "--workdir", str(tmp_path / "again"), "--init-from", str(trained)])
    assert r.returncode == 0, r.stderr
    first, again = read_log(tmp_path / "first/coarse"), read_log(tmp_path / "again/coarse")
    assert again[0]["loss"] < 0.9 * first[0]["loss"]  # a trained start, not a random one

    damaged = tmp_path / "damaged.safetensors"
    damaged.write_bytes(trained.read_bytes()[:100])
    other = tmp_path / "other.safetensors"
    from safetensors.torch import save_file

    save_file({"weight": torch.zeros(3)}, str(other))
    for path, words in [(tmp_path / "none.safetensors", "is not a file"), (damaged, "not a readable safetensors"),
                        (other, "do not fit the recipe's network")]:
        r = run_training_cli([*common, "--workdir", str(tmp_path / path.stem), "--init-from", str(path)])
        assert r.returncode == 2 and words in r.stderr and r.stderr.strip().count("\n") == 0, r.stderr
        assert not (tmp_path / path.stem / "coarse/final.safetensors").exists()


def test_train_fine_continues_from_given_weights_for_one_structure_only(prepared, tmp_path):
    """train-fine --init-from: one structure's network starts from the given weights; naming more
    than one structure, or weights of another network, is a one-line error before any training."""
    _, cache, _ = prepared
    config = write_config(tiny_config(train={"epochs": 2, "iterations_per_epoch": 3, "checkpoint_every_steps": 0,
                                             "optimizer": {"name": "adamw", "lr": 0.02}}), tmp_path / "tiny.json")
    common = ["train-fine", "--config", str(config), "--cache", str(cache), "--threads", "1"]
    r = run_training_cli([*common, "--workdir", str(tmp_path / "first"), "--structure", "cerebellum"])
    assert r.returncode == 0, r.stderr
    trained = tmp_path / "first/fine/cerebellum/final.safetensors"
    r = run_training_cli([*common, "--workdir", str(tmp_path / "again"), "--structure", "cerebellum",
                          "--init-from", str(trained)])
    assert r.returncode == 0, r.stderr
    first, again = read_log(tmp_path / "first/fine/cerebellum"), read_log(tmp_path / "again/fine/cerebellum")
    assert again[0]["loss"] < 0.9 * first[0]["loss"]  # a trained start, not a random one

    for structures, words in [(["cerebellum", "ventricles"], "name one structure, not 2"),
                              (["falx"], "do not fit the recipe's network")]:  # falx is HMRNet-s, cerebellum -p
        r = run_training_cli([*common, "--workdir", str(tmp_path / "wrong"), "--structure", *structures,
                              "--init-from", str(trained)])
        assert r.returncode == 2 and words in r.stderr and r.stderr.strip().count("\n") == 0, r.stderr
        assert not list((tmp_path / "wrong").glob("fine/*/final.safetensors"))


def test_channels_last_training_follows_the_same_losses_and_saves_plain_weights(prepared, tmp_path, monkeypatch):
    from brainbarriers_training import engine

    built = []
    monkeypatch.setattr(engine, "build_network", lambda spec: built.append(build_network(spec)) or built[-1])
    _, cache, _ = prepared
    train = {"epochs": 1, "iterations_per_epoch": 3, "checkpoint_every_steps": 0}
    plain = train_coarse(tiny_config(train=train), cache, tmp_path / "plain")
    first_cl = len(built)  # the first network each run builds is the one it trains
    last = train_coarse(tiny_config(train={**train, "channels_last": True}), cache, tmp_path / "cl")
    layouts = [[p.is_contiguous(memory_format=torch.channels_last_3d) for p in m.parameters()
                if p.dim() == 5 and p.shape[-1] > 1] for m in (built[0], built[first_cl])]
    assert not any(layouts[0]) and all(layouts[1])  # the option did change the layout trained in
    # the same steps in another memory layout: equal up to float32 summation order
    np.testing.assert_allclose([r["loss"] for r in read_log(tmp_path / "cl" / "coarse")],
                               [r["loss"] for r in read_log(tmp_path / "plain" / "coarse")], rtol=1e-3)
    assert len(last["epoch_losses"]) == len(plain["epoch_losses"]) == 1
    weights = load_weights(tmp_path / "cl" / "coarse" / "final.safetensors")
    assert all(w.is_contiguous() for w in weights.values())
    spec = json.loads((tmp_path / "cl" / "coarse" / "network.json").read_text())
    build_network(spec).load_state_dict(weights)
