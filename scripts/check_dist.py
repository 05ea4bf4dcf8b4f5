"""Check a built sdist and wheel against the source tree: every file the runtime reads is inside.

    python scripts/check_dist.py DIST_DIR

DIST_DIR holds exactly one ``brainbarriers-*.tar.gz`` and one ``brainbarriers-*-py3-none-any.whl``
(``python -m build``). Prints what it checked and exits 1 with one line per problem otherwise.
Used by scripts/check_wheel.sh.
"""

from __future__ import annotations

import ast
import sys
import tarfile
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: source folder -> import package it installs as (pyproject's [tool.setuptools.package-dir])
PACKAGES = {"SlicerBrainBarriers/brainbarriers": "brainbarriers", "training": "brainbarriers_training"}
#: files at the repository root the distributions must carry (licences, notices, metadata)
LICENCE_FILES = ["LICENSE.txt", "THIRD_PARTY_NOTICES.md"]
SDIST_ROOT_FILES = ["pyproject.toml", "README.md", "CHANGELOG.md", *LICENCE_FILES]


def source_version() -> str:
    tree = ast.parse((REPO / "SlicerBrainBarriers/brainbarriers/__init__.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__version__" for t in node.targets):
            return ast.literal_eval(node.value)
    raise SystemExit("no __version__ in brainbarriers/__init__.py")


def package_files() -> dict[str, str]:
    """Source path -> path inside the wheel, for every file of the installed packages."""
    out = {}
    for folder, package in PACKAGES.items():
        root = REPO / folder
        for path in sorted(root.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
                rel = path.relative_to(root).as_posix()
                out[f"{folder}/{rel}"] = f"{package}/{rel}"
    return out


def check(dist: Path) -> list[str]:
    version = source_version()
    wheels = sorted(dist.glob("brainbarriers-*.whl"))
    sdists = sorted(dist.glob("brainbarriers-*.tar.gz"))
    if len(wheels) != 1 or len(sdists) != 1:
        return [f"expected one wheel and one sdist in {dist}, found {[p.name for p in wheels + sdists]}"]
    wheel, sdist = wheels[0], sdists[0]
    problems = []
    if wheel.name != f"brainbarriers-{version}-py3-none-any.whl":
        problems.append(f"wheel {wheel.name} does not carry the source version {version}")
    if sdist.name != f"brainbarriers-{version}.tar.gz":
        problems.append(f"sdist {sdist.name} does not carry the source version {version}")

    expected = package_files()
    with zipfile.ZipFile(wheel) as z:
        in_wheel = set(z.namelist())
    dist_info = f"brainbarriers-{version}.dist-info"
    for src, dst in expected.items():
        if dst not in in_wheel:
            problems.append(f"wheel lacks {dst} (from {src})")
    for name in LICENCE_FILES + ["SlicerBrainBarriers/brainbarriers/models/brainbarriers-demo/LICENSE"]:
        if f"{dist_info}/licenses/{name}" not in in_wheel:
            problems.append(f"wheel lacks {dist_info}/licenses/{name}")
    top = {n.split("/", 1)[0] for n in in_wheel}
    unexpected = top - {"brainbarriers", "brainbarriers_training", dist_info}
    if unexpected:
        problems.append(f"wheel installs unexpected top-level names {sorted(unexpected)} (e.g. a bare `training`)")

    prefix = sdist.name[: -len(".tar.gz")]
    with tarfile.open(sdist) as t:
        in_sdist = {m.name for m in t.getmembers() if m.isfile()}
    for src in list(expected) + SDIST_ROOT_FILES:
        if f"{prefix}/{src}" not in in_sdist:
            problems.append(f"sdist lacks {src}")

    print(f"checked {wheel.name} ({len(in_wheel)} files) and {sdist.name} ({len(in_sdist)} files): "
          f"{len(expected)} package files, licences {', '.join(LICENCE_FILES)}, top-level names {sorted(top)}")
    return problems


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    problems = check(Path(argv[0]))
    for p in problems:
        print(f"check_dist: {p}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
