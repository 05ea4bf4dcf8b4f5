import hashlib
import json
import os
import subprocess
import sys

import SimpleITK as sitk
import torch
from brainbarriers.bundles import load_bundle
from brainbarriers.structures import FINE_TARGETS
from brainbarriers_training.cli import main
from brainbarriers_training.phantom import case_files
from brainbarriers_training.stages import train_coarse, train_fine
from training_helpers import PYTHONPATH, REPO, tiny_config


def test_export_bundle_loads_and_segments(prepared, tmp_path, capsys):
    data, cache, _ = prepared
    torch.set_num_threads(1)
    cfg = tiny_config(train={"epochs": 1, "iterations_per_epoch": 1, "batch_size": 1, "checkpoint_every_steps": 0})
    cfg["bundle"] = {"id": "phantom-test", "version": "0.0.2", "licence": "Apache-2.0", "description": "test",
                     "test_time_flips": {"sagittal_sinus": ["LR"]}}
    cfg["train"]["augmentation"]["modality_dropout_probability"] = 0.3
    work = tmp_path / "work"
    train_coarse(cfg, cache, work)
    train_fine(cfg, cache, work)

    out = tmp_path / "bundle"
    assert main(["export", "--workdir", str(work), "--out", str(out)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["id"] == "phantom-test" and manifest["structures"] == [t.key for t in FINE_TARGETS]
    assert manifest["spacing"] == [2.4, 2.4, 2.4] and manifest["networks"]["coarse"]["spacing"] == [4.8, 4.8, 4.8]
    assert ["t1", "t2"] in manifest["inputs"]["supported_subsets"]  # trained with modality dropout
    assert manifest["networks"]["fine"]["falx"]["options"]["inter_slice_axis"] == 2
    assert manifest["networks"]["fine"]["transverse_sinus"]["options"]["inter_slice_axis"] == 0
    # the recipe's test-time flips reach the one network they name
    assert manifest["networks"]["fine"]["sagittal_sinus"]["test_time_flips"] == ["LR"]
    assert not any("test_time_flips" in spec for key, spec in manifest["networks"]["fine"].items() if key != "sagittal_sinus")
    files = {f["path"]: f for f in manifest["files"]}
    assert {"coarse.safetensors", "MODEL_CARD.md"} <= set(files)
    for name, f in files.items():
        assert hashlib.sha256((out / name).read_bytes()).hexdigest() == f["sha256"]

    bundle = load_bundle(out)
    net = bundle.build_network("falx")
    from safetensors.torch import load_file

    ref = load_file(str(work / "fine" / "falx" / "final.safetensors"))
    for k, v in net.state_dict().items():
        assert torch.equal(v.cpu(), ref[k])

    # a second training folder of a target is exported beside it as an ensemble member; another
    # target's folder is refused
    import shutil

    other = tmp_path / "seed_b" / "sagittal_sinus"
    shutil.copytree(work / "fine" / "sagittal_sinus", other)
    both = tmp_path / "bundle_ensemble"
    assert main(["export", "--workdir", str(work), "--out", str(both), "--member", f"sagittal_sinus={other}"]) == 0
    spec = load_bundle(both).network_spec("sagittal_sinus")
    assert spec["ensemble"] == ["fine_sagittal_sinus_2.safetensors"]
    assert (both / "fine_sagittal_sinus_2.safetensors").read_bytes() == (both / "fine_sagittal_sinus.safetensors").read_bytes()
    assert main(["export", "--workdir", str(work), "--out", str(tmp_path / "bad"), "--member",
                 f"sagittal_sinus={work / 'fine' / 'falx'}"]) != 0
    assert "is not the network of" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()

    files_in = case_files(data, "001")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=PYTHONPATH)
    seg = subprocess.run([sys.executable, "-m", "brainbarriers", "segment", "--ct", str(files_in["ct"]),
                          "--t1", str(files_in["t1"]), "--t2", str(files_in["t2"]), "--output", str(tmp_path / "seg"),
                          "--model", str(out), "--device", "cpu", "--case", "p001"],
                         env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert seg.returncode == 0, seg.stderr[-2000:]
    labels = sitk.ReadImage(str(tmp_path / "seg" / "p001_labels.nii.gz"))
    assert labels.GetSize() == (64, 64, 64)
