#!/usr/bin/env bash
# Train the bundled tailored diffusion model (tiny configuration) of one bundled report generator.
#
#   scripts/train_bundled_diffusion.sh phantom-captioner      # or phantom-templater, phantom-shortcut
#
# Steps: a training phantom world -> `cvlm prepare` with the generator's own reports -> the VAE
# (`cvlm train --config vae`) -> the UNet + text encoder (`cvlm train --config tiny`, best validation
# reconstruction PSNR kept) -> `cvlm validate` on a fresh phantom world -> the model and its card in
# src/cvlm/bundled/diffusion/<generator>/.
#
# Settings (environment variables, defaults in brackets):
#   WORK [runs/bundled-diffusion/<generator>]   scratch folder (resumable: finished steps are skipped,
#                                                an interrupted training resumes from its checkpoint)
#   N_TRAIN [3000]  SEED [1000]                 training world size and seed (test world: SEED+1)
#   VAE [train one]                             a trained VAE folder to reuse (one VAE serves all
#                                                generators of the same world; it is the costly part)
#   VAE_STEPS [1500]  STEPS [3000]  BATCH [32]  VAE_BATCH [16]  VAL_EVERY [250]
#   DEVICE [auto]                               auto | cpu | cuda (bf16 autocast on a GPU)
#   LAUNCH ["python -m cvlm.cli"]               e.g. "accelerate launch -m cvlm.cli" for several GPUs
#   THREADS [2]                                 torch CPU threads
#   TEST_N [64]  TEST_STEPS [50]                 cvlm validate images and DDIM steps
#   DEST [src/cvlm/bundled/diffusion/<generator>] where the model and its card go
set -euo pipefail

G=${1:?usage: $0 GENERATOR_NAME}
WORK=${WORK:-runs/bundled-diffusion/$G}
N_TRAIN=${N_TRAIN:-3000}
SEED=${SEED:-1000}
VAE_STEPS=${VAE_STEPS:-1500}
STEPS=${STEPS:-3000}
BATCH=${BATCH:-32}
VAE_BATCH=${VAE_BATCH:-16}
VAL_EVERY=${VAL_EVERY:-250}
DEVICE=${DEVICE:-auto}
THREADS=${THREADS:-2}
PY=${PY:-python}
LAUNCH=${LAUNCH:-$PY -m cvlm.cli}
TEST_N=${TEST_N:-64}
TEST_STEPS=${TEST_STEPS:-50}
DEST=${DEST:-src/cvlm/bundled/diffusion/$G}
SHORTCUT=()
[[ $G == *shortcut* ]] && SHORTCUT=(--shortcut)
mkdir -p "$WORK"
T0=$(date +%s)

# 1. Worlds: training images for the tailored data set, and a fresh one for validation.
[[ -f $WORK/world/world.json ]] || $PY -m cvlm.cli phantoms --out "$WORK/world" --n "$N_TRAIN" --seed "$SEED" "${SHORTCUT[@]}"
[[ -f $WORK/test-world/world.json ]] || $PY -m cvlm.cli phantoms --out "$WORK/test-world" --n 200 --seed $((SEED + 1)) "${SHORTCUT[@]}"

# 2. The generator's own prompts.
[[ -f $WORK/prepared/manifest.jsonl ]] || $PY -m cvlm.cli prepare --generator "$G" --data "$WORK/world" --out "$WORK/prepared"

# 3. The VAE (trained on the world's images, then frozen), unless one is given.
resume() { [[ -d $1/checkpoints ]] && echo --resume || true; }
if [[ -z ${VAE:-} ]]; then
  VAE=$WORK/vae
  [[ -f $VAE/train.json ]] && grep -q '"finished": true' "$VAE/train.json" ||
    $LAUNCH train --config vae --data "$WORK/prepared" --out "$VAE" --steps-max "$VAE_STEPS" \
      --batch-size "$VAE_BATCH" --val-every "$VAL_EVERY" --checkpoint-every "$VAL_EVERY" --val-n 32 \
      --device "$DEVICE" --threads "$THREADS" $(resume "$VAE")
fi

# 4. UNet + text encoder; the checkpoint with the best validation reconstruction PSNR is the model.
[[ -f $WORK/model/train.json ]] && grep -q '"finished": true' "$WORK/model/train.json" ||
  $LAUNCH train --config tiny --data "$WORK/prepared" --vae "$VAE" --out "$WORK/model" --steps-max "$STEPS" \
    --batch-size "$BATCH" --val-every "$VAL_EVERY" --checkpoint-every "$VAL_EVERY" --val-n 16 --half \
    --device "$DEVICE" --threads "$THREADS" $(resume "$WORK/model")

# 5. Validation on the fresh world (reconstruction PSNR / SSIM, VAE PSNR, edit ratios).
VALIDATION_DEVICE=$DEVICE; [[ $DEVICE == auto ]] && VALIDATION_DEVICE=cpu
$PY -m cvlm.cli validate --model "$WORK/model" --data "$WORK/test-world" --n "$TEST_N" --steps "$TEST_STEPS" \
  --device "$VALIDATION_DEVICE" --out "$WORK/validation.json"

# 6. The bundled copy and its card.
$PY -m cvlm.diffusion.card --model "$WORK/model" --vae "$VAE" --validation "$WORK/validation.json" \
  --generator "$G" --out "$DEST"
echo "bundled model: $DEST ($(du -sh "$DEST" | cut -f1)); total $(( ($(date +%s) - T0) / 60 )) min"
