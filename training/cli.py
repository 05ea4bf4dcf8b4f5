"""Command line: ``python -m brainbarriers_training <command>`` (see ``--help`` of each command)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from brainbarriers.errors import BrainBarriersError

from .config import ConfigError, load_recipe, save_recipe
from .finetune import FinetuneRefused


def _config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default="paper", help="recipe name in training/configs (paper, smoke) or a JSON file")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config key, e.g. --set train.epochs=10 (repeatable)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")


def _cases_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cases", nargs="+", default=None, help="case ids to use (default: all prepared cases)")


def _train_args(p: argparse.ArgumentParser) -> None:
    _config_args(p)
    p.add_argument("--cache", required=True, type=Path, help="prepared data (output of `prepare`)")
    p.add_argument("--workdir", required=True, type=Path, help="training folder (coarse/, fine/<target>/)")
    _cases_args(p)
    p.add_argument("--no-resume", action="store_true", help="start again even if a checkpoint exists")


def _initial_weights(path: Path) -> dict:
    """The state dict of a safetensors file (never a pickle), or a one-line error."""
    from .engine import load_weights

    if not path.is_file():
        raise ConfigError(f"--init-from: {path} is not a file")
    try:
        return load_weights(path)
    except Exception as e:  # safetensors raises its own error types for damaged files
        raise ConfigError(f"--init-from: {path} is not a readable safetensors file ({e})") from None


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m brainbarriers_training", description=__doc__)
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("phantom", help="generate synthetic head phantoms in the ABCs layout")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--cases", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=int, nargs=3, default=None, metavar=("X", "Y", "Z"),
                   help="grid size (default 64 64 64; realistic: 164 194 142 with --spacing 1.2)")
    p.add_argument("--spacing", type=float, default=None, help="voxel spacing in mm (default 2.4)")
    p.add_argument("--first-id", type=int, default=1)

    p = sub.add_parser("synth", help="draw domain-randomised synthetic heads (CT, T1, T2 + labels) from a tissue "
                                     "map (training/synth.py) in the ABCs layout")
    p.add_argument("--tissue", required=True, type=Path, help="tissue map: integer classes of synth.TISSUES")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--count", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--first-id", type=int, default=2)
    p.add_argument("--overwrite", action="store_true", help="replace existing case folders")
    p.add_argument("--conceal-thin", type=float, default=None, metavar="P",
                   help="probability, per channel, that a thin structure (falx, tentorium, sinus) takes the "
                        "intensity of a neighbour class (default: synth.SynthParams, 0.5; 0: never)")
    p.add_argument("--neck", type=float, default=None, metavar="P",
                   help="probability that a head gets a neck of 20-110 mm below the map (synth.add_neck; "
                        "default 0: the map's own field of view)")

    p = sub.add_parser("prepare", help="check, resample, normalise and cache a data set")
    _config_args(p)
    p.add_argument("--data", required=True, type=Path, help="ABCs-layout folder, flat folder, or CSV (case,ct,t1,t2,label)")
    p.add_argument("--cache", required=True, type=Path)

    p = sub.add_parser("train-coarse", help="train the coarse localisation network")
    _train_args(p)
    p.add_argument("--init-from", type=Path, default=None, metavar="SAFETENSORS",
                   help="start from these coarse weights (e.g. a bundle's coarse.safetensors) instead of a "
                        "random initialisation; they must fit the recipe's coarse network")
    p = sub.add_parser("train-fine", help="train fine networks")
    _train_args(p)
    p.add_argument("--structure", nargs="+", default=["all"], help="fine target keys, output labels, or all")
    p.add_argument("--init-from", type=Path, default=None, metavar="SAFETENSORS",
                   help="start from these fine weights (e.g. a bundle's fine_<structure>.safetensors) instead of "
                        "a random initialisation; one structure only, and they must fit its network")
    p = sub.add_parser("train", help="train-coarse then train-fine for all structures")
    _train_args(p)

    p = sub.add_parser("cross-validate", help="k-fold cross-validation: train and evaluate per fold")
    _train_args(p)
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--structure", nargs="+", default=["all"], help="fine target keys, output labels, or all")

    p = sub.add_parser("compare", help="the paper's Table VI: cross-validate HMRNet and comparison networks on the "
                                       "same folds, each evaluated through the shipped pipeline; Dice/ASSD per "
                                       "structure with paired t-tests against HMRNet (CSV, Markdown, figure)")
    _config_args(p)
    p.add_argument("--networks", required=True, help="comma-separated: hmrnet and names of brainbarriers.networks "
                                                     "(unet3d,res-unet3d,unet3d-cse,unet3d-sse,unet3d-scse,sepnet3d,"
                                                     "focusnet,hnf-netv2,hmedn,focusnetv2); NAME:one-stage for "
                                                     "a one-stage baseline (NAME alone on the whole head)")
    p.add_argument("--data", type=Path, default=None, help="data set, prepared into OUT/cache unless --cache is given")
    p.add_argument("--cache", type=Path, default=None, help="prepared data (output of `prepare`)")
    p.add_argument("--out", required=True, type=Path, help="work folder: OUT/<network>/ per network, the tables")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--options", type=json.loads, default={}, metavar="JSON",
                   help='per-network constructor options, e.g. \'{"unet3d": {"widths": [16, 32, 64, 128]}}\'')
    p.add_argument("--structure", nargs="+", default=["all"], help="fine target keys, output labels, or all")
    _cases_args(p)
    p.add_argument("--no-resume", action="store_true", help="run every network again")

    p = sub.add_parser("evaluate", help="segment labelled cases with a model bundle (the shipped pipeline) and score "
                                        "them: Dice, ASSD, HD95, surface Dice per case and structure")
    p.add_argument("--model", help="model id (ID or ID@VERSION) or bundle folder/zip, e.g. the output of `export`")
    p.add_argument("--data", type=Path, required=True, help="labelled data set: ABCs-layout folder, flat folder or CSV")
    _cases_args(p)
    p.add_argument("--predictions", type=Path, help="score a folder of predicted label maps (<case>*.nii.gz/.mha/.nrrd) "
                                                    "instead of segmenting")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--tolerance", type=float, default=2.0, help="surface Dice tolerance in mm")
    p.add_argument("--structures", nargs="+", default=None, metavar="KEY",
                   help="score only these structures (cerebellum falx sinuses tentorium ventricles), for label "
                        "maps that label only some of them")
    p.add_argument("--out", type=Path, required=True, help="folder for metrics.csv and summary.txt")

    p = sub.add_parser("smoke", help="the smoke gate: train the smoke recipe on phantoms, score held-out phantoms "
                                     "through the exported bundle; exit 1 when a structure misses its threshold")
    p.add_argument("--out", required=True, type=Path, help="work folder (phantoms, cache, run, bundle)")
    p.add_argument("--seed", type=int, default=None, help="recipe seed (default: the smoke recipe's)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a recipe key (repeatable)")
    p.add_argument("--json", type=Path, default=None, help="also write the rows and facts as JSON")

    p = sub.add_parser("export", help="write the model bundle (manifest + safetensors + SHA-256) from the "
                       "recipe saved with the run")
    p.add_argument("--workdir", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--licence-file", type=Path, default=None)
    p.add_argument("--model-card", type=Path, default=None)
    p.add_argument("--cache", type=Path, default=None,
                   help="prepared training data: store its per-structure volume statistics (quality flags)")
    p.add_argument("--member", action="append", default=[], metavar="STRUCTURE=FOLDER",
                   help="another training folder of a fine target (e.g. RUN_B/fine/sagittal_sinus, another seed): "
                        "exported beside the workdir's and averaged with it at inference (repeatable)")
    _cases_args(p)

    p = sub.add_parser("recipe", help="print the complete, validated recipe (defaults + file + --set)")
    _config_args(p)

    p = sub.add_parser("finetune", help="fine-tune a bundle on a site's corrected cases; export only if it helps")
    _config_args(p)
    p.add_argument("--from", dest="parent", required=True, help="parent model: installed id, id@version or bundle folder")
    p.add_argument("--data", required=True, type=Path, help="site data folder (brainbarriers collect)")
    p.add_argument("--out", required=True, type=Path, help="folder of the new bundle (must not exist)")
    p.add_argument("--workdir", type=Path, default=None, help="training folder (default: OUT-work)")
    p.add_argument("--version", default=None, help="version of the new bundle (default: the parent's +site.N)")
    p.add_argument("--device", default="auto", help="device of the held-out evaluation")
    return ap


def _load(args) -> dict:
    """The validated recipe of the command line as the plain dict the stage code reads."""
    overrides = list(args.set)
    if getattr(args, "threads", None):
        import torch

        torch.set_num_threads(args.threads)
        overrides.append(f"train.threads={args.threads}")
    return load_recipe(args.config, overrides).to_dict()


def _structures(names: list[str]):
    from brainbarriers.structures import targets_for_labels

    return targets_for_labels(None if "all" in names else names)


def _prediction_pairs(pred_dir: Path, data: Path, only: list[str] | None = None):
    from .prepare import discover

    pairs = []
    preds = {p.name: p for p in Path(pred_dir).iterdir() if p.is_file()}
    for cf in discover(data):
        if only and cf.case not in only:
            continue
        match = [p for name, p in sorted(preds.items()) if name.startswith(cf.case) and not name.endswith(".json")
                 and (name.endswith((".mha", ".nii.gz", ".nii", ".nrrd")) and ".seg." not in name)]
        if match and cf.files.get("label"):
            pairs.append((cf.case, match[0], cf.files["label"]))
    if not pairs:
        raise FileNotFoundError(f"no predictions in {pred_dir} match the cases of {data}")
    return pairs


def _evaluate(args) -> int:
    from .evaluate import evaluate_files, evaluate_model, labelled_cases, write_results

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.predictions:
        rows = evaluate_files(_prediction_pairs(args.predictions, args.data, args.cases), args.tolerance,
                              args.structures)
    elif args.model:
        rows = evaluate_model(args.model, labelled_cases(args.data, args.cases), args.device, args.tolerance,
                              structures=args.structures)
    else:
        raise ValueError("evaluate needs --model (a bundle to run) or --predictions (label maps to score)")
    print(write_results(rows, args.out))
    return 0


def _smoke(args) -> int:
    import torch

    from .smoke import failures, report, run_smoke

    if args.threads:
        torch.set_num_threads(args.threads)
    rows, facts = run_smoke(args.out, args.seed, args.set)
    print(report(rows, facts))
    problems = failures(rows) + facts["method"] + [f"{k}: collapsed in training ({c})"
                                                   for k, c in facts["fine_checks"].items() if c and not c["ok"]]
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "facts": facts, "failures": problems}, indent=1))
    for line in problems:
        print(f"gate: {line}")
    return 1 if problems else 0


def _compare(args, config: dict) -> int:
    from .compare import compare
    from .prepare import prepare

    cache = args.cache
    if cache is None:
        if args.data is None:
            raise ValueError("compare needs --cache (prepared data) or --data (a data set to prepare)")
        cache = args.out / "cache"
        if not (cache / "index.json").exists():
            prepare(args.data, cache, config["data"], progress=config["train"].get("progress", True))
    if not isinstance(args.options, dict):
        raise ValueError("--options must be a JSON object: {network: {option: value}}")
    networks = [n.strip() for n in args.networks.split(",") if n.strip()]
    print(compare(config, cache, args.out, networks, args.folds, args.cases, not args.no_resume, args.options,
                  _structures(args.structure)))
    return 0


def run(args) -> int:
    if args.command == "phantom":
        from .phantom import SMALL_SIZE, SMALL_SPACING, generate_dataset

        ids = generate_dataset(args.out, args.cases, args.seed, tuple(args.size or SMALL_SIZE),
                               args.spacing or SMALL_SPACING, args.first_id)
        print(f"wrote {len(ids)} phantom cases to {args.out}")
        return 0
    if args.command == "synth":
        from dataclasses import replace

        from .synth import SynthParams, write_cases

        params = SynthParams()
        for option, value, field in (("--conceal-thin", args.conceal_thin, "conceal_thin"),
                                     ("--neck", args.neck, "neck_probability")):
            if value is None:
                continue
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{option} must lie in [0, 1], got {value}")
            params = replace(params, **{field: value})
        ids = write_cases(args.tissue, args.out, args.count, args.seed, args.first_id, args.overwrite, params)
        print(f"wrote {len(ids)} synthetic cases to {args.out} ({ids[0]}..{ids[-1]})" if ids else "wrote nothing")
        return 0
    if args.command == "evaluate":
        return _evaluate(args)
    if args.command == "smoke":
        return _smoke(args)
    if args.command == "export":
        from .export import export_bundle

        extra = {}
        if args.licence_file:
            extra["LICENSE"] = args.licence_file
        if args.model_card:
            extra["MODEL_CARD.md"] = args.model_card
        members: dict[str, list[Path]] = {}
        for item in args.member:
            key, sep, folder = item.partition("=")
            if not sep or not key or not folder:
                raise ValueError(f"--member {item}: expected STRUCTURE=FOLDER")
            members.setdefault(key, []).append(Path(folder))
        path = export_bundle(args.workdir, args.out, extra or None, args.cache, args.cases, members)
        print(f"wrote bundle {path}")
        return 0
    config = _load(args)
    if args.command == "recipe":
        print(json.dumps(config, indent=1))
        return 0
    if args.command == "prepare":
        from .prepare import prepare

        if not args.data.exists():
            raise FileNotFoundError(f"data set {args.data} does not exist")
        index = prepare(args.data, args.cache, config["data"], progress=config["train"].get("progress", True))
        print(f"prepared {len(index['cases'])} cases into {args.cache}")
        for prob in index["problems"]:
            print(f"problem case {prob['case']}: {prob['problem']}")
        return 0 if index["cases"] else 1
    if args.command in ("train-coarse", "train-fine", "train"):
        from .engine import dist_info
        from .stages import train_coarse, train_fine

        if dist_info()[0] == 0:
            save_recipe(config, args.workdir)  # the run's recipe, read back by `export`
        if config.get("mode") == "one-stage":
            if args.command == "train-fine":
                raise ConfigError("a one-stage recipe has no fine stage; use train or train-coarse")
            from .stages import train_one_stage

            train_one_stage(config, args.cache, args.workdir, args.cases, resume=not args.no_resume)
            return 0
        if args.command in ("train-coarse", "train"):
            init = getattr(args, "init_from", None)
            train_coarse(config, args.cache, args.workdir, args.cases, resume=not args.no_resume,
                         init_weights=None if init is None else _initial_weights(init))
        if args.command in ("train-fine", "train"):
            targets = _structures(getattr(args, "structure", ["all"]))
            init = getattr(args, "init_from", None) if args.command == "train-fine" else None
            if init is not None and len(targets) != 1:
                raise ConfigError(f"--init-from holds one network's weights; name one structure, not {len(targets)}")
            train_fine(config, args.cache, args.workdir, targets, args.cases, resume=not args.no_resume,
                       init_weights=None if init is None else _initial_weights(init))
        return 0
    if args.command == "compare":
        return _compare(args, config)
    if args.command == "cross-validate":
        from .crossval import cross_validate

        table = cross_validate(config, args.cache, args.workdir, args.folds, args.cases, resume=not args.no_resume,
                               targets=_structures(args.structure))
        print(table)
        return 0
    if args.command == "finetune":
        from .finetune import finetune

        if not args.data.is_dir():
            raise FileNotFoundError(f"site data {args.data} is not a folder")
        result = finetune(args.parent, args.data, args.out, config, args.workdir, args.version, args.device,
                          progress=config["train"].get("progress", True))
        print(f"wrote bundle {result.bundle}: held-out mean Dice {result.candidate_dice:.3f} "
              f"(parent {result.parent_dice:.3f}) on {len(result.held_out)} site cases; trained on {len(result.trained_on)}")
        return 0
    raise AssertionError(args.command)


def main(argv: list[str] | None = None) -> int:
    if hasattr(sys.stdout, "reconfigure"):  # tables print "±": never crash on an ASCII-only terminal
        sys.stdout.reconfigure(errors="replace")
    args = parser().parse_args(argv)
    try:
        return run(args)
    except (ConfigError, BrainBarriersError, FileNotFoundError, ValueError, KeyError) as exc:
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"error: {msg}", file=sys.stderr)
        return 2
    except FinetuneRefused as exc:  # not a user error: the site data did not help this model
        print(f"refused: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted (the last checkpoint is kept; run the same command again to resume)", file=sys.stderr)
        return 130
