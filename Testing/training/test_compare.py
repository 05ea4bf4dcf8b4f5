"""compare: the Table VI layout, paired t-tests against the reference, CSV / Markdown / figure."""

import csv
import math

import numpy as np
import pytest
from brainbarriers.structures import OUTPUT_LABELS
from brainbarriers_training.compare import (
    case_averages,
    paired_p,
    read_metrics,
    table_vi,
    write_compare,
    write_figure,
)
from scipy import stats

KEYS = [lab.key for lab in OUTPUT_LABELS]


def _rows(offset: float, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    rows = []
    for c in range(6):
        for k in KEYS:
            rows.append({"case": f"c{c}", "structure": k, "dice": 0.8 + offset + 0.02 * rng.standard_normal(),
                         "assd": 0.6 - offset + 0.05 * rng.standard_normal()})
    return rows


def test_paired_t_test_by_hand():
    a = {"x": 0.80, "y": 0.85, "z": 0.90, "w": 0.70}
    b = {"x": 0.78, "y": 0.80, "z": 0.86, "w": 0.71, "only_b": 0.1}
    d = np.array([a[c] - b[c] for c in ("w", "x", "y", "z")])
    t = d.mean() / (d.std(ddof=1) / math.sqrt(d.size))
    assert paired_p(a, b) == pytest.approx(2 * stats.t.sf(abs(t), d.size - 1))
    assert math.isnan(paired_p({"x": 1.0}, {"x": 0.5}))


def test_table_lists_every_network_with_mean_std_and_p(tmp_path):
    results = {"hmrnet": _rows(0.05, 0), "unet3d": _rows(0.0, 1), "hmedn": _rows(0.02, 2)}
    rows = table_vi(results, reference="hmrnet")
    assert [r["network"] for r in rows] == ["hmrnet", "unet3d", "hmedn"]
    ref = [r for r in results["unet3d"] if r["structure"] == KEYS[0]]
    mean, std = rows[1][f"{KEYS[0]}_dice"]
    assert mean == pytest.approx(np.mean([r["dice"] for r in ref]))
    assert std == pytest.approx(np.std([r["dice"] for r in ref], ddof=1))
    avg = case_averages(results["unet3d"], "dice")
    assert rows[1]["average_dice"][0] == pytest.approx(np.mean(list(avg.values())))
    assert math.isnan(rows[0]["p_dice"]) and rows[1]["p_dice"] < 0.05
    md = write_compare(rows, tmp_path)
    assert md.count("\n") == 2 + 3 and "| unet3d |" in md
    with open(tmp_path / "compare.csv") as fh:
        table = list(csv.DictReader(fh))
    assert [r["network"] for r in table] == ["hmrnet", "unet3d", "hmedn"]
    assert float(table[1]["average_dice_mean"]) == pytest.approx(rows[1]["average_dice"][0], rel=1e-5)
    write_figure(results, tmp_path / "compare.png")
    # evaluate's metrics.csv reads back into the same table
    path = tmp_path / "metrics.csv"
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["case", "structure", "dice", "assd"])
        w.writeheader()
        w.writerows({k: r[k] for k in ("case", "structure", "dice", "assd")} for r in results["unet3d"])
    again = table_vi({"unet3d": read_metrics(path)}, reference=None)[0]
    assert again["average_dice"][0] == pytest.approx(rows[1]["average_dice"][0])
    assert (tmp_path / "compare.png").stat().st_size > 1000


TINY_ZOO = {  # tiny widths so that a phantom run takes seconds (the defaults are the papers')
    "unet3d": {"widths": [4, 8, 8]},
    "res-unet3d": {"widths": [4, 8, 8]},
    "unet3d-cse": {"widths": [4, 8, 8]},
    "unet3d-sse": {"widths": [4, 8, 8]},
    "unet3d-scse": {"widths": [4, 8, 8]},
    "sepnet3d": {"widths": [4, 8, 8]},
    "focusnet": {"widths": [4, 8, 8], "sos_width": 4, "roi_size": [8, 8, 8]},
    "focusnetv2": {"widths": [4, 8, 8], "sos_width": 4, "roi_size": [8, 8, 8]},
    "hnf-netv2": {"base_width": 4, "widths": [4, 4, 8, 8], "bases": 4},
    "hmedn": {"widths": [4, 4, 8], "hr_width": 4},
}


def _run_compare(prepared, tmp_path, networks):
    from brainbarriers.structures import targets_for_labels
    from brainbarriers_training.compare import compare
    from training_helpers import tiny_config

    _, cache, _ = prepared
    return compare(tiny_config(), cache, tmp_path, networks, folds=2, options=TINY_ZOO,
                   targets=targets_for_labels(["ventricles"]))


def test_compare_same_folds_table_and_resume(prepared, tmp_path):
    import json

    md = _run_compare(prepared, tmp_path, ["hmrnet", "hmedn"])
    assert "| hmrnet |" in md and "| hmedn |" in md
    folds = [json.loads((tmp_path / n / "folds.json").read_text()) for n in ("hmrnet", "hmedn")]
    assert folds[0] == folds[1]
    spec = json.loads((tmp_path / "hmedn" / "fold_0" / "bundle" / "manifest.json").read_text())
    assert "hmedn" in json.dumps(spec) and (tmp_path / "compare.csv").exists()
    assert (tmp_path / "compare.png").exists()
    stamp = (tmp_path / "hmedn" / "evaluation" / "metrics.csv").stat().st_mtime_ns
    _run_compare(prepared, tmp_path, ["hmrnet", "hmedn"])  # resumed: nothing is trained again
    assert (tmp_path / "hmedn" / "evaluation" / "metrics.csv").stat().st_mtime_ns == stamp


@pytest.mark.long
def test_compare_lists_every_network(prepared, tmp_path):
    from brainbarriers.networks import ZOO

    md = _run_compare(prepared, tmp_path, ["hmrnet", *ZOO])
    for name in ("hmrnet", *ZOO):
        assert f"| {name} |" in md


def test_compare_command_line_errors(tmp_path, capsys):
    from brainbarriers_training.cli import main

    assert main(["compare", "--config", "smoke", "--networks", "hmrnet", "--out", str(tmp_path)]) == 2
    assert "needs --cache" in capsys.readouterr().err
    (tmp_path / "cache").mkdir()
    code = main(["compare", "--config", "smoke", "--networks", "hmrnet,unet4d", "--cache", str(tmp_path / "cache"),
                 "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and "unknown network 'unet4d'" in err and len(err.strip().splitlines()) == 1
