#!/usr/bin/env bash
# Issue 13's training ablations, each model trained with the same steps from the same starting point:
#   tailored  the captioner's own structured findings as prompts (CVLM)
#   gt        the world's own reports, labelled (the paper's "GT model")
#   raw       the captioner's report text as the prompt (the paper's raw-prompt model); the report words the
#             start's tokenizer lacks become new tokens with new embedding rows (--grow-vocabulary)
# and, of the tailored run, the best-PSNR checkpoint (the paper's rule, --psnr-tolerance 0) against the last.
# Every run starts from the bundled templater model (same architecture and vocabulary, not tailored to the
# captioner) and trains STEPS steps on one fresh world (seed SEED, the same images, batches and noise in every
# run: the per-step seeds make them equal); then `cvlm evaluate` explains the same fresh images with the
# captioner and each model.
#
#   bash scripts/ablation_prompts.sh         # 2-core CPU: about 1 hour (the three runs in parallel)
#   python benchmarks/ablation_table.py tailored=runs/ablate/eval-tailored gt=runs/ablate/eval-gt ...
#
# Settings: STEPS [800] N_TRAIN [3000] SEED [2300] EVAL_DATA [runs/fresh-world] EVAL_N [50] THREADS [1]
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS=${STEPS:-800}
N_TRAIN=${N_TRAIN:-3000}
SEED=${SEED:-2300}
EVAL_DATA=${EVAL_DATA:-runs/fresh-world}
EVAL_N=${EVAL_N:-50}
THREADS=${THREADS:-1}
PY=${PY:-python}
G=phantom-captioner
ROOT=runs/ablate
INIT=src/cvlm/bundled/diffusion/phantom-templater
[[ -f $EVAL_DATA/world.json ]] || $PY -m cvlm.cli phantoms --out "$EVAL_DATA" --n 300 --seed 8300
train() {  # MODE: one training run, one thread
  local MODE=$1 NAME WORK
  NAME=$([[ $MODE == generated ]] && echo tailored || echo "$MODE")
  WORK=$ROOT/$NAME
  mkdir -p "$WORK"
  # One training world for all three (made first, below).
  if [[ $NAME != tailored ]]; then
    for d in world test-world; do [[ -e $WORK/$d ]] || ln -s "../tailored/$d" "$WORK/$d"; done
  fi
  PY=$PY WORK=$WORK DEST=$WORK/bundled INIT=$INIT N_TRAIN=$N_TRAIN SEED=$SEED STEPS=$STEPS VAL_EVERY=100 \
    BALANCE=0.5 PROMPTS=$MODE GROW_VOCABULARY=$([[ $MODE == raw ]] && echo 1 || echo 0) PSNR_TOLERANCE=0 THREADS=$THREADS TEST_N=16 \
    bash scripts/train_bundled_diffusion.sh "$G" > "$WORK.log" 2>&1
}
[[ -f $ROOT/tailored/world/world.json ]] || $PY -m cvlm.cli phantoms --out "$ROOT/tailored/world" --n "$N_TRAIN" --seed "$SEED"
[[ -f $ROOT/tailored/test-world/world.json ]] ||
  $PY -m cvlm.cli phantoms --out "$ROOT/tailored/test-world" --n 200 --seed $((SEED + 1))
train generated & train gt & train raw &
wait
run_eval() {  # NAME MODEL
  [[ -f $ROOT/eval-$1/metrics.json ]] ||
    OMP_NUM_THREADS=$THREADS $PY -m cvlm.cli evaluate --generator "$G" --model "$2" --data "$EVAL_DATA" \
      --n "$EVAL_N" --baselines random --threads "$THREADS" --out "$ROOT/eval-$1" "${@:3}"
}
# Best versus last: evaluated only where the strict best-PSNR step is not the last one.
LAST=()
if ! $PY -c "import json,sys; t=json.load(open('$ROOT/tailored/model/train.json')); sys.exit(t['best_step'] != t['step'])"; then
  LAST=("tailored (last)=$ROOT/eval-tailored-last")
fi
run_eval tailored "$ROOT/tailored/model" & ((${#LAST[@]})) && run_eval tailored-last "$ROOT/tailored/model/last" & wait
run_eval gt "$ROOT/gt/model" & run_eval raw "$ROOT/raw/model" --prompts raw & wait
for r in tailored gt raw; do
  $PY -c "import json; t=json.load(open('$ROOT/$r/model/train.json')); print('$r: best step', t['best_step'], 'of', t['step'], [h['psnr'] for h in t['history']])"
done
$PY benchmarks/ablation_table.py "tailored (best PSNR)=$ROOT/eval-tailored" "${LAST[@]}" "GT model=$ROOT/eval-gt" \
  "raw prompts=$ROOT/eval-raw"
