#!/usr/bin/env bash
# The paper's Fig. 4 point where it can show: a model tailored to G explains G better than a "GT model",
# on a generator whose findings differ from the truth (phantom-shortcut writes pneumothorax when it sees a
# spurious corner mark). Two diffusion models, the same steps from the same start (the bundled templater
# model), on one shortcut world (seed SEED): one on phantom-shortcut's own findings (tailored), one on the
# world's true findings (GT). Then both explain phantom-shortcut's pneumothorax on a fresh shortcut world
# (benchmarks/shortcut_frames.py): does the cycle close, and do the frames fall on the mark?
#
#   bash scripts/ablation_shortcut_gt.sh     # 2-core CPU: about 1 hour (the two runs in parallel)
#
# Settings: STEPS [800] N_TRAIN [3000] SEED [2500] EVAL_N [150] (test images read) THREADS [1]
#   INDEPENDENT [0]: 1 trains both on a world whose mark is independent of every finding in every split
#   (cvlm phantoms --independent-mark): only the generator's findings can then tie the word to the mark.
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS=${STEPS:-800}
N_TRAIN=${N_TRAIN:-3000}
SEED=${SEED:-2500}
EVAL_N=${EVAL_N:-150}
THREADS=${THREADS:-1}
PY=${PY:-python}
G=phantom-shortcut
INDEPENDENT=${INDEPENDENT:-0}
ROOT=runs/ablate-shortcut$([[ $INDEPENDENT == 1 ]] && echo -independent || true)
MARK=(); [[ $INDEPENDENT == 1 ]] && MARK=(--independent-mark)
EVAL_DATA=$ROOT/eval-world
INIT=src/cvlm/bundled/diffusion/phantom-templater
mkdir -p "$ROOT"
[[ -f $ROOT/tailored/world/world.json ]] ||
  $PY -m cvlm.cli phantoms --out "$ROOT/tailored/world" --n "$N_TRAIN" --seed "$SEED" --shortcut "${MARK[@]}"
[[ -f $ROOT/tailored/test-world/world.json ]] ||
  $PY -m cvlm.cli phantoms --out "$ROOT/tailored/test-world" --n 200 --seed $((SEED + 1)) --shortcut "${MARK[@]}"
[[ -f $EVAL_DATA/world.json ]] || $PY -m cvlm.cli phantoms --out "$EVAL_DATA" --n 1500 --seed $((SEED + 50)) --shortcut
train() {  # MODE NAME
  local WORK=$ROOT/$2
  mkdir -p "$WORK"
  if [[ $2 != tailored ]]; then
    for d in world test-world; do [[ -e $WORK/$d ]] || ln -s "../tailored/$d" "$WORK/$d"; done
  fi
  PY=$PY WORK=$WORK DEST=$WORK/bundled INIT=$INIT N_TRAIN=$N_TRAIN SEED=$SEED STEPS=$STEPS VAL_EVERY=100 \
    BALANCE=0.5 PROMPTS=$1 PSNR_TOLERANCE=0 THREADS=$THREADS TEST_N=16 \
    bash scripts/train_bundled_diffusion.sh "$G" > "$WORK.log" 2>&1
}
train generated tailored & train gt gt & wait
# Where the frames of the pneumothorax removals fall (the mark or the lung) and how often the cycle closes,
# on the test split of a fresh shortcut world (the mark there is independent of the finding).
$PY benchmarks/shortcut_frames.py --data "$EVAL_DATA" --out "$ROOT/frames" --n "$EVAL_N" \
  --model-for "tailored=$G=$ROOT/tailored/model" --model-for "GT model=$G=$ROOT/gt/model"
