#!/usr/bin/env bash
# The package as users get it, used from outside the checkout (CI step; `make check-wheel`):
#   1. build the sdist, and the wheel from that sdist (python -m build), and check both hold every
#      file the runtime reads (scripts/check_dist.py);
#   2. install the wheel into a fresh virtual environment, dependencies pinned by requirements-dev.txt
#      (CPU torch==2.13.0; pip's cache is reused);
#   3. from an empty folder, with nothing of the checkout on the path: --version, models verify,
#      segment the sample CT (the run of issue 17), models list, imports, the training entry points;
#   4. an editable install exposes brainbarriers_training too.
# Any failure stops the script with a non-zero exit. PY: interpreter with `build` and setuptools
# (default .venv/bin/python). KEEP=1 keeps the work folder.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
PY=${PY:-$REPO/.venv/bin/python}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/brainbarriers-wheel.XXXXXX")
[ "${KEEP:-0}" = 1 ] || trap 'rm -rf "$WORK"' EXIT
step() { printf '\n== %s\n' "$*"; }
fail() { echo "check_wheel: $*" >&2; exit 1; }
# pip's output goes to a log, shown only when it fails
pip_install() { "$V/python" -m pip install -q "$@" >>"$WORK/pip.log" 2>&1 || { tail -20 "$WORK/pip.log"; fail "pip install $* failed"; }; }

step "build sdist and wheel (wheel built from the sdist)"
# --no-isolation: build with the pinned setuptools of the dev environment, no download per run
"$PY" -m build --no-isolation --outdir "$WORK/dist" "$REPO" >"$WORK/build.log" 2>&1 \
  || { tail -20 "$WORK/build.log"; fail "building the sdist/wheel failed"; }
# a content problem is reported now, the run continues (the runtime errors it causes say more)
# and the script fails at the end
dist_ok=1
"$PY" "$REPO/scripts/check_dist.py" "$WORK/dist" || dist_ok=0
WHEEL=$(ls "$WORK"/dist/brainbarriers-*.whl)
VERSION=$(basename "$WHEEL" | cut -d- -f2)

step "fresh virtual environment with the wheel"
"$PY" -m venv "$WORK/venv"
V="$WORK/venv/bin"
# requirements-dev.txt as constraints: the wheel's dependencies at the pinned versions (CPU torch)
pip_install -c "$REPO/requirements-dev.txt" "$WHEEL"

# Outside the checkout, nothing of it on the path, an empty model cache: only what the wheel installed.
mkdir -p "$WORK/run"
cd "$WORK/run"
unset PYTHONPATH BRAINBARRIERS_MODELS_INDEX
export BRAINBARRIERS_CACHE="$WORK/cache" OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"

step "brainbarriers --version"
got=$("$V/brainbarriers" --version)
[ "$got" = "brainbarriers $VERSION" ] || fail "--version printed '$got', the wheel is $VERSION"
echo "$got"

step "brainbarriers models verify"
"$V/brainbarriers" models verify | tee "$WORK/verify.txt"
grep -q "^brainbarriers-demo@.*: OK" "$WORK/verify.txt" || fail "the shipped demo model did not verify"

step "brainbarriers segment (sample CT)"
"$V/brainbarriers" segment --ct "$REPO/Resources/SampleData/sample_ct.nrrd" --output out --progress none
"$V/python" - "$VERSION" <<'EOF'
import json, sys
from pathlib import Path
report = json.loads(Path("out/sample_ct_report.json").read_text())
assert report["brainbarriers_version"] == sys.argv[1], report["brainbarriers_version"]
assert report["model"]["id"] == "brainbarriers-demo"
assert Path("out/sample_ct_labels.nii.gz").is_file() and Path("out/sample_ct.seg.nrrd").is_file()
volumes = {k: s["volume_ml"] for k, s in report["structures"].items()}
assert all(v > 0 for v in volumes.values()), volumes
print(f"report: brainbarriers_version {report['brainbarriers_version']}, {len(volumes)} structures, all non-empty")
EOF

step "brainbarriers models list"
"$V/brainbarriers" models list | tee "$WORK/models.txt"
grep -q "brainbarriers-demo@.*CC-BY-NC-4.0" "$WORK/models.txt" || fail "models list does not show the demo model's licence"

step "imports come from the installed wheel"
"$V/python" - "$VERSION" "$WORK/venv" <<'EOF'
import importlib.metadata, importlib.util, sys
version, venv = sys.argv[1:]
import brainbarriers, brainbarriers_training
for mod in (brainbarriers, brainbarriers_training):
    assert mod.__file__.startswith(venv), f"{mod.__name__} imported from {mod.__file__}, not the installed wheel"
assert importlib.metadata.version("brainbarriers") == brainbarriers.__version__ == version
assert importlib.util.find_spec("training") is None, "the wheel installs a top-level `training` module"
print(f"imports from the venv, version {version}, no top-level `training`")
EOF

step "training entry points"
"$V/brainbarriers-train" --help >/dev/null
"$V/python" -m brainbarriers_training --help >/dev/null
"$V/python" -c "from brainbarriers_training.config import load_config; c = load_config('smoke'); print('config smoke:', sorted(c)[:4], '...')"

step "editable install exposes brainbarriers_training"
pip_install -c "$REPO/requirements-dev.txt" setuptools
pip_install --no-deps --no-build-isolation -e "$REPO"
"$V/python" - "$REPO" <<'EOF'
import sys
from pathlib import Path
repo = Path(sys.argv[1]).resolve()
import brainbarriers, brainbarriers_training
assert Path(brainbarriers_training.__file__).resolve() == repo / "training" / "__init__.py", brainbarriers_training.__file__
assert Path(brainbarriers.__file__).resolve() == repo / "SlicerBrainBarriers" / "brainbarriers" / "__init__.py"
print("editable: brainbarriers and brainbarriers_training import from the checkout")
EOF

[ "$dist_ok" = 1 ] || fail "the sdist/wheel lack files (see check_dist above)"
step "OK: brainbarriers $VERSION works as installed from its wheel"
