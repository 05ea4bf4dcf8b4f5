"""Re-issue a model bundle under a new version with a new model card, its weights byte for byte,
or with named networks replaced by retrained ones, a fine network's test-time flips set, or another
network of a fine target added to average with (an ensemble).

For a model card re-measured after a pipeline change (new anatomical rules, the atlas), or one
network trained further (``train-fine --init-from``), when the training run that exported the
bundle is not at hand. The weights are read with safetensors and written back through
``brainbarriers.bundles.write_bundle``, the export's own writer; the command refuses to finish
unless every weight file not replaced keeps its SHA-256. A replacement must hold the same tensors
(names and shapes) as the file it replaces: the manifest's network description stays true.

Usage::

    python scripts/reissue_bundle.py BUNDLE --version 0.3.3 --model-card CARD [--licence LICENSE]
        [--description TEXT] [--replace fine_cerebellum.safetensors=NEW.safetensors ...]
        [--test-time-flips sagittal_sinus=LR ...] [--add-member sagittal_sinus=NEW.safetensors ...]
        --out NEW_FOLDER
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

from brainbarriers.bundles.bundle import read_manifest, write_bundle
from brainbarriers.bundles.manifest import ensemble_file
from brainbarriers.errors import BundleError
from safetensors.torch import load_file


def _shapes(state: dict) -> dict:
    return {k: tuple(v.shape) for k, v in state.items()}


def _fine_item(option: str, item: str, fine: dict, value: str, required: bool) -> tuple[str, str] | None:
    """(structure, value) of a STRUCTURE=VALUE argument naming a fine network (``required``: VALUE not
    empty); None after saying why not."""
    key, sep, rest = item.partition("=")
    if key in fine and sep and (rest or not required):
        return key, rest
    print(f"reissue_bundle: {option} {item}: expected STRUCTURE={value} with STRUCTURE one of "
          f"{', '.join(sorted(fine))}", file=sys.stderr)
    return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("bundle", type=Path)
    ap.add_argument("--version", required=True)
    ap.add_argument("--model-card", type=Path, required=True)
    ap.add_argument("--licence", type=Path, help="default: the bundle's LICENSE")
    ap.add_argument("--description", help="default: the old one with its version replaced")
    ap.add_argument("--replace", action="append", default=[], metavar="NAME=SAFETENSORS",
                    help="a weight file of the bundle and the retrained weights that replace it (repeatable)")
    ap.add_argument("--test-time-flips", action="append", default=[], metavar="STRUCTURE=AXES",
                    help="average that fine network over these flips at inference (AXES: LR, or empty for none; repeatable)")
    ap.add_argument("--add-member", action="append", default=[], metavar="STRUCTURE=SAFETENSORS",
                    help="another trained network of that fine target, averaged with its others at inference (repeatable)")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    if args.out.exists():
        print(f"reissue_bundle: {args.out} exists; choose a new folder", file=sys.stderr)
        return 2
    old = read_manifest(args.bundle)
    manifest = copy.deepcopy(old)
    manifest.pop("files")
    manifest["version"] = args.version
    manifest["description"] = args.description or old["description"].replace(old["version"], args.version)
    weights = {e["path"]: e["sha256"] for e in old["files"] if e["path"].endswith(".safetensors")}
    states = {name: load_file(str(args.bundle / name)) for name in weights}
    for item in args.replace:
        name, _, path = item.partition("=")
        if name not in weights or not path:
            print(f"reissue_bundle: --replace {item}: expected NAME=FILE with NAME one of {', '.join(sorted(weights))}",
                  file=sys.stderr)
            return 2
        new = load_file(path)
        if _shapes(new) != _shapes(states[name]):
            print(f"reissue_bundle: {path} does not hold the tensors of {name} (names or shapes differ)", file=sys.stderr)
            return 2
        states[name] = new
        del weights[name]
    fine = manifest["networks"]["fine"]
    for item in args.test_time_flips:
        found = _fine_item("--test-time-flips", item, fine, "AXES", required=False)
        if found is None:
            return 2
        key, axes = found
        fine[key].pop("test_time_flips", None)
        if axes:
            fine[key]["test_time_flips"] = axes.split(",")
    for item in args.add_member:
        found = _fine_item("--add-member", item, fine, "FILE", required=True)
        if found is None:
            return 2
        key, path = found
        new = load_file(path)
        if _shapes(new) != _shapes(states[fine[key]["file"]]):
            print(f"reissue_bundle: {path} does not hold the tensors of {fine[key]['file']} (names or shapes differ)",
                  file=sys.stderr)
            return 2
        members = fine[key].setdefault("ensemble", [])
        name = ensemble_file(key, len(members) + 2)
        members.append(name)
        states[name] = new
    extra = {"MODEL_CARD.md": args.model_card, "LICENSE": args.licence or args.bundle / "LICENSE"}
    try:
        write_bundle(args.out, manifest, states, extra)
    except BundleError as exc:
        print(f"reissue_bundle: {exc}", file=sys.stderr)
        return 2
    changed = [e["path"] for e in read_manifest(args.out)["files"] if e["path"] in weights and e["sha256"] != weights[e["path"]]]
    if changed:
        print(f"reissue_bundle: the weights of {', '.join(changed)} came out different; not re-issued", file=sys.stderr)
        return 1
    replaced = f", {len(args.replace)} replaced" if args.replace else ""
    replaced += f", test-time flips {', '.join(args.test_time_flips)}" if args.test_time_flips else ""
    replaced += f", {len(args.add_member)} member(s) added" if args.add_member else ""
    print(f"{manifest['id']} {args.version}: {len(weights)} weight files unchanged{replaced}, model card and manifest "
          f"new, in {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
