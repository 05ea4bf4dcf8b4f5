"""scripts/reissue_bundle.py: a new model card and version for the same weights, byte for byte."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from brainbarriers.bundles import load_bundle

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "SlicerBrainBarriers/brainbarriers/models/brainbarriers-demo"


def _reissue(*args: str, bundle: Path = DEMO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "scripts/reissue_bundle.py"), str(bundle), *args],
                          capture_output=True, text=True, timeout=120)


def _assert_refused(tmp_path: Path, card: Path, option: str, item: str, words: str) -> None:
    """One line naming the problem, exit 2, no bundle folder."""
    bad = _reissue("--version", "9.9.99", "--model-card", str(card), "--out", str(tmp_path / "bad"), option, item)
    assert bad.returncode == 2 and words in bad.stderr and bad.stderr.count("\n") == 1, bad.stderr
    assert not (tmp_path / "bad").exists()


def test_the_weights_travel_unchanged_and_the_card_and_version_are_new(tmp_path):
    card = tmp_path / "card.md"
    card.write_text("# brainbarriers-demo 9.9.9: model card\n\nRe-measured.\n", encoding="utf-8")
    out = tmp_path / "bundle"
    run = _reissue("--version", "9.9.9", "--model-card", str(card), "--out", str(out))
    assert run.returncode == 0, run.stderr
    old = {e["path"]: e["sha256"] for e in json.loads((DEMO / "manifest.json").read_text())["files"]}
    bundle = load_bundle(out)  # verifies every file against the new manifest
    new = {e["path"]: e["sha256"] for e in bundle.manifest["files"]}
    assert set(new) == set(old)
    assert all(new[p] == old[p] for p in old if p.endswith(".safetensors") or p == "LICENSE")
    assert new["MODEL_CARD.md"] != old["MODEL_CARD.md"] and (out / "MODEL_CARD.md").read_text() == card.read_text()
    assert bundle.version == "9.9.9" and "9.9.9" in bundle.manifest["description"]

    again = _reissue("--version", "9.9.9", "--model-card", str(card), "--out", str(out))
    assert again.returncode == 2 and "exists" in again.stderr and not again.stdout


def test_a_named_network_is_replaced_and_every_other_kept(tmp_path):
    card = tmp_path / "card.md"
    card.write_text("# brainbarriers-demo 9.9.10: model card\n", encoding="utf-8")
    old = {e["path"]: e["sha256"] for e in json.loads((DEMO / "manifest.json").read_text())["files"]}
    # the ventricle network has the cerebellum network's tensors (both HMRNet-p of the same widths)
    out = tmp_path / "bundle"
    run = _reissue("--version", "9.9.10", "--model-card", str(card), "--out", str(out),
                   "--replace", f"fine_cerebellum.safetensors={DEMO / 'fine_ventricles.safetensors'}")
    assert run.returncode == 0, run.stderr
    assert "1 replaced" in run.stdout
    new = {e["path"]: e["sha256"] for e in load_bundle(out).manifest["files"]}
    assert new["fine_cerebellum.safetensors"] == old["fine_ventricles.safetensors"]
    assert all(new[p] == old[p] for p in old if p.endswith(".safetensors") and p != "fine_cerebellum.safetensors")

    for replace, words in [(f"fine_cerebellum.safetensors={DEMO / 'fine_falx.safetensors'}", "names or shapes differ"),
                           (f"cerebellum={DEMO / 'fine_ventricles.safetensors'}", "expected NAME=FILE")]:
        _assert_refused(tmp_path, card, "--replace", replace, words)


def test_a_fine_networks_test_time_flips_are_set_and_cleared(tmp_path):
    card = tmp_path / "card.md"
    card.write_text("# brainbarriers-demo 9.9.12: model card\n", encoding="utf-8")
    old = {e["path"]: e["sha256"] for e in json.loads((DEMO / "manifest.json").read_text())["files"]}
    out = tmp_path / "bundle"
    run = _reissue("--version", "9.9.12", "--model-card", str(card), "--out", str(out),
                   "--test-time-flips", "sagittal_sinus=LR")
    assert run.returncode == 0, run.stderr
    bundle = load_bundle(out)
    assert bundle.network_spec("sagittal_sinus")["test_time_flips"] == ["LR"]
    assert "test_time_flips" not in bundle.network_spec("falx")
    new = {e["path"]: e["sha256"] for e in bundle.manifest["files"]}
    assert all(new[p] == old[p] for p in old if p.endswith(".safetensors"))

    cleared = tmp_path / "cleared"
    run = _reissue("--version", "9.9.13", "--model-card", str(card), "--out", str(cleared),
                   "--test-time-flips", "sagittal_sinus=", bundle=out)
    assert run.returncode == 0, run.stderr
    assert "test_time_flips" not in load_bundle(cleared).network_spec("sagittal_sinus")

    for item, words in [("sagittal_sinus=AP", "is not one of ['LR']"), ("sinus=LR", "expected STRUCTURE=AXES")]:
        _assert_refused(tmp_path, card, "--test-time-flips", item, words)


def test_another_network_of_a_target_is_added_as_an_ensemble_member(tmp_path):
    from brainbarriers.networks.ensemble import MeanOfMembers

    card = tmp_path / "card.md"
    card.write_text("# brainbarriers-demo 9.9.15: model card\n", encoding="utf-8")
    old = {e["path"]: e["sha256"] for e in json.loads((DEMO / "manifest.json").read_text())["files"]}
    out = tmp_path / "bundle"
    # the falx network has the sagittal sinus network's tensors (both HMRNet-s, thin left-right, same widths)
    run = _reissue("--version", "9.9.15", "--model-card", str(card), "--out", str(out),
                   "--add-member", f"sagittal_sinus={DEMO / 'fine_falx.safetensors'}")
    assert run.returncode == 0, run.stderr
    assert "1 member(s) added" in run.stdout
    bundle = load_bundle(out)
    assert bundle.network_spec("sagittal_sinus")["ensemble"] == ["fine_sagittal_sinus_2.safetensors"]
    new = {e["path"]: e["sha256"] for e in bundle.manifest["files"]}
    assert new["fine_sagittal_sinus_2.safetensors"] == old["fine_falx.safetensors"]
    assert all(new[p] == old[p] for p in old if p.endswith(".safetensors"))
    assert isinstance(bundle.build_network("sagittal_sinus"), MeanOfMembers)

    for item, words in [(f"sagittal_sinus={DEMO / 'fine_ventricles.safetensors'}", "names or shapes differ"),
                        (f"sinus={DEMO / 'fine_falx.safetensors'}", "expected STRUCTURE=FILE")]:
        _assert_refused(tmp_path, card, "--add-member", item, words)
