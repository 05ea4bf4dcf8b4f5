"""Per-structure training volumes in the exported manifest (the quality flag 'volume' reads them)."""

import json

import numpy as np
import SimpleITK as sitk
from brainbarriers.bundles.cache import SHIPPED_DIR
from brainbarriers.bundles.schema import schema_errors
from brainbarriers.quality import volume_statistics
from brainbarriers.structures import OUTPUT_LABELS
from brainbarriers_training.export import training_volume_stats
from brainbarriers_training.phantom import case_files


def test_volume_stats_match_the_label_files(prepared):
    data, cache, index = prepared
    stats = training_volume_stats(cache)
    cases = [e["case"] for e in index["cases"]]
    # the smoke spacing (2.4 mm) is the phantoms' own: volumes must equal those of the label files
    volumes = {lab.key: [] for lab in OUTPUT_LABELS}
    for case in cases:
        label = sitk.ReadImage(str(case_files(data, case)["label"]))
        arr, ml = sitk.GetArrayFromImage(label), np.prod(label.GetSpacing()) / 1000.0
        for lab in OUTPUT_LABELS:
            volumes[lab.key].append(float((arr == lab.value).sum() * ml))
    assert set(stats) == {lab.key for lab in OUTPUT_LABELS}
    for key, v in volumes.items():
        assert stats[key]["cases"] == len(cases)
        assert np.isclose(stats[key]["min_ml"], min(v), rtol=1e-3) and np.isclose(stats[key]["max_ml"], max(v), rtol=1e-3)
        assert stats[key]["min_ml"] <= stats[key]["mean_ml"] <= stats[key]["max_ml"]
    one = training_volume_stats(cache, cases[:1])
    assert all(s["cases"] == 1 and s["min_ml"] == s["max_ml"] for s in one.values())


def test_volume_stats_fit_the_manifest_schema():
    stats = volume_statistics({"falx": [10.0, 12.0, 0.0], "ventricles": []})  # empty labels are not counted
    assert stats == {"falx": {"cases": 2, "min_ml": 10.0, "max_ml": 12.0, "mean_ml": 11.0, "std_ml": 1.0}}
    shipped = json.loads((SHIPPED_DIR / "brainbarriers-demo" / "manifest.json").read_text())
    assert schema_errors({**shipped, "volume_stats": stats}) == []
    broken = schema_errors({**shipped, "volume_stats": {"falx": {"cases": 2, "min_ml": 10.0}}})
    assert broken and "max_ml" in broken[0]


def test_field_of_view_from_the_prepared_images(prepared):
    from brainbarriers.quality import extent_below_head_top
    from brainbarriers_training.export import training_field_of_view, training_statistics

    data, cache, index = prepared
    fov = training_field_of_view(cache)["below_head_top_mm"]
    extents = []
    for entry in index["cases"]:
        with np.load(cache / entry["file"]) as z:
            extents.append(extent_below_head_top(z["image"], tuple(index["spacing"])))
    assert fov["cases"] == len(index["cases"]) and fov["min"] == round(min(extents), 1) and fov["max"] == round(max(extents), 1)
    assert 0 < fov["min"] <= fov["max"] <= index["cases"][0]["shape"][0] * index["spacing"][2]  # K runs along z
    shipped = json.loads((SHIPPED_DIR / "brainbarriers-demo" / "manifest.json").read_text())
    assert schema_errors({**shipped, **training_statistics(cache)}) == []
    assert schema_errors({**shipped, "field_of_view": {"below_head_top_mm": {"cases": 1, "min": 1.0}}})
