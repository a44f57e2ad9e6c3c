#!/usr/bin/env bash
# Train every bundled model of cvlm from the phantom world, from scratch, with the project's own commands:
# three report generators (cvlm train-generator) and one tailored diffusion model per generator
# (cvlm prepare -> cvlm train --config vae -> cvlm train --config tiny -> cvlm validate).
#
#   scripts/train_bundled.sh                 # CPU: hours on 2 cores; a GPU: about 10 minutes
#
# Settings (environment variables, defaults in brackets):
#   WORK [runs/bundled]     scratch folder; finished steps are skipped when rerun
#   DEST [src/cvlm/bundled] where the finished models and their cards go
#   N [20000]  TEST_N [1000] images of the training worlds and of the fresh test worlds
#   GEN_EPOCHS [30]  GEN_WIDTHS [24,48,96,160,256]  generator training
#   VAE_STEPS [3000]  VAE_BATCH [64]  STEPS [6000]  BATCH [128]  VAL_EVERY [500]  diffusion training
#   DEVICE [auto]  WORKERS [nproc]  PY [python]
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${WORK:-runs/bundled}
DEST=${DEST:-src/cvlm/bundled}
N=${N:-20000}
TEST_N=${TEST_N:-1000}
GEN_EPOCHS=${GEN_EPOCHS:-30}
GEN_WIDTHS=${GEN_WIDTHS:-24,48,96,160,256}
VAE_STEPS=${VAE_STEPS:-3000}
VAE_BATCH=${VAE_BATCH:-64}
STEPS=${STEPS:-6000}
BATCH=${BATCH:-128}
VAL_EVERY=${VAL_EVERY:-500}
DEVICE=${DEVICE:-auto}
WORKERS=${WORKERS:-$(nproc)}
PY=${PY:-python}
CVLM="$PY -m cvlm.cli"
GEN_DEVICE=(); [[ $DEVICE != auto ]] && GEN_DEVICE=(--device "$DEVICE")
mkdir -p "$WORK/logs"
T0=$(date +%s)
stamp() { echo "[$(( $(date +%s) - T0 )) s] $*"; }
finished() { [[ -f $1/train.json ]] && grep -q '"finished": true' "$1/train.json"; }
resume() { [[ -d $1/checkpoints ]] && echo --resume || true; }

# 1. Worlds: an honest and a shortcut training world, and a fresh test world of each (seeds used nowhere else).
stamp worlds
$CVLM phantoms --out "$WORK/world" --n "$N" --seed 101 --workers "$WORKERS" >"$WORK/logs/world.log" 2>&1 &
$CVLM phantoms --out "$WORK/shortcut-world" --n "$N" --seed 102 --shortcut --workers "$WORKERS" \
  >"$WORK/logs/shortcut-world.log" 2>&1 &
wait
$CVLM phantoms --out "$WORK/test-world" --n "$TEST_N" --seed 103 --workers "$WORKERS" >>"$WORK/logs/world.log" 2>&1
$CVLM phantoms --out "$WORK/shortcut-test-world" --n "$TEST_N" --seed 104 --shortcut --workers "$WORKERS" \
  >>"$WORK/logs/shortcut-world.log" 2>&1

# 2. The VAE needs images only (prompts from the world's own reports), so it trains beside the generators.
stamp "generators and VAE"
(
  $CVLM prepare --generator none --prompts gt --data "$WORK/world" --out "$WORK/prepared-gt" &&
  { finished "$WORK/vae" ||
    $CVLM train --config vae --data "$WORK/prepared-gt" --out "$WORK/vae" --steps-max "$VAE_STEPS" \
      --batch-size "$VAE_BATCH" --val-every "$VAL_EVERY" --checkpoint-every "$VAL_EVERY" --val-n 32 \
      --device "$DEVICE" $(resume "$WORK/vae"); }
) >"$WORK/logs/vae.log" 2>&1 &
VAE_PID=$!
train_generator() {  # name arch world [extra flags]
  local name=$1 arch=$2 world=$3 test=$4; shift 4
  $CVLM train-generator --arch "$arch" --name "$name" --data "$world" --out "$DEST/generators/$name" \
    --epochs "$GEN_EPOCHS" --widths "$GEN_WIDTHS" --seed 0 --test-data "$test" --test-split all \
    "${GEN_DEVICE[@]}" "$@" >"$WORK/logs/$name.log" 2>&1
}
GEN_PIDS=()
train_generator phantom-captioner captioner "$WORK/world" "$WORK/test-world" & GEN_PIDS+=($!)
train_generator phantom-templater templater "$WORK/world" "$WORK/test-world" & GEN_PIDS+=($!)
train_generator phantom-shortcut captioner "$WORK/shortcut-world" "$WORK/shortcut-test-world" \
  --shortcut-finding Pneumothorax & GEN_PIDS+=($!)
for pid in "${GEN_PIDS[@]}"; do
  wait "$pid" || { stamp "a generator failed"; tail -5 "$WORK"/logs/phantom-*.log; exit 1; }
done
stamp "generators done"

# 3. Each generator's own prompts (the tailored data sets), then the UNet + text encoder of each.
PREP_PIDS=()
for G in phantom-captioner phantom-templater phantom-shortcut; do
  world=$WORK/world; [[ $G == *shortcut* ]] && world=$WORK/shortcut-world
  $CVLM prepare --generator "$G" --data "$world" --out "$WORK/prepared-$G" >"$WORK/logs/prepare-$G.log" 2>&1 &
  PREP_PIDS+=($!)
done
for pid in "${PREP_PIDS[@]}"; do wait "$pid" || { stamp "prepare failed"; tail -5 "$WORK"/logs/prepare-*.log; exit 1; }; done
wait "$VAE_PID" || { stamp "VAE failed"; tail -5 "$WORK/logs/vae.log"; exit 1; }
stamp "prepared; VAE done"
for G in phantom-captioner phantom-templater phantom-shortcut; do
  finished "$WORK/model-$G" ||
    $CVLM train --config tiny --data "$WORK/prepared-$G" --vae "$WORK/vae" --out "$WORK/model-$G" \
      --steps-max "$STEPS" --batch-size "$BATCH" --val-every "$VAL_EVERY" --checkpoint-every "$VAL_EVERY" \
      --val-n 16 --half --device "$DEVICE" $(resume "$WORK/model-$G") >"$WORK/logs/train-$G.log" 2>&1 &
done
wait || true

# 4. Validation on the fresh test worlds, and the bundled copies with their cards.
for G in phantom-captioner phantom-templater phantom-shortcut; do
  test=$WORK/test-world; [[ $G == *shortcut* ]] && test=$WORK/shortcut-test-world
  $CVLM validate --model "$WORK/model-$G" --data "$test" --n 64 --steps 50 --device "$DEVICE" \
    --out "$WORK/validation-$G.json" >"$WORK/logs/validate-$G.log" 2>&1 &&
    $PY -m cvlm.diffusion.card --model "$WORK/model-$G" --vae "$WORK/vae" --validation "$WORK/validation-$G.json" \
      --generator "$G" --out "$DEST/diffusion/$G" >>"$WORK/logs/validate-$G.log" 2>&1 &
done
wait
stamp "all done"; du -sh "$DEST"/*/*
