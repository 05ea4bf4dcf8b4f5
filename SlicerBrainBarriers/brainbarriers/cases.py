"""One case from files to outputs, and batches of cases (ABCs folder layout or a CSV)."""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

from . import export
from .errors import BrainBarriersError, InputError
from .io import MAX_CASE_LENGTH, case_name, read_image
from .output_lock import case_lock
from .pipeline import Segmenter, output_labels_for
from .resources import check_memory
from .structures import MODALITIES

_IMAGE_EXT = (".mha", ".mhd", ".nii.gz", ".nii", ".nrrd", ".nhdr")


@dataclass
class CaseFiles:
    case: str
    inputs: dict[str, Path]


def check_case_name(case: str) -> str:
    """An explicit case name (--case, a CSV's case column), strictly: it becomes part of file names."""
    if not case or len(case) > MAX_CASE_LENGTH or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", case):
        raise InputError(
            f"case name {case!r} is not allowed: use letters, digits, '.', '_' or '-', start with a letter or digit, "
            f"at most {MAX_CASE_LENGTH} characters"
        )
    return case


def run_case(
    segmenter: Segmenter,
    inputs: dict[str, str | Path],
    out_dir: str | Path,
    case: str,
    overwrite: bool = False,
    overview: bool = False,
    challenge: bool = False,
    extra: dict | None = None,
) -> dict[str, str]:
    """Segment one case and write its outputs atomically; returns {kind: path}.

    The case's lock is held from the check for existing outputs to their rename, so a second run into
    the same folder and case stops with a clear message instead of mixing its files with this one's.
    ``extra``: more outputs as ``{kind: (path, writer(tmp_path, result, values, bundle))}`` (DICOM).
    """
    check_case_name(case)
    extra = extra or {}
    paths = {**export.output_paths(out_dir, case, overview, challenge, segmenter.options.uncertainty),
             **{k: p for k, (p, _) in extra.items()}}
    export.prepare_output_dir(out_dir, paths, overwrite)
    with case_lock(out_dir, case):
        export.prepare_output_dir(out_dir, paths, overwrite)  # again: another run may have finished meanwhile
        return _run_locked(segmenter, inputs, paths, case, overview, challenge, extra)


def _run_locked(segmenter: Segmenter, inputs: dict[str, str | Path], paths: dict[str, Path], case: str,
                overview: bool, challenge: bool, extra: dict) -> dict[str, str]:
    segmenter.bundle.used_modalities(list(inputs))  # refuse an unsupported subset before reading
    check_memory(inputs, segmenter.bundle)  # from the headers, before any voxel is read
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
        for kind, (_, write) in extra.items():
            write(out.temp[kind], result, values, segmenter.bundle)
        report = export.build_report(
            result, segmenter.bundle, {m: str(Path(p).resolve()) for m, p in inputs.items()}, case,
            segmenter.options.quality, values, segmenter.options.tile_overlap,
        )
        report["outputs"] = {k: str(p) for k, p in paths.items()}
        export.write_report(out.temp["report"], report)
        return out.commit()


def find_cases(source: str | Path, keys: tuple[str, ...] = MODALITIES,
               suffixes: dict[str, str] | None = None) -> list[CaseFiles]:
    """The cases of a batch or data set (the one case-discovery function of the CLI and training).

    ``source``: a CSV (columns ``case`` and ``keys``; relative paths from the CSV's folder), or a
    folder in the ABCs layout (``NNN/NNN_ct.mha``) or with ``<case>_<suffix><ext>`` files side by
    side. ``suffixes`` maps a key to its file-name suffix (default: the key itself, e.g. training's
    ``{"label": "labelmap_task1"}``). Case names from file or folder names are made safe
    (``io.case_name``); a CSV's names are the user's own and are checked strictly when a case runs.
    Keys without a file are left out of ``CaseFiles.inputs``.
    """
    source = Path(source).expanduser()
    if not source.exists():
        raise InputError(f"{source}: not found")
    suffix = {k: (suffixes or {}).get(k, k) for k in keys}
    if source.is_file():
        return _cases_from_csv(source, keys)
    pattern = re.compile(
        r"^(?P<case>.+?)_(?P<suffix>" + "|".join(re.escape(v) for v in suffix.values()) + r")(?P<ext>"
        + "|".join(re.escape(e) for e in _IMAGE_EXT) + r")$", re.IGNORECASE)
    by_suffix = {v.lower(): k for k, v in suffix.items()}
    found: dict[str, dict[str, Path]] = {}
    for path in sorted(list(source.glob("*")) + list(source.glob("*/*"))):
        m = pattern.match(path.name)
        if not m or not path.is_file():
            continue
        if path.parent != source and m["case"] != path.parent.name:
            continue  # ABCs layout: NNN/NNN_ct.mha
        found.setdefault(m["case"], {}).setdefault(by_suffix[m["suffix"].lower()], path)
    if not found:
        raise InputError(f"{source}: no case folders (NNN/NNN_ct.mha, NNN_t1.mha, NNN_t2.mha) or case files found")
    cases = [CaseFiles(case_name(name), inputs) for name, inputs in sorted(found.items())]
    names = [c.case for c in cases]
    clashes = sorted({n for n in names if names.count(n) > 1})
    if clashes:
        raise InputError(f"{source}: several cases would be named {', '.join(clashes)}; rename their files or use a CSV")
    return cases


def _cases_from_csv(source: Path, keys: tuple[str, ...]) -> list[CaseFiles]:
    try:
        with open(source, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"{source}: cannot read the CSV ({exc})") from None
    if not rows or "case" not in rows[0]:
        raise InputError(f"{source}: a CSV with a header 'case,{','.join(keys)}' is needed")
    cases: list[CaseFiles] = []
    for row in rows:
        inputs = {k: (source.parent / row[k].strip()) for k in keys if (row.get(k) or "").strip()}
        name = (row.get("case") or "").strip()
        if not name and inputs:
            name = case_name(next(iter(inputs.values())))
        cases.append(CaseFiles(name, inputs))
    return cases


def case_done(out_dir: str | Path, case: str) -> bool:
    """A case is finished when its report exists (outputs are renamed into place together)."""
    return export.output_paths(out_dir, case)["report"].exists()


def run_batch(segmenter: Segmenter, cases: list[CaseFiles], out_dir: str | Path, overwrite: bool = False,
              overview: bool = False, challenge: bool = False, log=None, extra=None) -> list[dict]:
    """Run every case; finished cases are skipped, a failing case does not stop the others.

    ``extra``: a function of a case giving ``run_case``'s extra outputs (DICOM exports).
    """
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
            run_case(segmenter, c.inputs, out_dir, c.case, overwrite, overview, challenge, extra(c) if extra else None)
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
