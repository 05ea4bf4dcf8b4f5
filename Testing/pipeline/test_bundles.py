"""Model bundles: write/load round trip, schema, SHA-256 checks, cache, import, CLI models commands."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import pytest
import torch
from brainbarriers.bundles import (
    cache_dir,
    import_bundle,
    list_models,
    load_bundle,
    manifest_schema,
    validate_manifest,
    write_bundle,
)
from brainbarriers.errors import BundleError, InputError
from brainbarriers.networks import build
from pipeline_helpers import assert_one_line_error, run_cli
from tiny_bundle import tiny_manifest, write_tiny_bundle


def test_round_trip_loads_the_same_weights(tmp_path):
    folder = write_tiny_bundle(tmp_path / "b", structures=["cerebellum", "falx"])
    bundle = load_bundle(folder)
    assert bundle.id == "tiny-test" and bundle.structures == ["cerebellum", "falx"]
    manifest = json.loads((folder / "manifest.json").read_text())
    assert {f["path"] for f in manifest["files"]} == {
        "coarse.safetensors", "fine_cerebellum.safetensors", "fine_falx.safetensors", "MODEL_CARD.md"}
    torch.manual_seed(0)  # write_tiny_bundle seeds 0 and builds coarse first
    expected = build("coarse-unet", 3, 7, **manifest["networks"]["coarse"]["options"]).state_dict()
    net = bundle.build_network("coarse")
    assert not net.training
    for k, v in net.state_dict().items():
        assert torch.equal(v, expected[k]), k
    falx = bundle.build_network("falx")
    assert falx.inter_slice_axis == 2


def test_the_same_weights_give_the_same_bytes(tmp_path):
    """Rebuilding a bundle from the same weights must reproduce its SHA-256s (release hashes), so the
    weight files may not depend on the order of an unordered map (safetensors' metadata)."""
    hashes = []
    for run in range(6):  # unordered metadata would match six times running with odds 1 in 32
        folder = write_tiny_bundle(tmp_path / f"b{run}", structures=["cerebellum", "falx"])
        manifest = json.loads((folder / "manifest.json").read_text())
        hashes.append({f["path"]: f["sha256"] for f in manifest["files"]})
    assert all(h == hashes[0] for h in hashes)


def test_schema_rejects_bad_manifests(tmp_path):
    good = tiny_manifest()
    good["files"] = []
    validate_manifest(good)
    for change, needle in [
        (lambda m: m.pop("licence"), "manifest: 'licence' is a required property"),
        (lambda m: m.update(spacing=[1.2, 1.2]), r"manifest\.spacing: \[1\.2, 1\.2\] is too short"),
        (lambda m: m["inputs"].update(modalities=["ct", "pet"]), r"manifest\.inputs\.modalities\[1\]: 'pet' is not one of"),
        (lambda m: m.update(structures=["cerebellum", "brainstem"]), r"manifest\.structures\[1\]: 'brainstem'"),
        (lambda m: m["networks"]["fine"].pop("falx"), "no network for structure 'falx'"),
        (lambda m: m.update(unknown=1), r"\('unknown' was unexpected\)"),
        (lambda m: m["networks"]["fine"]["falx"].update(margin=-1), r"manifest\.networks\.fine\.falx\.margin: -1 is less"),
        (lambda m: m["networks"]["coarse"].update(max_crop=[4, 64, 64]), r"networks\.coarse\.max_crop\[0\]: 4 is less"),
    ]:
        m = tiny_manifest()
        m["files"] = []
        change(m)
        with pytest.raises(BundleError, match=needle):
            validate_manifest(m)
    assert manifest_schema()["properties"]["schema_version"]["enum"] == [1]


def test_tampered_truncated_and_missing_files_are_refused(tmp_path):
    folder = write_tiny_bundle(tmp_path / "b", structures=["ventricles"])
    weights = folder / "fine_ventricles.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="SHA-256 mismatch"):
        load_bundle(folder)
    weights.write_bytes(bytes(data[:-10]))
    with pytest.raises(BundleError, match="truncated or modified"):
        load_bundle(folder)
    weights.unlink()
    with pytest.raises(BundleError, match="missing"):
        load_bundle(folder)


def test_weights_that_do_not_fit_the_network(tmp_path):
    m = tiny_manifest(structures=["cerebellum"])
    states = {"coarse.safetensors": build("coarse-unet", 3, 7, levels=3, base_width=4, max_width=8).state_dict(),
              "fine_cerebellum.safetensors": build("hmrnet-p", 3, 2, hr_width=4, mr_widths=[4, 4, 8, 8]).state_dict()}
    bundle = load_bundle(write_bundle(tmp_path / "b", m, states))
    with pytest.raises(BundleError, match="do not fit"):
        bundle.build_network("cerebellum")


def test_a_fine_network_with_ensemble_members_averages_them(tmp_path):
    from brainbarriers.networks.ensemble import MeanOfMembers
    from safetensors.torch import load_file

    folder = write_tiny_bundle(tmp_path / "b", structures=["sagittal_sinus", "falx"], ensembles={"sagittal_sinus": 3})
    bundle = load_bundle(folder)
    spec = bundle.network_spec("sagittal_sinus")
    assert spec["file"] == "fine_sagittal_sinus.safetensors"
    assert spec["ensemble"] == ["fine_sagittal_sinus_2.safetensors", "fine_sagittal_sinus_3.safetensors"]
    net = bundle.build_network("sagittal_sinus")
    assert isinstance(net, MeanOfMembers) and not net.training
    for member, name in zip(net.members, [spec["file"], *spec["ensemble"]]):
        stored = load_file(str(folder / name))
        assert all(torch.equal(v, stored[k]) for k, v in member.state_dict().items())
    assert not isinstance(bundle.build_network("falx"), MeanOfMembers)

    data = bytearray((folder / "fine_sagittal_sinus_3.safetensors").read_bytes())
    data[-1] ^= 1
    (folder / "fine_sagittal_sinus_3.safetensors").write_bytes(bytes(data))
    with pytest.raises(BundleError, match="SHA-256 mismatch for fine_sagittal_sinus_3.safetensors"):
        load_bundle(folder, verify=False).build_network("sagittal_sinus")

    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["networks"]["fine"]["sagittal_sinus"]["ensemble"].append("fine_elsewhere.safetensors")
    with pytest.raises(BundleError, match="file fine_elsewhere.safetensors is not listed in files"):
        validate_manifest(manifest)
    manifest["networks"]["fine"]["sagittal_sinus"]["ensemble"] = ["fine_sagittal_sinus.safetensors"]
    with pytest.raises(BundleError, match="ensemble repeats its file"):
        validate_manifest(manifest)
    with pytest.raises(ValueError, match="at least two networks"):
        tiny_manifest(ensembles={"falx": 1})


def test_supported_subsets(tmp_path):
    folder = write_tiny_bundle(tmp_path / "b", structures=["cerebellum"],
                               subsets=[("ct", "t1", "t2"), ("t1", "t2"), ("t1",)])
    b = load_bundle(folder)
    assert b.used_modalities(["t1", "t2"]) == ["t1", "t2"]
    with pytest.raises(InputError, match="accepts: ct\\+t1\\+t2, t1\\+t2, t1"):
        b.used_modalities(["ct", "t2"])


def test_cache_override_install_and_lookup_by_id(tmp_path):
    assert cache_dir() == tmp_path / "cache"
    src = write_tiny_bundle(tmp_path / "src", model_id="tiny-zip", structures=["cerebellum"])
    zpath = tmp_path / "tiny.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        for f in src.iterdir():
            zf.write(f, f"tiny-zip/{f.name}")
    folder = import_bundle(zpath)
    assert folder == tmp_path / "cache" / "models" / "tiny-zip-0.0.1"
    assert load_bundle("tiny-zip").path == folder
    assert load_bundle("tiny-zip@0.0.1").path == folder
    assert any(r["id"] == "tiny-zip" and r["installed"] for r in list_models())
    # the shipped index lists the demo model
    assert any(r["id"] == "brainbarriers-demo" for r in list_models())
    with pytest.raises(BundleError, match="not installed|neither"):
        load_bundle("no-such-model")


def test_import_refuses_tampered_zip_and_zip_slip(tmp_path):
    src = write_tiny_bundle(tmp_path / "src", model_id="tiny-bad", structures=["cerebellum"])
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(bad, "w") as zf:
        for f in src.iterdir():
            data = f.read_bytes()
            if f.name == "coarse.safetensors":
                data = data[:-1] + bytes([data[-1] ^ 1])
            zf.writestr(f.name, data)
    with pytest.raises(BundleError, match="SHA-256 mismatch"):
        import_bundle(bad)
    assert not (tmp_path / "cache" / "models" / "tiny-bad-0.0.1").exists()
    slip = tmp_path / "slip.zip"
    with zipfile.ZipFile(slip, "w") as zf:
        zf.writestr("../evil.txt", "x")
    with pytest.raises(BundleError, match="outside"):
        import_bundle(slip)
    assert not (tmp_path / "cache" / "evil.txt").exists()


def test_cli_models_commands(tmp_path):
    src = write_tiny_bundle(tmp_path / "src", model_id="tiny-cli", structures=["cerebellum"])
    env = {"BRAINBARRIERS_CACHE": str(tmp_path / "cache")}
    proc = run_cli("models", "import", str(src), env=env)
    assert proc.returncode == 0, proc.stderr
    proc = run_cli("models", "path", "tiny-cli", env=env)
    assert proc.stdout.strip() == str(tmp_path / "cache" / "models" / "tiny-cli-0.0.1")
    proc = run_cli("models", "list", env=env)
    assert "tiny-cli@0.0.1" in proc.stdout and "brainbarriers-demo@" in proc.stdout
    proc = run_cli("models", "verify", "tiny-cli", env=env)
    assert proc.returncode == 0 and "OK" in proc.stdout
    installed = tmp_path / "cache" / "models" / "tiny-cli-0.0.1" / "fine_cerebellum.safetensors"
    installed.write_bytes(installed.read_bytes()[:-4] + b"\0\0\0\0")
    assert_one_line_error(run_cli("models", "verify", "tiny-cli", env=env), "SHA-256 mismatch")
    shutil.rmtree(src)


def test_the_models_index_names_the_version_of_each_shipped_bundle():
    """`models list` pairs index entries with installed bundles by version: a stale index entry would
    list the shipped demo model twice, once as not installed."""
    from brainbarriers.bundles.index import load_index

    models = Path(__file__).resolve().parents[2] / "SlicerBrainBarriers/brainbarriers/models"
    shipped = [e for e in load_index() if e.get("shipped")]
    assert shipped
    for entry in shipped:
        manifest = json.loads((models / entry["id"] / "manifest.json").read_text())
        assert manifest["version"] == entry["version"], entry["id"]
