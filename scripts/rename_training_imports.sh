#!/usr/bin/env bash
# One-off: switch every use of the training package from its folder name `training` to its installed
# name `brainbarriers_training` (pyproject's [tool.setuptools.package-dir]). Run once from any
# folder of the checkout after the branches touching training/ and Testing/ are merged:
#   bash scripts/rename_training_imports.sh && git diff --stat
# then refresh the editable install (`make env`, or `.venv/bin/pip install --no-deps -e .`) so
# `brainbarriers_training` resolves to this checkout's training/ folder.
# Needs ruff (RUFF, default .venv/bin/ruff) to re-sort the imports it renames. Rewrites only: `from training.` / `from training import` / `import training` / `-m training` /
# "prog python -m training" and the generator tag "training.phantom"; prints what is left that
# still says `training` as a module, for a look by hand. Idempotent.
set -euo pipefail
cd "$(git -C "$(dirname "$0")" rev-parse --show-toplevel)"

mapfile -t files < <(git ls-files -- 'Testing/*.py' 'training/*.py' 'training/*.md' 'bench/*.py' \
  'scripts/*.py' 'scripts/*.sh' 'docs/*.md' 'README.md' 'Makefile' '.ci/run' \
  | grep -v '^scripts/rename_training_imports.sh$')
[ "${#files[@]}" -gt 0 ] || { echo "no files to rewrite" >&2; exit 1; }

sed -i -E \
  -e 's/(^|[^A-Za-z0-9_.])from training(\.| import )/\1from brainbarriers_training\2/g' \
  -e 's/(^|[^A-Za-z0-9_.])import training($|[^A-Za-z0-9_])/\1import brainbarriers_training\2/g' \
  -e 's/-m training($|[^A-Za-z0-9_])/-m brainbarriers_training\1/g' \
  -e 's/"-m", "training"/"-m", "brainbarriers_training"/g' \
  -e "s/'-m', 'training'/'-m', 'brainbarriers_training'/g" \
  -e 's/"generator": "training\.phantom"/"generator": "brainbarriers_training.phantom"/g' \
  "${files[@]}"

# `brainbarriers_training` sorts among the third-party imports (as `brainbarriers` does; `training`
# was first-party as a root folder): let ruff re-sort the import blocks it moved.
RUFF=${RUFF:-.venv/bin/ruff}
mapfile -t pyfiles < <(printf '%s\n' "${files[@]}" | grep '\.py$')
"$RUFF" check --fix --select I --quiet "${pyfiles[@]}" || true

echo "rewritten: $(git diff --name-only -- "${files[@]}" | wc -l) files"
echo "left for a look by hand (module-like uses of 'training'):"
git grep -n -E '(^|[^A-Za-z0-9_./-])training\.(cli|config|crossval|data|engine|evaluate|export|infer|metrics|phantom|prepare|sinus|stages)\b|"training"\]?\)|import_module\("training' \
  -- "${files[@]}" || echo "  (none)"
