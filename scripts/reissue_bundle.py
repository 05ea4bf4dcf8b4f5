"""Re-issue a model bundle under a new version with a new model card, its weights byte for byte.

For a model card re-measured after a pipeline change (new anatomical rules, the atlas) when the
training run that exported the bundle is not at hand. The weights are read with safetensors and
written back through ``brainbarriers.bundles.write_bundle``, the export's own writer; the command
refuses to finish unless every weight file's SHA-256 is unchanged.

Usage::

    python scripts/reissue_bundle.py BUNDLE --version 0.3.3 --model-card CARD [--licence LICENSE]
        [--description TEXT] --out NEW_FOLDER
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

from brainbarriers.bundles.bundle import read_manifest, write_bundle
from safetensors.torch import load_file


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("bundle", type=Path)
    ap.add_argument("--version", required=True)
    ap.add_argument("--model-card", type=Path, required=True)
    ap.add_argument("--licence", type=Path, help="default: the bundle's LICENSE")
    ap.add_argument("--description", help="default: the old one with its version replaced")
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
    extra = {"MODEL_CARD.md": args.model_card, "LICENSE": args.licence or args.bundle / "LICENSE"}
    write_bundle(args.out, manifest, states, extra)
    changed = [e["path"] for e in read_manifest(args.out)["files"] if e["path"] in weights and e["sha256"] != weights[e["path"]]]
    if changed:
        print(f"reissue_bundle: the weights of {', '.join(changed)} came out different; not re-issued", file=sys.stderr)
        return 1
    print(f"{manifest['id']} {args.version}: {len(weights)} weight files unchanged, model card and manifest new, in {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
