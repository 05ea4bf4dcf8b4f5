"""One case from files to outputs, and batches of cases (ABCs folder layout or a CSV)."""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

from . import export
from .errors import BrainBarriersError, InputError
from .io import read_image
from .pipeline import Segmenter, output_labels_for
from .structures import MODALITIES

_IMAGE_EXT = (".mha", ".mhd", ".nii.gz", ".nii", ".nrrd", ".nhdr")


@dataclass
class CaseFiles:
    case: str
    inputs: dict[str, Path]


def check_case_name(case: str) -> str:
    if not case or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", case):
        raise InputError(f"case name {case!r} must be letters, digits, '.', '_' or '-'")
    return case


def run_case(
    segmenter: Segmenter,
    inputs: dict[str, str | Path],
    out_dir: str | Path,
    case: str,
    overwrite: bool = False,
    overview: bool = False,
    challenge: bool = False,
) -> dict[str, str]:
    """Segment one case and write its outputs atomically; returns {kind: path}."""
    check_case_name(case)
    paths = export.output_paths(out_dir, case, overview, challenge, segmenter.options.uncertainty)
    export.prepare_output_dir(out_dir, paths, overwrite)
    segmenter.bundle.used_modalities(list(inputs))  # refuse an unsupported subset before reading
    segmenter.progress("load", 0.01, "reading the input images")
    images = {m: read_image(p, m) for m, p in inputs.items()}
    result = segmenter.run(images)
    segmenter.progress("export", 0.95, "writing the outputs")
    values = output_labels_for(result.targets)
    with export.AtomicOutputs(paths) as out:
        export.write_seg_nrrd(out.temp["seg"], result.labels, values)
        export.write_labels(out.temp["labels"], result.labels)
        if challenge:
            export.write_labels(out.temp["challenge"], result.labels, compress=False)
        if overview:
            export.write_overview(out.temp["overview"], images[result.reference], result.labels)
        if result.quality.uncertainty is not None:
            export.write_uncertainty(out.temp["uncertainty"], result.quality.uncertainty)
        report = export.build_report(
            result, segmenter.bundle, {m: str(Path(p).resolve()) for m, p in inputs.items()}, case,
            segmenter.options.quality, values,
        )
        report["outputs"] = {k: str(p) for k, p in paths.items()}
        export.write_report(out.temp["report"], report)
        return out.commit()


def find_cases(source: str | Path) -> list[CaseFiles]:
    """Cases of a batch: an ABCs-layout folder (NNN/NNN_ct.mha ...) or a CSV (case,ct,t1,t2[,label])."""
    source = Path(source).expanduser()
    if not source.exists():
        raise InputError(f"{source}: not found")
    cases: list[CaseFiles] = []
    if source.is_file():
        try:
            with open(source, newline="", encoding="utf-8") as f:
                rows = list(csv.DictReader(f))
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            raise InputError(f"{source}: cannot read the CSV ({exc})") from None
        if not rows or "case" not in rows[0]:
            raise InputError(f"{source}: a CSV with a header 'case,ct,t1,t2' is needed")
        for row in rows:
            inputs = {m: (source.parent / row[m].strip()) for m in MODALITIES if (row.get(m) or "").strip()}
            cases.append(CaseFiles(row["case"].strip(), inputs))
        return cases
    for folder in sorted(p for p in source.iterdir() if p.is_dir()):
        inputs = {}
        for m in MODALITIES:
            for ext in _IMAGE_EXT:
                candidate = folder / f"{folder.name}_{m}{ext}"
                if candidate.exists():
                    inputs[m] = candidate
                    break
        if inputs:
            cases.append(CaseFiles(folder.name, inputs))
    if not cases:
        raise InputError(f"{source}: no case folders (NNN/NNN_ct.mha, NNN_t1.mha, NNN_t2.mha) found")
    return cases


def case_done(out_dir: str | Path, case: str) -> bool:
    """A case is finished when its report exists (outputs are renamed into place together)."""
    return export.output_paths(out_dir, case)["report"].exists()


def run_batch(segmenter: Segmenter, cases: list[CaseFiles], out_dir: str | Path, overwrite: bool = False,
              overview: bool = False, challenge: bool = False, log=None) -> list[dict]:
    """Run every case; finished cases are skipped, a failing case does not stop the others."""
    import time

    rows = []
    for n, c in enumerate(cases):
        if not overwrite and case_done(out_dir, c.case):
            rows.append({"case": c.case, "status": "skipped", "seconds": 0.0, "message": "already done"})
            continue
        t0 = time.perf_counter()
        if log:
            log(f"[{n + 1}/{len(cases)}] {c.case}")
        try:
            run_case(segmenter, c.inputs, out_dir, c.case, overwrite, overview, challenge)
            rows.append({"case": c.case, "status": "ok", "seconds": round(time.perf_counter() - t0, 1), "message": ""})
        except BrainBarriersError as exc:
            if getattr(exc, "exit_code", 0) in (130, 143):
                raise
            rows.append({"case": c.case, "status": "failed", "seconds": round(time.perf_counter() - t0, 1), "message": str(exc)})
        except Exception as exc:  # noqa: BLE001 - one broken case must not stop the batch
            rows.append({"case": c.case, "status": "failed", "seconds": round(time.perf_counter() - t0, 1),
                         "message": f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"})
    return rows


def summary_table(rows: list[dict]) -> str:
    """A plain-text table of a batch's results."""
    width = max([len("case")] + [len(r["case"]) for r in rows])
    lines = [f"{'case'.ljust(width)}  status   seconds  message"]
    for r in rows:
        lines.append(f"{r['case'].ljust(width)}  {r['status'].ljust(7)}  {r['seconds']:7.1f}  {r['message']}")
    ok = sum(r["status"] == "ok" for r in rows)
    skipped = sum(r["status"] == "skipped" for r in rows)
    failed = sum(r["status"] == "failed" for r in rows)
    lines.append(f"{ok} done, {skipped} skipped, {failed} failed")
    return "\n".join(lines)
