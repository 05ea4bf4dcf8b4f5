"""Plain data the panel shows: structures, stages, models list, devices."""

from __future__ import annotations

import json

from brainbarriers.structures import OUTPUT_LABELS
from SlicerBrainBarriersLib import devices, models, panel
from SlicerBrainBarriersLib.process import ProgressEvent


def test_structures_come_from_the_table():
    assert panel.structure_items() == [(lab.key, lab.name, lab.color) for lab in OUTPUT_LABELS]


def test_stage_text_and_percent():
    e = ProgressEvent("fine", 0.734, "Ventricles (34x38x33 voxels)")
    assert panel.stage_text(e) == "Segmenting structures (fine networks): Ventricles (34x38x33 voxels)"
    assert panel.progress_percent(e) == 73
    assert panel.progress_percent(ProgressEvent("x", 1.7)) == 100
    assert panel.progress_percent(ProgressEvent("log")) is None
    assert panel.stage_text(ProgressEvent("new_stage")) == "New stage"


def test_models_list_installed_and_index(tmp_path):
    folder = tmp_path / "demo"
    folder.mkdir()
    (folder / "manifest.json").write_text(json.dumps({
        "id": "brainbarriers-demo", "version": "0.1.0", "description": "demo",
        "inputs": {"modalities": ["ct", "t1", "t2"], "supported_subsets": [["ct", "t1", "t2"], ["t1", "t2"]]},
        "files": [{"path": "a", "size": 3 * 2**20}, {"path": "b", "size": 2**20}],
        "timings": {"cpu_s": 95.0, "gpu_s": None},
    }))
    rows = [
        {"id": "big", "version": "1.0.0", "installed": None, "size": 3 * 2**30, "inputs": {"modalities": ["t1"]},
         "timings": {"cpu_s": 600, "gpu_s": 40}, "description": "full model"},
        {"id": "brainbarriers-demo", "version": "0.1.0", "installed": str(folder), "timings": {"cpu_s": None, "gpu_s": 12}},
    ]
    demo, big = models.list_models(rows)
    assert demo.downloaded and demo.reference == str(folder)
    assert demo.label() == "brainbarriers-demo 0.1.0 (CT+T1+T2, 4.0 MB)"
    assert "works with CT+T1+T2; T1+T2" in demo.details()
    assert "CPU 95 s, GPU 12 s" in demo.details()  # manifest's CPU time, index's GPU time
    assert not big.downloaded and big.reference == "big@1.0.0"
    assert big.label() == "big 1.0.0 (T1, 3.00 GB, not downloaded)"
    assert "CPU 10.0 min, GPU 40 s" in big.details()


def test_shipped_models_list_reads_the_core_index():
    entries = models.list_models()
    assert any(e.id == models.DEFAULT_MODEL for e in entries)


class _FakeCudaTorch:
    class cuda:  # noqa: N801
        @staticmethod
        def is_available():
            return True

        @staticmethod
        def get_device_properties(i):
            return type("P", (), {"name": "NVIDIA H100", "total_memory": 80 * 2**30})()

    class backends:  # noqa: N801
        mps = None


def test_device_choices():
    choices = devices.device_choices(_FakeCudaTorch)
    assert [c.value for c in choices] == ["auto", "cpu", "cuda", "mps"]
    assert choices[0].label == "Auto (CUDA)"
    assert choices[2].label == "CUDA (NVIDIA H100, 80 GB)" and choices[2].available
    assert not choices[3].available
    here = devices.device_choices()  # this machine, whatever it has
    assert here[1].value == "cpu" and here[1].available
