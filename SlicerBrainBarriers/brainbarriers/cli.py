"""The ``brainbarriers`` command line: segment, segment-batch, models list|download|import|verify|path.

Errors a user can cause print one line (``brainbarriers: error: ...``) and exit non-zero, without
a traceback; SIGINT/SIGTERM cancel cleanly with exit code 130/143 and no partial outputs.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path

from . import __version__
from .errors import BrainBarriersError, Cancelled, InputError

DEFAULT_MODEL = "brainbarriers-demo"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line instead of usage + message
        self.exit(2, f"brainbarriers: error: {message} (see --help)\n")


def _add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--output", "-o", required=True, help="output folder")
    p.add_argument("--model", default=DEFAULT_MODEL, help="installed model id (id@version) or a bundle folder")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    p.add_argument("--structures", nargs="+", metavar="KEY",
                   help="output labels or fine targets (cerebellum falx sinuses tentorium ventricles ...)")
    p.add_argument("--quality", default="fast", choices=["fast", "full"], help="full adds flip test-time augmentation")
    p.add_argument("--register", action="store_true", help="rigidly co-register MR inputs to the reference")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.add_argument("--progress", choices=["bar", "json", "none"], default="bar", help="json: one JSON object per line")
    p.add_argument("--overview", action="store_true", help="also write <case>_overview.png")
    p.add_argument("--challenge-format", action="store_true", help="also write <case>_task1.mha (uncompressed UCHAR)")
    p.add_argument("--uncertainty", action="store_true",
                   help="also write <case>_uncertainty.nii.gz (per-voxel entropy of the structure probabilities, bits)")
    p.add_argument("--no-cleanup", action="store_true",
                   help="keep every connected component and skip the anatomical rules (nothing outside the head, "
                        "the falx above the ventricles, the superior sagittal sinus joined into one vessel)")
    p.add_argument("--no-atlas", action="store_true",
                   help="with the neck in view, do not keep the structures' boxes near those of the registered atlas head")
    p.add_argument("--no-alignment-check", action="store_true", help="do not refuse inputs that look misaligned")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"], help="inference precision")
    p.add_argument("--threads", type=int, help="CPU threads for torch")
    p.add_argument("--tile-overlap", type=float, default=0.25, metavar="FRACTION",
                   help="share of a tile repeated by its neighbour where a crop exceeds the network's window "
                        "(default %(default)s; more costs more forwards)")
    p.add_argument("--debug", action="store_true", help="show tracebacks of internal errors")
    p.add_argument("--dicom-seg", action="store_true", help="also write <case>_seg.dcm (DICOM SEG; DICOM reference input)")
    p.add_argument("--rtstruct", action="store_true", help="also write <case>_rtstruct.dcm (DICOM RTSTRUCT; DICOM reference input)")


def _dicom_extra(args, inputs: dict, case: str) -> dict:
    """The DICOM outputs asked for (checked before any segmentation); {} without the flags."""
    if not (args.dicom_seg or args.rtstruct):
        return {}
    from .dicom.outputs import dicom_outputs

    return dicom_outputs(inputs, args.output, case, args.dicom_seg, args.rtstruct)


def _add_serve_parser(sub) -> None:
    serve = sub.add_parser("serve", help="run the auto-contouring DICOM storage node (README: DICOM)")
    serve.add_argument("--config", required=True, help="node configuration (JSON)")
    serve.add_argument("--list", action="store_true", help="list the work folder's studies and their status, then exit")
    serve.add_argument("--debug", action="store_true", help="show tracebacks of internal errors")
    serve.set_defaults(func=cmd_serve)


def cmd_serve(args, progress) -> int:
    from .dicom.outputs import require_libraries

    require_libraries("pydicom", "highdicom", "pynetdicom")
    from .dicom import node
    from .dicom.config import load_config

    config = load_config(args.config)
    if args.list:
        print(node.study_table(config))
        return 0
    node.setup_logging(config)
    try:
        node.serve(config)
    except Cancelled:
        print("brainbarriers: node stopped; unfinished studies go on at the next start", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="brainbarriers", description="HMRNet segmentation of the brain barriers from CT, T1, T2.")
    parser.add_argument("--version", action="version", version=f"brainbarriers {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    seg = sub.add_parser("segment", help="segment one case")
    seg.add_argument("--ct", help="CT (NIfTI, NRRD, MHA or a DICOM folder)")
    seg.add_argument("--t1", help="contrast T1")
    seg.add_argument("--t2", help="T2 (FLAIR)")
    seg.add_argument("--case", help="case name of the outputs (default: the reference input's file stem)")
    _add_run_options(seg)
    seg.set_defaults(func=cmd_segment)

    batch = sub.add_parser("segment-batch", help="segment a folder (ABCs layout) or a CSV of cases; resumable")
    batch.add_argument("--input", "-i", required=True, help="folder NNN/NNN_ct.mha,... or CSV case,ct,t1,t2")
    _add_run_options(batch)
    batch.set_defaults(func=cmd_batch)

    col = sub.add_parser("collect", help="save a reviewed case into a site data folder for fine-tuning (training layout)")
    col.add_argument("--seg", required=True, help="the reviewed segmentation (.seg.nrrd)")
    col.add_argument("--ct", help="CT of the case")
    col.add_argument("--t1", help="contrast T1 of the case")
    col.add_argument("--t2", help="T2 (FLAIR) of the case")
    col.add_argument("--out", required=True, help="site data folder (NNN/NNN_ct.mha ... NNN_labelmap_task1.mha)")
    col.add_argument("--case", help="case id (default: the next free three-digit id)")
    col.add_argument("--report", help="the run's report JSON (default: <result>_report.json beside --seg)")
    col.add_argument("--model-id", help="model that made the first contours (default: from the report)")
    col.add_argument("--model-version")
    col.add_argument("--model-sha256")
    col.add_argument("--overwrite", action="store_true", help="replace an existing case")
    col.add_argument("--debug", action="store_true", help="show tracebacks of internal errors")
    col.set_defaults(func=cmd_collect)
    _add_serve_parser(sub)

    models = sub.add_parser("models", help="list, download, import, verify or locate model bundles")
    msub = models.add_subparsers(dest="models_command", required=True, parser_class=_Parser)
    ls = msub.add_parser("list", help="models in the index and installed ones")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=cmd_models_list)
    dl = msub.add_parser("download", help="download, verify and install a model from the index")
    dl.add_argument("model", help="id or id@version")
    dl.set_defaults(func=cmd_models_download)
    im = msub.add_parser("import", help="install a bundle zip or folder (offline), verified")
    im.add_argument("source")
    im.add_argument("--sha256", help="expected SHA-256 of the zip")
    im.add_argument("--replace", action="store_true")
    im.set_defaults(func=cmd_models_import)
    ve = msub.add_parser("verify", help="check every file of a bundle against its SHA-256")
    ve.add_argument("model", nargs="?", help="id, id@version or folder (default: every installed bundle)")
    ve.set_defaults(func=cmd_models_verify)
    pa = msub.add_parser("path", help="print an installed bundle's folder (or the cache folder)")
    pa.add_argument("model", nargs="?")
    pa.set_defaults(func=cmd_models_path)
    for p in (ls, dl, im, ve, pa):
        p.add_argument("--debug", action="store_true", help="show tracebacks of internal errors")
    return parser


# --- segment -----------------------------------------------------------------------------------------


def _segmenter(args, progress):
    from .bundles import load_bundle
    from .pipeline import Segmenter, SegmentOptions

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    progress("load", 0.0, f"loading and verifying model {args.model}")
    bundle = load_bundle(args.model)
    options = SegmentOptions(
        structures=args.structures, quality=args.quality, register=args.register,
        check_alignment=not args.no_alignment_check, cleanup=not args.no_cleanup, precision=args.precision,
        uncertainty=args.uncertainty, atlas=not args.no_atlas, tile_overlap=args.tile_overlap,
    )
    return Segmenter(bundle, args.device, options, progress)


def _check_structures(keys) -> None:
    from .structures import targets_for_labels

    try:
        targets_for_labels(keys)
    except KeyError as exc:
        raise InputError(str(exc.args[0])) from None


def cmd_segment(args, progress) -> int:
    from .cases import run_case
    from .io import case_name
    from .structures import MODALITIES

    inputs = {m: getattr(args, m) for m in MODALITIES if getattr(args, m)}
    if not inputs:
        raise InputError("give at least one input image: --ct, --t1, --t2")
    for m, p in inputs.items():
        if not Path(p).expanduser().exists():
            raise InputError(f"{m} {p}: file not found")
    _check_structures(args.structures)
    case = args.case or case_name(inputs[next(m for m in MODALITIES if m in inputs)])
    from .export import output_paths, prepare_output_dir

    extra = _dicom_extra(args, inputs, case)
    paths = {**output_paths(args.output, case, args.overview, args.challenge_format, args.uncertainty),
             **{k: p for k, (p, _) in extra.items()}}
    prepare_output_dir(args.output, paths, args.overwrite)
    segmenter = _segmenter(args, progress)
    outputs = run_case(segmenter, inputs, args.output, case, args.overwrite, args.overview, args.challenge_format, extra)
    notes = segmenter.runner.notes
    message = f"segmented {case} on {segmenter.runner.device}" + (f" ({'; '.join(notes)})" if notes else "")
    progress.done(message, outputs)
    if args.progress != "json":
        report = json.loads(Path(outputs["report"]).read_text())
        print(message)
        for s in report["structures"].values():
            print(f"  {s['name']:<22} {s['volume_ml']:9.2f} ml")
        for flag in report["quality_flags"]:
            print(f"  check: {flag['reason']}")
        for kind, path in outputs.items():
            print(f"  {kind:<9} {path}")
    return 0


def cmd_batch(args, progress) -> int:
    from .cases import find_cases, run_batch, summary_table

    _check_structures(args.structures)
    cases = find_cases(args.input)
    for c in cases:  # every reference must be a DICOM series before the first case runs
        _dicom_extra(args, c.inputs, c.case)
    segmenter = _segmenter(args, progress)
    log = (lambda m: print(m, file=sys.stderr)) if args.progress != "json" else None
    rows = run_batch(segmenter, cases, args.output, args.overwrite, args.overview, args.challenge_format, log,
                     lambda c: _dicom_extra(args, c.inputs, c.case))
    table = summary_table(rows)
    import csv

    summary = Path(args.output) / "batch_summary.csv"
    Path(args.output).mkdir(parents=True, exist_ok=True)
    with open(summary, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["case", "status", "seconds", "message"])
        writer.writeheader()
        writer.writerows(rows)
    failed = sum(r["status"] == "failed" for r in rows)
    progress.done(table.splitlines()[-1], {"summary": str(summary)})
    if args.progress != "json":
        print(table)
    return 1 if failed else 0


def cmd_collect(args, progress) -> int:
    from .collect import collect_case, model_from_report
    from .structures import MODALITIES

    inputs = {m: getattr(args, m) for m in MODALITIES if getattr(args, m)}
    if args.report and not Path(args.report).is_file():
        raise InputError(f"report {args.report}: file not found")
    model = model_from_report(args.report) if args.report else {}
    given = {"id": args.model_id, "version": args.model_version, "sha256": args.model_sha256}
    model.update({k: v for k, v in given.items() if v})
    result = collect_case(args.seg, inputs, args.out, args.case, model or None, overwrite=args.overwrite)
    p = result.provenance
    edited = ", ".join(p["edited"]) or "none"
    print(f"saved case {p['case']} in {result.folder} (model {p['model']['id']}@{p['model']['version']}; edited: {edited})")
    return 0


# --- models ------------------------------------------------------------------------------------------


def cmd_models_list(args, progress) -> int:
    from .bundles import list_models

    rows = list_models()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'model':<32} {'inputs':<12} {'cpu s':>7} {'gpu s':>7}  {'licence':<14} installed")
    for r in rows:
        t = r.get("timings") or {}
        mods = "+".join((r.get("inputs") or {}).get("modalities", []))
        fmt = lambda v: "-" if v is None else f"{v:.0f}"  # noqa: E731
        print(f"{r['id'] + '@' + r['version']:<32} {mods:<12} {fmt(t.get('cpu_s')):>7} {fmt(t.get('gpu_s')):>7}  "
              f"{r.get('licence') or 'unknown':<14} {r['installed'] or 'no'}")
    return 0


def cmd_models_download(args, progress) -> int:
    from .bundles import download_bundle, find_entry, find_installed

    entry = find_entry(args.model)
    installed = find_installed(entry["id"], entry["version"])
    if installed is not None:
        from .bundles import load_bundle

        load_bundle(installed)
        print(f"{entry['id']}@{entry['version']} is already installed in {installed}")
        return 0
    bar = None
    if sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(total=entry.get("size"), unit="B", unit_scale=True, file=sys.stderr)

    def report(got, total):
        if bar is not None:
            bar.update(got - bar.n)

    try:
        folder = download_bundle(entry, report)
    finally:
        if bar is not None:
            bar.close()
    print(f"installed {entry['id']}@{entry['version']} in {folder} (verified)")
    return 0


def cmd_models_import(args, progress) -> int:
    from .bundles import find_entry, import_bundle, load_bundle

    expected = args.sha256
    folder = import_bundle(args.source, expected, args.replace)
    bundle = load_bundle(folder)
    if expected is None and Path(args.source).is_file():
        try:
            entry = find_entry(f"{bundle.id}@{bundle.version}")
        except BrainBarriersError:
            entry = None
        from .bundles import sha256_file

        if entry and entry.get("sha256") and sha256_file(args.source) != entry["sha256"]:
            import shutil

            shutil.rmtree(folder)
            raise BrainBarriersError(
                f"{args.source} claims to be {bundle.id}@{bundle.version} but does not match its published SHA-256; removed"
            )
    print(f"installed {bundle.id}@{bundle.version} in {folder} (verified)")
    return 0


def cmd_models_verify(args, progress) -> int:
    from .bundles import installed_bundles, load_bundle

    targets = [args.model] if args.model else [str(p) for _, _, p in installed_bundles()]
    if not targets:
        print("no model is installed")
        return 0
    for t in targets:
        b = load_bundle(t)
        print(f"{b.id}@{b.version}: OK ({len(b.manifest['files'])} files verified) {b.path}")
    return 0


def cmd_models_path(args, progress) -> int:
    from .bundles import models_dir, resolve_bundle_path

    print(resolve_bundle_path(args.model) if args.model else models_dir())
    return 0


# --- entry point -------------------------------------------------------------------------------------


def _on_signal(signum, frame):
    name = signal.Signals(signum).name
    raise Cancelled(f"cancelled ({name}); no outputs were written", 128 + signum)


def main(argv: list[str] | None = None) -> int:
    from .progress import NullProgress, make_progress

    # 3D ops missing on Apple MPS fall back to the CPU instead of failing (read when torch is imported).
    os.environ.setdefault("PYTORCH_ENABLE_MPS_FALLBACK", "1")
    parser = build_parser()
    args = parser.parse_args(argv)
    progress = make_progress(args.progress) if hasattr(args, "progress") else NullProgress()
    previous = {s: signal.signal(s, _on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        return int(args.func(args, progress) or 0)
    except BrainBarriersError as exc:
        message = str(exc).replace("\n", " ")
        progress.close()
        progress.error(message)
        print(f"brainbarriers: error: {message}" if not isinstance(exc, Cancelled) else f"brainbarriers: {message}",
              file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        progress.close()
        progress.error("cancelled (SIGINT); no outputs were written")
        print("brainbarriers: cancelled (SIGINT); no outputs were written", file=sys.stderr)
        return 130
    except Exception as exc:
        if getattr(args, "debug", False):
            raise
        progress.close()
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        message = f"internal error: {type(exc).__name__}: {first} (rerun with --debug for the traceback)"
        progress.error(message)
        print(f"brainbarriers: {message}", file=sys.stderr)
        return 1
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


if __name__ == "__main__":
    sys.exit(main())
